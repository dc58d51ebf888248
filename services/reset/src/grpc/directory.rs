//! `kagi.v1.Directory` over tonic: the portal's `local` login checks a user's ID and
//! password ([`LocalLogin`]) against the same accounts the reset saga uses. Nothing but the
//! account ID (once valid) enters a span.

use kagi_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{MAX_REQUEST_BYTES, credentials};
use crate::login::LocalLogin;

/// The gRPC face of the account directory.
#[derive(Debug, Clone)]
pub struct DirectoryGrpc {
    login: LocalLogin,
}

impl DirectoryGrpc {
    pub fn new(login: LocalLogin) -> Self {
        Self { login }
    }

    pub fn into_server(self) -> pb::directory_server::DirectoryServer<Self> {
        pb::directory_server::DirectoryServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
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
        let (password, client_ip) =
            credentials(&req.account_id, &mut req.password, &req.client_ip)?;
        self.login
            .check_password(&req.account_id, &password, client_ip)
            .await?;
        Ok(Response::new(pb::AuthenticateResponse {}))
    }
}
