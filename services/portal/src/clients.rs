//! The portal's gRPC clients: the keystore (GetCurrentKey) and the reset service (Reset and
//! Directory), built by [`kagi_runtime::client`], so each call carries the portal's bearer
//! token (or client certificate, over mTLS with `ca_file`/`cert_file`/`key_file`) and the
//! current W3C trace, and may spread over every replica behind a name (`balance`).

use kagi_proto::v1 as pb;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientError, ClientSettings, channel};
use pb::directory_client::DirectoryClient;
use pb::keystore_admin_client::KeystoreAdminClient;
use pb::keystore_client::KeystoreClient;
use pb::notifier_admin_client::NotifierAdminClient;
use pb::reset_admin_client::ResetAdminClient;
use pb::reset_client::ResetClient;

use crate::config::HelpdeskSettings;

/// The services the portal calls. Cheap to clone; channels connect lazily, so the portal
/// starts (and shows its top page) while a neighbour is still starting.
#[derive(Debug, Clone)]
pub struct Clients {
    pub keystore: KeystoreClient<ServiceChannel>,
    pub reset: ResetClient<ServiceChannel>,
    pub directory: DirectoryClient<ServiceChannel>,
    /// The help desk's admin services, when the console is on.
    pub helpdesk: Option<HelpdeskClients>,
}

/// The admin services the console calls, as caller `helpdesk`.
#[derive(Debug, Clone)]
pub struct HelpdeskClients {
    pub keystore: KeystoreAdminClient<ServiceChannel>,
    pub reset: ResetAdminClient<ServiceChannel>,
    pub notifier: NotifierAdminClient<ServiceChannel>,
}

impl HelpdeskClients {
    /// `None` while the console is off.
    ///
    /// # Errors
    /// A malformed endpoint or token, or an unreadable file.
    pub fn new(settings: &HelpdeskSettings) -> Result<Option<Self>, ClientError> {
        if !settings.enabled() {
            return Ok(None);
        }
        Ok(Some(Self {
            keystore: KeystoreAdminClient::new(channel(&settings.keystore)?),
            reset: ResetAdminClient::new(channel(&settings.reset)?),
            notifier: NotifierAdminClient::new(channel(&settings.notifier)?),
        }))
    }
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
            helpdesk: None,
        })
    }
}
