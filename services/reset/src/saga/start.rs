//! "1. 二要素認証のリセット": ID and password, a new reset (superseding an older live one),
//! and the first code mail.

use crate::domain::state::ms;
use crate::domain::token::saga_tag;
use crate::domain::{ResetState, ResetToken, mask_email};
use crate::error::{Error, Refusal};
use crate::limits::RateScope;
use crate::store::{NewReset, StartOutcome};

use super::{ROUNDS, ResetSaga, StartRequest, Started, new_code, random_bytes};

impl ResetSaga {
    /// "1. 二要素認証のリセット": check the password, create the reset, mail the first code.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// [`Error::TooManyStarts`],
    /// [`Error::MailUnavailable`] (the reset is cancelled; start again), storage failures.
    pub async fn start(&self, request: StartRequest<'_>) -> Result<Started, Error> {
        let now = self.now();
        let admission = self
            .inner
            .limiter
            .admit(RateScope::Reset, request.client_ip, request.account_id, now)
            .await?;
        let Some(account) = self
            .inner
            .directory
            .authenticate(request.account_id, &request.password)
            .await?
        else {
            tracing::info!("StartReset refused: bad credentials");
            return Err(Error::BadCredentials);
        };
        // The right password: not an attempt the limits count (successes never lock out).
        self.inner.limiter.refund(admission).await?;
        self.inner
            .limiter
            .admit_start(&account.account_id, now)
            .await?;

        let token = ResetToken::from_random(&random_bytes::<{ ResetToken::BYTES }>()?);
        let token_hash = token.digest();
        let saga_id = uuid::Uuid::new_v4().to_string();
        tracing::Span::current().record("saga", saga_tag(&saga_id).as_str());
        let code = new_code()?;
        let code_expires_at = now + ms(self.inner.policy.code_ttl);
        let code_hash = self.inner.hasher.hash(&saga_id, &code);
        let new = NewReset {
            token_hash: &token_hash,
            saga_id: &saga_id,
            account_id: &account.account_id,
            recipient: &account.recovery_email,
            locale: request.locale,
            client_ip: &request.client_ip.to_string(),
            user_agent: request.user_agent,
            code_hash: &code_hash,
            code_expires_at,
            now,
        };
        let mut outcome = StartOutcome::Raced;
        for _ in 0..ROUNDS {
            outcome = self.inner.db.start_reset(&new).await?;
            if outcome != StartOutcome::Raced {
                break;
            }
        }
        match outcome {
            StartOutcome::Started => {}
            StartOutcome::ConfirmingElsewhere => {
                return Err(Error::IllegalStep(Refusal::ConfirmingElsewhere));
            }
            StartOutcome::Raced => return Err(Error::Contended),
        }
        tracing::info!("reset started");
        crate::metrics::saga(crate::metrics::SagaEvent::Started);

        let sent = self
            .send_code(
                &saga_id,
                1,
                &account.recovery_email,
                &account.account_id,
                &code,
                code_expires_at,
                request.locale,
            )
            .await;
        if let Err(e) = sent {
            // Nothing half-done: the reset whose first mail failed is over.
            self.inner
                .db
                .move_state(
                    &token_hash,
                    0,
                    ResetState::CodeSent,
                    ResetState::Cancelled,
                    self.now(),
                )
                .await?;
            return Err(e);
        }
        Ok(Started {
            token,
            masked_recipient: mask_email(&account.recovery_email),
            code_expires_at,
            resend_after: now + ms(self.inner.policy.resend_after),
        })
    }
}
