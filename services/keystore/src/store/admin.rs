//! What the help desk reads and changes (`kagi.v1.KeystoreAdmin`): an account's key record,
//! counters and last login, the unlock and the revocation. Each change is one transaction
//! with its audit event.

use kagi_runtime::db::WriteTx;

use super::Db;
use super::audit::{NewAuditEvent, insert_audit};
use crate::domain::AccountId;

/// An account as the help desk sees it: no secret, only facts.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRecord {
    pub account_id: String,
    pub current_key_id: String,
    pub key_created_at: i64,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub failures: i64,
    pub lockouts: i64,
    pub locked_until: Option<i64>,
    /// When the account got its first key; a later `key_created_at` means a reissue.
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

impl Db {
    /// The account's record, without its secret.
    ///
    /// # Errors
    /// Database failures.
    pub async fn account_record(
        &self,
        account: &AccountId,
    ) -> Result<Option<AccountRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT account_id, current_key_id, key_created_at, algorithm, digits, period, failures, \
             lockouts, locked_until, created_at, revoked_at FROM accounts WHERE account_id = $1",
        )
        .bind(account.as_str())
        .fetch_optional(self.database.pool())
        .await
    }

    /// Records the help desk's look at an account (`admin_view`) before it is answered.
    ///
    /// Why not [`Db::audit`]: on SQLite a bare INSERT that finds the write lock taken sleeps
    /// in SQLite's busy handler (1, 2, 5, 10, 15 ms… until it wins), and twenty operators'
    /// looks at once made that the account page's tail. Here the looks queue for this
    /// process's write turn instead, each committing as soon as the one before it has. The
    /// INSERT commits on its own (no BEGIN and COMMIT around one statement): a third of the
    /// round trips to SQLite's thread.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_look(&self, event: &NewAuditEvent<'_>) -> Result<(), sqlx::Error> {
        let _turn = self.database.write_turn().await;
        insert_audit(self.database.pool(), event).await
    }

    /// When and with which detail (`accepted drift=N`) the account's last code was accepted.
    ///
    /// # Errors
    /// Database failures.
    pub async fn last_accepted(
        &self,
        account: &AccountId,
    ) -> Result<Option<(i64, String)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT at, detail FROM audit_events WHERE account_id = $1 AND action = 'verify' \
             ORDER BY seq DESC LIMIT 1",
        )
        .bind(account.as_str())
        .fetch_optional(self.database.pool())
        .await
    }

    /// Clears the failures and the lock (the count of lockouts stays, so the next lock
    /// still doubles). `None` for an unknown account; `Some(was_locked)` otherwise, where
    /// `was_locked` says whether there was anything to clear at `now_ms`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn unlock(
        &self,
        account: &AccountId,
        now_ms: i64,
        audit: &NewAuditEvent<'_>,
    ) -> Result<Option<bool>, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        // Writes first (SQLite's write lock up front); reports what it replaced.
        let cleared = sqlx::query(
            "UPDATE accounts SET failures = 0, locked_until = NULL WHERE account_id = $1 \
             AND (failures > 0 OR locked_until > $2)",
        )
        .bind(account.as_str())
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let was_locked = cleared.rows_affected() == 1;
        if !was_locked {
            let known: Option<(String,)> =
                sqlx::query_as("SELECT account_id FROM accounts WHERE account_id = $1")
                    .bind(account.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
            if known.is_none() {
                return Ok(None);
            }
        }
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(Some(was_locked))
    }

    /// Revokes the live key: wipes its sealed secret, marks it revoked and its record
    /// destroyed, so nothing can open it again. `None` when there is no live key. `audit`
    /// is recorded naming the revoked key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn revoke(
        &self,
        account: &AccountId,
        now_ms: i64,
        audit: &NewAuditEvent<'_>,
    ) -> Result<Option<String>, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        // A write first, so SQLite takes its lock before the read below decides anything.
        let done = sqlx::query(
            "UPDATE accounts SET revoked_at = $1, nonce = $2, ciphertext = $2, failures = 0, \
             locked_until = NULL WHERE account_id = $3 AND revoked_at IS NULL",
        )
        .bind(now_ms)
        .bind(Vec::<u8>::new())
        .bind(account.as_str())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(None);
        }
        let (key_id,): (String,) =
            sqlx::query_as("SELECT current_key_id FROM accounts WHERE account_id = $1")
                .bind(account.as_str())
                .fetch_one(&mut *tx)
                .await?;
        sqlx::query("UPDATE setup_keys SET destroyed_at = $1 WHERE key_id = $2")
            .bind(now_ms)
            .bind(&key_id)
            .execute(&mut *tx)
            .await?;
        let event = NewAuditEvent {
            key_id: &key_id,
            detail: audit.detail.clone(),
            trace_id: audit.trace_id.clone(),
            ..*audit
        };
        insert_audit(&mut *tx, &event).await?;
        tx.commit().await?;
        Ok(Some(key_id))
    }
}
