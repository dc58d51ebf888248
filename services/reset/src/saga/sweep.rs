//! The sweeper's pass: finishes reissues a crash or an outage left in CONFIRMING, queues
//! notices not yet with the notifier, and forgets old rate-limit events and, after the
//! retention period, finished resets with the personal data they hold.

use crate::domain::state::ms;
use crate::domain::token::saga_tag;
use crate::error::Error;

use super::ResetSaga;

impl ResetSaga {
    /// Finishes what a crash or an outage left: reissues stuck in CONFIRMING, notices not
    /// yet queued; forgets old rate-limit events. Returns the number of sagas completed.
    ///
    /// # Errors
    /// Storage failures (downstream failures are logged and retried next time).
    pub async fn sweep(&self) -> Result<usize, Error> {
        let mut completed = 0;
        for row in self.inner.db.confirming_sagas(50).await? {
            match self.finish(&row).await {
                Ok(_) => completed += 1,
                Err(e) => {
                    tracing::warn!(saga = %saga_tag(&row.saga_id), error = %e, "interrupted reissue not finished yet");
                }
            }
        }
        let now = self.now();
        let day = 24 * 3600 * 1000;
        for row in self.inner.db.pending_notices(now - day, 50).await? {
            self.send_notice(&row).await;
        }
        self.inner.limiter.prune(now).await?;
        let retention = self.inner.policy.retention;
        if !retention.is_zero() {
            let purged = self.inner.db.purge_resets(now - ms(retention)).await?;
            if purged > 0 {
                tracing::info!(purged, "deleted resets past their retention period");
            }
        }
        Ok(completed)
    }
}
