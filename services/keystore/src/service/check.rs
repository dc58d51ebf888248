//! "Check my authenticator": the code the user's device shows now, diagnosed against the
//! current key without it counting as a login (no step used, no failure, no lockout).

use super::{Actor, Keystore, row_params};
use crate::domain::{AccountId, Diagnosis, OneTimeCode};
use crate::error::Error;
use crate::store::CheckAdmission;

/// The outcome of one `CheckAuthenticator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckReport {
    /// The account has no setup key (nothing counted).
    NoKey,
    Checked {
        diagnosis: Diagnosis,
        /// The key's period, to tell the drift in seconds.
        period: u32,
        /// Checks left in the account's window after this one.
        checks_remaining: u32,
    },
}

impl Keystore {
    /// Diagnoses the code the user's device shows now: ready, clock off (and by how much)
    /// or no match. Counted against the account's own check allowance, audited as `check`;
    /// reads the key and never writes the login's counters.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the code's length is not the key's (nothing counted),
    /// [`Error::CheckLimited`] once the allowance is used up; storage or crypto failures.
    pub async fn check_authenticator(
        &self,
        actor: Actor<'_>,
        account: AccountId,
        raw_code: &str,
    ) -> Result<CheckReport, Error> {
        let inner = &self.inner;
        // A key an operator revoked has no secret left: the device can hold no current key.
        let current = inner.db.current_key(&account).await?;
        let Some(row) = current.filter(|row| row.revoked_at.is_none()) else {
            let audit = self.audit_event(actor, "check", account.as_str(), "", "no_key".into());
            inner.db.audit(&audit).await?;
            return Ok(CheckReport::NoKey);
        };
        let params = row_params(&row)?;
        let code = OneTimeCode::parse(raw_code, params.digits)?;
        let now_ms = inner.clock.now_ms();
        let limit = inner.check_limit;
        let used = match inner
            .db
            .admit_check(account.as_str(), now_ms, limit.window_ms(), limit.max)
            .await?
        {
            CheckAdmission::Admitted { used } => used,
            CheckAdmission::Refused { retry_at } => {
                tracing::warn!(account = %account, "authenticator check refused: allowance used up");
                return Err(Error::CheckLimited { retry_at });
            }
        };
        let secret = inner.keyring.open(&account, &row.key_id, &row.sealed())?;
        let unix_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        let diagnosis = inner.check.diagnose(&secret, params, &code, unix_secs);
        let detail = match diagnosis {
            Diagnosis::Ready { drift } => format!("ready drift={drift}"),
            Diagnosis::ClockSkewed { drift } => format!(
                "clock_skewed drift={drift} offset_secs={}",
                i64::from(drift) * i64::from(params.period)
            ),
            Diagnosis::NoMatch => "no_match".to_owned(),
        };
        let audit = self.audit_event(actor, "check", account.as_str(), &row.key_id, detail);
        inner.db.audit(&audit).await?;
        Ok(CheckReport::Checked {
            diagnosis,
            period: params.period,
            checks_remaining: limit.max.saturating_sub(used),
        })
    }
}
