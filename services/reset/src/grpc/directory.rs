//! `kagi.v1.Directory` over tonic: the portal's `local` login checks a user's ID and
//! password against the same accounts the reset saga uses. Nothing but the account ID (once
//! valid) enters a span.

use kagi_proto::v1 as pb;
use secrecy::SecretString;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{MAX_REQUEST_BYTES, invalid};
use crate::domain::{self, InvalidInput};
use crate::saga::ResetSaga;

/// The gRPC face of the account directory.
#[derive(Debug, Clone)]
pub struct DirectoryGrpc {
    saga: ResetSaga,
}

impl DirectoryGrpc {
    pub fn new(saga: ResetSaga) -> Self {
        Self { saga }
    }

    pub fn into_server(self) -> pb::directory_server::DirectoryServer<Self> {
        pb::directory_server::DirectoryServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

#[tonic::async_trait]
impl pb::directory_server::Directory for DirectoryGrpc {
    #[instrument(name = "Directory.Authenticate", skip_all, fields(account_id = tracing::field::Empty))]
    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let mut req = request.into_inner();
        let password = SecretString::from(std::mem::take(&mut req.password));
        domain::check_account_id(&req.account_id).map_err(invalid)?;
        tracing::Span::current().record("account_id", req.account_id.as_str());
        let secret_len = secrecy::ExposeSecret::expose_secret(&password).len();
        if secret_len == 0 || secret_len > 1024 {
            return Err(invalid(InvalidInput::Password));
        }
        let client_ip = req.client_ip.trim().parse().map_err(|_| invalid(InvalidInput::ClientIp))?;
        self.saga.check_password(&req.account_id, &password, client_ip).await?;
        Ok(Response::new(pb::AuthenticateResponse {}))
    }
}
