//! The help desk's reads and trail (`kagi.v1.ResetAdmin`): an account's newest reset, and
//! who looked at or acted on it.

use super::resets::{ResetRow, state_column};
use super::{Db, WriteTx};
use crate::domain::ResetState;

/// An entry of the help desk's trail about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAdminEvent<'a> {
    pub at: i64,
    pub caller: &'a str,
    pub action: &'a str,
    pub account_id: &'a str,
    /// `operator=ID` or `operator=ID reason=…`: no code, reset ID or address.
    pub detail: String,
    pub trace_id: String,
}

/// A recorded entry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AdminEvent {
    pub seq: i64,
    pub at: i64,
    pub caller: String,
    pub action: String,
    pub account_id: String,
    pub detail: String,
    pub trace_id: String,
}

impl Db {
    /// The account's newest reset, whatever its state.
    ///
    /// # Errors
    /// Database failures.
    pub async fn latest_reset(&self, account_id: &str) -> Result<Option<ResetRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            reset_columns!(),
            " FROM resets WHERE account_id = $1 ORDER BY created_at DESC, version DESC LIMIT 1"
        ))
        .bind(account_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Cancels the reset `token_hash` if it is still at `version` in state `from`, and
    /// records `event` with it, in one transaction. `false` when another step moved first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn cancel_by_operator(
        &self,
        token_hash: &str,
        version: i64,
        from: ResetState,
        event: &NewAdminEvent<'_>,
    ) -> Result<bool, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE resets SET state = $1, updated_at = $2, version = version + 1 \
             WHERE token_hash = $3 AND state = $4 AND version = $5",
        )
        .bind(state_column(ResetState::Cancelled))
        .bind(event.at)
        .bind(token_hash)
        .bind(state_column(from))
        .bind(version)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        insert_event(&mut *tx, event).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Records one entry of the help desk's trail.
    ///
    /// # Errors
    /// Database failures.
    pub async fn admin_audit(&self, event: &NewAdminEvent<'_>) -> Result<(), sqlx::Error> {
        insert_event(self.pool(), event).await
    }

    /// Records the help desk's look at an account (`admin_view`) before it is answered.
    ///
    /// Why not [`Db::admin_audit`]: on SQLite a bare INSERT that finds the write lock taken
    /// sleeps in SQLite's busy handler (1, 2, 5, 10 ms… until it wins), and twenty
    /// operators looking at once made that sleep the account page's tail. Here the looks
    /// queue for this process's write turn instead, as the keystore's do, each INSERT
    /// committing on its own.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_look(&self, event: &NewAdminEvent<'_>) -> Result<(), sqlx::Error> {
        let _turn = self.write_turn().await;
        insert_event(self.pool(), event).await
    }

    /// The account's newest `limit` entries, newest first. The limit is cast so SQLite keeps
    /// the statement prepared (a bare `LIMIT $n` is parsed and planned on every bind).
    ///
    /// # Errors
    /// Database failures.
    pub async fn admin_events(
        &self,
        account_id: &str,
        limit: i64,
    ) -> Result<Vec<AdminEvent>, sqlx::Error> {
        sqlx::query_as(
            "SELECT seq, at, caller, action, account_id, detail, trace_id FROM admin_audit \
             WHERE account_id = $1 ORDER BY seq DESC LIMIT CAST($2 AS BIGINT)",
        )
        .bind(account_id)
        .bind(limit)
        .fetch_all(self.pool())
        .await
    }
}

async fn insert_event<'c, E>(executor: E, event: &NewAdminEvent<'_>) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO admin_audit (at, caller, action, account_id, detail, trace_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(event.at)
    .bind(event.caller)
    .bind(event.action)
    .bind(event.account_id)
    .bind(&event.detail)
    .bind(&event.trace_id)
    .execute(executor)
    .await?;
    Ok(())
}
