//! Clients of the keystore and the notifier, built by [`kagi_runtime::client`]: each call
//! carries this service's bearer token and the W3C trace context, and has a deadline.

use kagi_proto::v1 as pb;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientError, ClientSettings, channel};

pub type KeystoreClient = pb::keystore_client::KeystoreClient<ServiceChannel>;
pub type NotifierClient = pb::notifier_client::NotifierClient<ServiceChannel>;

/// # Errors
/// A malformed endpoint or token.
pub fn keystore(settings: &ClientSettings) -> Result<KeystoreClient, ClientError> {
    Ok(KeystoreClient::new(channel(settings)?))
}

/// # Errors
/// A malformed endpoint or token.
pub fn notifier(settings: &ClientSettings) -> Result<NotifierClient, ClientError> {
    Ok(NotifierClient::new(channel(settings)?))
}
