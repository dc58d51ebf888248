//! The embedded directory's accounts table.

use super::resets::cancel_unconfirmed;
use super::{Db, WriteTx};

/// One account as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub account_id: String,
    pub password_hash: String,
    pub recovery_email: String,
    pub enabled: i64,
}

impl std::fmt::Debug for AccountRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRow")
            .field("account_id", &self.account_id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// # Errors
    /// Database failures.
    pub async fn find_account(&self, account_id: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT account_id, password_hash, recovery_email, enabled FROM accounts WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Creates an enabled account. `false` when the ID is taken.
    ///
    /// # Errors
    /// Database failures.
    pub async fn insert_account(
        &self,
        account_id: &str,
        password_hash: &str,
        recovery_email: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let inserted = sqlx::query(
            "INSERT INTO accounts (account_id, password_hash, recovery_email, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $4)",
        )
        .bind(account_id)
        .bind(password_hash)
        .bind(recovery_email)
        .bind(now)
        .execute(self.pool())
        .await;
        match inserted {
            Ok(_) => Ok(true),
            Err(e) if super::is_unique_violation(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Changes the password and cancels the account's unconfirmed resets, in one
    /// transaction. `false` when there is no such account.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_password_hash(
        &self,
        account_id: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let change = sqlx::query(
            "UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(account_id);
        self.change_account(change, account_id, true, now).await
    }

    /// Changes the recovery address and cancels the account's unconfirmed resets (whose
    /// codes went to the old address), in one transaction. `false` when there is no such
    /// account.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_recovery_email(
        &self,
        account_id: &str,
        recovery_email: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let change = sqlx::query(
            "UPDATE accounts SET recovery_email = $1, updated_at = $2 WHERE account_id = $3",
        )
        .bind(recovery_email)
        .bind(now)
        .bind(account_id);
        self.change_account(change, account_id, true, now).await
    }

    /// Enables or disables the account; disabling cancels its unconfirmed resets in the
    /// same transaction. `false` when there is no such account.
    ///
    /// # Errors
    /// Database failures.
    pub async fn set_enabled(
        &self,
        account_id: &str,
        enabled: bool,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let change =
            sqlx::query("UPDATE accounts SET enabled = $1, updated_at = $2 WHERE account_id = $3")
                .bind(i64::from(enabled))
                .bind(now)
                .bind(account_id);
        self.change_account(change, account_id, !enabled, now).await
    }

    /// Runs one account UPDATE and, when it changed a row and `cancel` is set, cancels the
    /// account's unconfirmed resets, all in one transaction.
    async fn change_account(
        &self,
        change: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
        account_id: &str,
        cancel: bool,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        if change.execute(&mut *tx).await?.rows_affected() != 1 {
            return Ok(false);
        }
        if cancel {
            let cancelled = cancel_unconfirmed(&mut tx, account_id, now).await?;
            if cancelled > 0 {
                tracing::info!(cancelled, "account changed: unconfirmed resets cancelled");
            }
        }
        tx.commit().await?;
        Ok(true)
    }
}
