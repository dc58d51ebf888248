//! "メールを再送信する": after 3 minutes, up to the policy's number of resends, a new code
//! replaces the old one and is mailed.

use crate::domain::state::ms;
use crate::domain::{ResetState, ResetToken};
use crate::error::{Error, Refusal};

use super::{ROUNDS, Resent, ResetSaga, effective, new_code};

impl ResetSaga {
    /// "メールを再送信する": a new code, the old one dead.
    ///
    /// # Errors
    /// [`Error::ResendTooSoon`], [`Error::ResendLimit`], [`Error::IllegalStep`] outside
    /// CODE_SENT, [`Error::MailUnavailable`] (the user may resend at once).
    pub async fn resend(&self, token: &ResetToken) -> Result<Resent, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            let state = effective(&row, now, policy);
            if state != ResetState::CodeSent {
                return Err(Error::IllegalStep(state.refusal()));
            }
            let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
            if resends_done >= policy.max_resends {
                return Err(Error::ResendLimit);
            }
            if let Some(last) = row.last_sent_at {
                let allowed_at = last + ms(policy.resend_after);
                if now < allowed_at {
                    return Err(Error::ResendTooSoon {
                        wait_secs: (allowed_at - now + 999) / 1000,
                    });
                }
            }
            if !self.account_unchanged(&row).await? {
                // A directory that changed the account without telling the saga: the new
                // code must not go to an address the account no longer has.
                self.inner
                    .db
                    .move_state(
                        &row.token_hash,
                        row.version,
                        ResetState::CodeSent,
                        ResetState::Cancelled,
                        now,
                    )
                    .await?;
                return Err(Error::IllegalStep(Refusal::AccountChanged));
            }
            let code = new_code()?;
            let code_expires_at = now + ms(policy.code_ttl);
            let code_hash = self.inner.hasher.hash(&row.saga_id, &code);
            if !self
                .inner
                .db
                .reissue_code(
                    &row.token_hash,
                    row.version,
                    &code_hash,
                    code_expires_at,
                    now,
                )
                .await?
            {
                continue;
            }
            let send = row.sends + 1;
            tracing::info!(send, "code reissued");
            if let Err(e) = self
                .send_code(
                    &row.saga_id,
                    send,
                    &row.recipient,
                    &row.account_id,
                    &code,
                    code_expires_at,
                    &row.locale,
                )
                .await
            {
                self.inner
                    .db
                    .mail_not_sent(&row.token_hash, send, self.now())
                    .await?;
                return Err(e);
            }
            return Ok(Resent {
                code_expires_at,
                resend_after: now + ms(policy.resend_after),
                resends_remaining: policy.max_resends.saturating_sub(resends_done + 1),
            });
        }
        Err(Error::Contended)
    }
}
