//! The portal's gRPC clients: the keystore (GetCurrentKey) and the reset service (Reset and
//! Directory), built by [`kagi_runtime::client`], so each call carries the portal's bearer
//! token (or client certificate, over mTLS with `ca_file`/`cert_file`/`key_file`) and the
//! current W3C trace, and may spread over every replica behind a name (`balance`).

use kagi_proto::v1 as pb;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientError, ClientSettings, channel};
use pb::directory_client::DirectoryClient;
use pb::keystore_client::KeystoreClient;
use pb::reset_client::ResetClient;

/// The services the portal calls. Cheap to clone; channels connect lazily, so the portal
/// starts (and shows its top page) while a neighbour is still starting.
#[derive(Debug, Clone)]
pub struct Clients {
    pub keystore: KeystoreClient<ServiceChannel>,
    pub reset: ResetClient<ServiceChannel>,
    pub directory: DirectoryClient<ServiceChannel>,
}

impl Clients {
    /// # Errors
    /// A malformed endpoint or token, or an unreadable token file.
    pub fn new(keystore: &ClientSettings, reset: &ClientSettings) -> Result<Self, ClientError> {
        let reset_channel = channel(reset)?;
        Ok(Self {
            keystore: KeystoreClient::new(channel(keystore)?),
            reset: ResetClient::new(reset_channel.clone()),
            directory: DirectoryClient::new(reset_channel),
        })
    }
}
