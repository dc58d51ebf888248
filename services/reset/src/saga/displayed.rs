//! "Your setup key was displayed": not a step of a reset, but the reset service is where
//! the recovery address lives and the notifier is called from, so every display of the
//! current key (the portal's menus 1 and 3) is mailed from here, unless the operator
//! switched it off (`policy.notify_key_display`).

use std::net::IpAddr;

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use tonic::Code;

use crate::domain::token::saga_message_stem;
use crate::error::Error;

use super::ResetSaga;

/// One display of an account's setup key, as the portal saw it.
#[derive(Debug)]
pub struct KeyDisplay<'a> {
    pub account_id: &'a str,
    /// The portal's ID of this display: a retry with it mails nothing new.
    pub view_id: &'a str,
    pub displayed_at: i64,
    pub client_ip: IpAddr,
    pub user_agent: &'a str,
    pub locale: &'static str,
}

impl ResetSaga {
    /// Queues the notice of `display` to the account's current recovery address; `false`
    /// when switched off, or when the account is unknown or disabled (nobody to tell).
    ///
    /// # Errors
    /// [`Error::MailRateLimited`] past the notifier's allowance for these notices,
    /// [`Error::MailUnavailable`], [`Error::Directory`].
    pub async fn notify_key_displayed(&self, display: &KeyDisplay<'_>) -> Result<bool, Error> {
        if !self.inner.policy.notify_key_display {
            return Ok(false);
        }
        let Some(account) = self.inner.directory.lookup(display.account_id).await? else {
            tracing::info!("key displayed for an account without a directory entry; no notice");
            return Ok(false);
        };
        let request = pb::SendKeyDisplayedNoticeRequest {
            // Per account and display; the view ID itself stays out of the mail's headers.
            message_id: format!(
                "{}:displayed",
                saga_message_stem(&format!("{}\n{}", display.account_id, display.view_id))
            ),
            recipient: account.recovery_email,
            account_id: display.account_id.to_owned(),
            displayed_at: Some(timestamp(display.displayed_at)),
            client_ip: display.client_ip.to_string(),
            user_agent: display.user_agent.to_owned(),
            locale: display.locale.to_owned(),
        };
        match self
            .inner
            .notifier
            .clone()
            .send_key_displayed_notice(request)
            .await
        {
            Ok(_) => {
                tracing::info!("key-displayed notice queued");
                Ok(true)
            }
            Err(status) if status.code() == Code::ResourceExhausted => {
                tracing::warn!("key-displayed notice refused by the notifier's allowance");
                Err(Error::MailRateLimited)
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), "key-displayed notice not queued");
                Err(Error::MailUnavailable)
            }
        }
    }
}
