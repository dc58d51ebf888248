//! "2. 再設定メールを送信" → "コードを確認する": the right code verifies the reset, a wrong one
//! costs an attempt, the last wrong one locks it; a code past its 30 minutes is expired.
//! The code a resend replaced is a wrong code too, but the user is told it was replaced.

use crate::domain::state::ms;
use crate::domain::{ConfirmationCode, ResetState, ResetToken};
use crate::error::Error;

use super::{CodeOutcome, ROUNDS, ResetSaga};

impl ResetSaga {
    /// "コードを確認する": right code → VERIFIED; wrong → one attempt fewer; the last
    /// wrong one locks the reset.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once past CODE_SENT (except LOCKED and EXPIRED, which are
    /// outcomes), storage failures.
    pub async fn verify(
        &self,
        token: &ResetToken,
        code: &ConfirmationCode,
    ) -> Result<CodeOutcome, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match row.state {
                ResetState::CodeSent => {}
                ResetState::Locked => return Ok(CodeOutcome::Locked),
                ResetState::Expired => return Ok(CodeOutcome::Expired),
                other => return Err(Error::IllegalStep(other.refusal())),
            }
            if now >= row.code_expires_at {
                self.inner
                    .db
                    .move_state(
                        &row.token_hash,
                        row.version,
                        ResetState::CodeSent,
                        ResetState::Expired,
                        now,
                    )
                    .await?;
                crate::metrics::saga(crate::metrics::SagaEvent::Expired);
                return Ok(CodeOutcome::Expired);
            }
            // Every outcome is decided only once its write wins, so parallel guesses cannot
            // get past the cap. Both hashes are compared (each in constant time) whatever the
            // first says, so timing tells nothing about which one matched.
            let hasher = &self.inner.hasher;
            let current = hasher.matches(&row.saga_id, code, &row.code_hash);
            let replaced = row
                .replaced_code_hash
                .as_deref()
                .is_some_and(|old| hasher.matches(&row.saga_id, code, old));
            if current {
                if self
                    .inner
                    .db
                    .record_verified(&row.token_hash, row.version, now)
                    .await?
                {
                    tracing::info!("code verified");
                    crate::metrics::saga(crate::metrics::SagaEvent::Verified);
                    return Ok(CodeOutcome::Verified {
                        confirm_by: now + ms(policy.confirm_within),
                    });
                }
            } else if self
                .inner
                .db
                .record_wrong_code(&row.token_hash, row.version, policy.max_wrong_codes, now)
                .await?
            {
                let wrong = u32::try_from(row.wrong_attempts + 1).unwrap_or(u32::MAX);
                tracing::info!(wrong_attempts = wrong, replaced, "wrong code");
                if wrong >= policy.max_wrong_codes {
                    tracing::warn!("reset locked after too many wrong codes");
                    crate::metrics::saga(crate::metrics::SagaEvent::Locked);
                    return Ok(CodeOutcome::Locked);
                }
                return Ok(CodeOutcome::WrongCode {
                    attempts_remaining: policy.max_wrong_codes - wrong,
                    replaced,
                });
            }
        }
        Err(Error::Contended)
    }
}
