//! The portal's gRPC clients: the keystore (GetCurrentKey) and the reset service (Reset and
//! Directory), each call carrying the portal's bearer token and the current W3C trace.

use kagi_proto::v1 as pb;
use pb::directory_client::DirectoryClient;
use pb::keystore_client::KeystoreClient;
use pb::reset_client::ResetClient;
use secrecy::ExposeSecret as _;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::Downstream;

/// Adds `authorization: Bearer <token>` and `traceparent` to every call.
#[derive(Clone)]
pub struct CallerToken(MetadataValue<Ascii>);

impl std::fmt::Debug for CallerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerToken(..)")
    }
}

impl tonic::service::Interceptor for CallerToken {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        kagi_runtime::telemetry::inject_context(request.metadata_mut());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, CallerToken>;

/// The services the portal calls. Cheap to clone; channels connect lazily, so the portal
/// starts (and shows its top page) while a neighbour is still starting.
#[derive(Debug, Clone)]
pub struct Clients {
    pub keystore: KeystoreClient<Authed>,
    pub reset: ResetClient<Authed>,
    pub directory: DirectoryClient<Authed>,
}

impl Clients {
    /// # Errors
    /// A malformed endpoint or a missing or non-ASCII token.
    pub fn new(keystore: &Downstream, reset: &Downstream) -> anyhow::Result<Self> {
        let (ks_channel, ks_token) = connect(keystore)?;
        let (reset_channel, reset_token) = connect(reset)?;
        Ok(Self {
            keystore: KeystoreClient::with_interceptor(ks_channel, ks_token),
            reset: ResetClient::with_interceptor(reset_channel.clone(), reset_token.clone()),
            directory: DirectoryClient::with_interceptor(reset_channel, reset_token),
        })
    }
}

fn connect(downstream: &Downstream) -> anyhow::Result<(Channel, CallerToken)> {
    let channel = Endpoint::from_shared(downstream.endpoint.clone())
        .map_err(|e| anyhow::anyhow!("endpoint {:?}: {e}", downstream.endpoint))?
        .timeout(downstream.timeout())
        .connect_timeout(downstream.timeout())
        .connect_lazy();
    let token = downstream.token()?;
    let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.expose_secret())
        .parse()
        .map_err(|_| anyhow::anyhow!("the token for {} is not ASCII", downstream.endpoint))?;
    value.set_sensitive(true);
    Ok((channel, CallerToken(value)))
}
