//! Clients of the keystore and the notifier: each call carries this service's bearer token
//! and the W3C trace context, and has a deadline.

use kagi_proto::v1 as pb;
use secrecy::ExposeSecret as _;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::config::DownstreamSettings;

/// Adds `authorization: Bearer <token>` and `traceparent` to every outgoing call.
#[derive(Clone)]
pub struct Outgoing {
    token: Option<AsciiMetadataValue>,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outgoing(..)")
    }
}

impl Interceptor for Outgoing {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.token {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        kagi_runtime::telemetry::inject_context(request.metadata_mut());
        Ok(request)
    }
}

pub type KeystoreClient =
    pb::keystore_client::KeystoreClient<InterceptedService<Channel, Outgoing>>;
pub type NotifierClient =
    pb::notifier_client::NotifierClient<InterceptedService<Channel, Outgoing>>;

/// A lazily connected channel (the service starts even when its neighbours are down) and
/// the interceptor for it.
fn connect(settings: &DownstreamSettings) -> anyhow::Result<(Channel, Outgoing)> {
    let channel = Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|e| anyhow::anyhow!("bad endpoint {:?}: {e}", settings.endpoint))?
        .connect_timeout(settings.timeout())
        .timeout(settings.timeout())
        .connect_lazy();
    let token = match settings.token()? {
        Some(token) => {
            let mut value: AsciiMetadataValue =
                MetadataValue::try_from(format!("Bearer {}", token.expose_secret()))
                    .map_err(|_| anyhow::anyhow!("a downstream token must be printable ASCII"))?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    Ok((channel, Outgoing { token }))
}

/// # Errors
/// A malformed endpoint or token.
pub fn keystore(settings: &DownstreamSettings) -> anyhow::Result<KeystoreClient> {
    let (channel, outgoing) = connect(settings)?;
    Ok(pb::keystore_client::KeystoreClient::with_interceptor(
        channel, outgoing,
    ))
}

/// # Errors
/// A malformed endpoint or token.
pub fn notifier(settings: &DownstreamSettings) -> anyhow::Result<NotifierClient> {
    let (channel, outgoing) = connect(settings)?;
    Ok(pb::notifier_client::NotifierClient::with_interceptor(
        channel, outgoing,
    ))
}

/// Milliseconds since the epoch as a protobuf timestamp.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}
