//! "最初からやり直す" and a page reload: ending a reset not yet confirmed, and showing
//! where a reset stands.

use crate::domain::state::ms;
use crate::domain::{ResetState, ResetToken, mask_email};
use crate::error::{Error, Refusal};

use super::{ROUNDS, ResetSaga, ResetView, effective};

impl ResetSaga {
    /// "最初からやり直す": ends a reset not yet confirmed. Already-over resets stay as
    /// they are.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once confirmed.
    pub async fn cancel(&self, token: &ResetToken) -> Result<ResetState, Error> {
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match effective(&row, now, &self.inner.policy) {
                ResetState::CodeSent | ResetState::Verified => {
                    if self
                        .inner
                        .db
                        .move_state(
                            &row.token_hash,
                            row.version,
                            row.state,
                            ResetState::Cancelled,
                            now,
                        )
                        .await?
                    {
                        tracing::info!("reset cancelled");
                        return Ok(ResetState::Cancelled);
                    }
                }
                ResetState::Confirming | ResetState::Completed => {
                    return Err(Error::IllegalStep(Refusal::NotCancellable));
                }
                over => return Ok(over),
            }
        }
        Err(Error::Contended)
    }

    /// Where a reset stands, for a page reload.
    ///
    /// # Errors
    /// [`Error::UnknownReset`], storage failures.
    pub async fn get(&self, token: &ResetToken) -> Result<ResetView, Error> {
        let row = self.load(token).await?;
        let now = self.now();
        let policy = &self.inner.policy;
        let state = effective(&row, now, policy);
        let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
        let wrong = u32::try_from(row.wrong_attempts).unwrap_or(u32::MAX);
        Ok(ResetView {
            state,
            masked_recipient: mask_email(&row.recipient),
            code_expires_at: row.code_expires_at,
            resend_after: row
                .last_sent_at
                .map_or(now, |l| l + ms(policy.resend_after)),
            resends_remaining: policy.max_resends.saturating_sub(resends_done),
            attempts_remaining: policy.max_wrong_codes.saturating_sub(wrong),
            confirm_by: row.verified_at.map(|v| v + ms(policy.confirm_within)),
        })
    }
}
