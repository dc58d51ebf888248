//! The help desk's use cases (`kagi.v1.KeystoreAdmin`): look at an account without its
//! secret, unlock it, revoke its key. Every action is audited with the operator and the
//! reason; the look-up is audited too (`admin_view`), so the user's trail shows who looked.

use kagi_runtime::OperatorContext;

use crate::domain::AccountId;
use crate::error::Error;
use crate::service::{Actor, Keystore};
use crate::store::{AccountRecord, AuditEvent};

/// How many audit events an account page shows.
pub const RECENT_EVENTS: i64 = 20;

/// Everything the help desk sees of one account.
#[derive(Debug)]
pub struct AccountOverview {
    pub record: AccountRecord,
    /// The last accepted code: when, and its drift in time steps.
    pub last_login: Option<(i64, i32)>,
    pub recent_events: Vec<AuditEvent>,
}

impl Keystore {
    /// The account as the help desk sees it. Audited as `admin_view` by `operator`.
    ///
    /// # Errors
    /// [`Error::NoKey`] for an account the keystore never knew; storage failures.
    pub async fn admin_overview(
        &self,
        actor: Actor<'_>,
        operator: &AccountId,
        account: &AccountId,
    ) -> Result<AccountOverview, Error> {
        let record = self
            .db()
            .account_record(account)
            .await?
            .ok_or(Error::NoKey)?;
        let detail = format!("operator={operator}");
        let audit = self.audit_event(actor, "admin_view", account.as_str(), "", detail);
        self.db().record_look(&audit).await?;
        // Two reads on two connections at once: the page waits for the slower, not both.
        let (last_login, recent_events) = tokio::try_join!(
            self.db().last_accepted(account),
            self.db()
                .audit_events(Some(account.as_str()), 0, RECENT_EVENTS),
        )?;
        Ok(AccountOverview {
            record,
            last_login: last_login.map(|(at, detail)| (at, drift_of(&detail))),
            recent_events,
        })
    }

    /// Clears the account's failures and lock. Returns whether there was anything to
    /// clear; audited as `admin_unlock` either way.
    ///
    /// # Errors
    /// [`Error::NoKey`] for an unknown account; storage failures.
    pub async fn admin_unlock(
        &self,
        actor: Actor<'_>,
        account: &AccountId,
        context: &OperatorContext,
    ) -> Result<bool, Error> {
        let audit = self.audit_event(
            actor,
            "admin_unlock",
            account.as_str(),
            "",
            context.audit_detail(),
        );
        let was_locked = self
            .db()
            .unlock(account, self.now_ms(), &audit)
            .await?
            .ok_or(Error::NoKey)?;
        tracing::info!(account = %account, operator = %context.operator, was_locked, "unlocked by an operator");
        Ok(was_locked)
    }

    /// Revokes the live key: its secret is wiped, logins answer NO_KEY until a reissue.
    /// Returns the revoked key's ID; audited as `admin_revoke`.
    ///
    /// # Errors
    /// [`Error::NoKey`] for an unknown account, [`Error::NoLiveKey`] when already revoked;
    /// storage failures.
    pub async fn admin_revoke(
        &self,
        actor: Actor<'_>,
        account: &AccountId,
        context: &OperatorContext,
    ) -> Result<String, Error> {
        let audit = self.audit_event(
            actor,
            "admin_revoke",
            account.as_str(),
            "",
            context.audit_detail(),
        );
        match self.db().revoke(account, self.now_ms(), &audit).await? {
            Some(key_id) => {
                tracing::info!(account = %account, operator = %context.operator, key_id = %key_id, "key revoked by an operator");
                Ok(key_id)
            }
            None if self.db().account_record(account).await?.is_some() => Err(Error::NoLiveKey),
            None => Err(Error::NoKey),
        }
    }
}

/// The drift recorded with an accepted code (`accepted drift=N`); 0 when unreadable.
fn drift_of(detail: &str) -> i32 {
    detail
        .split_whitespace()
        .find_map(|part| part.strip_prefix("drift="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_drift_is_read_from_the_accepted_event() {
        assert_eq!(super::drift_of("accepted drift=-2"), -2);
        assert_eq!(super::drift_of("accepted"), 0);
    }
}
