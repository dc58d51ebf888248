//! The portal's `local` login (`kagi.v1.Directory/Authenticate`): is this the account's
//! password? The same directory and the same single answer for every bad credential as
//! StartReset, on rate-limit counters of its own. No reset is involved.

use std::net::IpAddr;
use std::sync::Arc;

use kagi_runtime::Clock;
use secrecy::SecretString;

use crate::directory::Directory;
use crate::error::Error;
use crate::limits::{AttemptLimiter, RateScope};

/// Checks passwords for the portal's login.
#[derive(Debug, Clone)]
pub struct LocalLogin {
    directory: Arc<dyn Directory>,
    limiter: AttemptLimiter,
    clock: Arc<dyn Clock>,
}

impl LocalLogin {
    pub fn new(
        directory: Arc<dyn Directory>,
        limiter: AttemptLimiter,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            directory,
            limiter,
            clock,
        }
    }

    /// Is `password` the password of `account_id`? Rate-limited like StartReset (failures
    /// count; a right password is taken back off the counters), and as silent about why.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// directory or storage failures.
    pub async fn check_password(
        &self,
        account_id: &str,
        password: &SecretString,
        client_ip: IpAddr,
    ) -> Result<(), Error> {
        let admission = self
            .limiter
            .admit(RateScope::Login, client_ip, account_id, self.clock.now_ms())
            .await?;
        match self.directory.authenticate(account_id, password).await? {
            Some(_) => self.limiter.refund(admission).await,
            None => {
                tracing::info!("login refused: bad credentials");
                Err(Error::BadCredentials)
            }
        }
    }
}
