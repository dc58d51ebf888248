//! The audit trail: who did what to which account, when, under which trace. No secrets.

use sqlx::{Any, Executor};

use super::Db;

/// An event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAuditEvent<'a> {
    pub at_ms: i64,
    pub caller: &'a str,
    pub action: &'a str,
    pub account_id: &'a str,
    pub key_id: &'a str,
    pub detail: String,
    pub trace_id: String,
}

/// A recorded event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEvent {
    pub seq: i64,
    pub at: i64,
    pub caller: String,
    pub action: String,
    pub account_id: String,
    pub key_id: String,
    pub detail: String,
    pub trace_id: String,
}

pub(crate) async fn insert_audit<'c, E>(
    executor: E,
    event: &NewAuditEvent<'_>,
) -> Result<(), sqlx::Error>
where
    E: Executor<'c, Database = Any>,
{
    sqlx::query(
        "INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(event.at_ms)
    .bind(event.caller)
    .bind(event.action)
    .bind(event.account_id)
    .bind(event.key_id)
    .bind(&event.detail)
    .bind(&event.trace_id)
    .execute(executor)
    .await?;
    Ok(())
}

impl Db {
    /// Records one event on its own.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit(&self, event: &NewAuditEvent<'_>) -> Result<(), sqlx::Error> {
        insert_audit(self.database.pool(), event).await
    }

    /// Events newest first, optionally of one account, older than `before` when non-zero.
    ///
    /// Two statements rather than one `($1 = '' OR account_id = $1)`: SQLite plans a query
    /// once for any parameter, so that form never used the account's index and an account's
    /// page scanned the whole trail back to the account's oldest shown event.
    ///
    /// `LIMIT CAST($n AS BIGINT)`, not `LIMIT $n`: SQLite marks a statement whose LIMIT is a
    /// bare parameter to be parsed and planned again each time that parameter is bound (it
    /// may fold the value into the plan), which cost every look at an account a fresh
    /// prepare; behind a cast the statement stays prepared in the connection's cache.
    ///
    /// # Errors
    /// Database failures.
    pub async fn audit_events(
        &self,
        account_id: Option<&str>,
        before: i64,
        limit: i64,
    ) -> Result<Vec<AuditEvent>, sqlx::Error> {
        let before = if before > 0 { before } else { i64::MAX };
        let query = match account_id.filter(|a| !a.is_empty()) {
            Some(account_id) => sqlx::query_as(
                "SELECT seq, at, caller, action, account_id, key_id, detail, trace_id FROM audit_events \
                 WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT CAST($3 AS BIGINT)",
            )
            .bind(account_id),
            None => sqlx::query_as(
                "SELECT seq, at, caller, action, account_id, key_id, detail, trace_id FROM audit_events \
                 WHERE seq < $1 ORDER BY seq DESC LIMIT CAST($2 AS BIGINT)",
            ),
        };
        query
            .bind(before)
            .bind(limit)
            .fetch_all(self.database.pool())
            .await
    }
}

impl Db {
    /// Deletes audit events recorded before `before` (ms), `batch` rows per statement, and
    /// returns how many went.
    ///
    /// Why batches from the front: each statement looks at the `batch` oldest rows by `seq`
    /// (the primary key, so no index on `at` and no cost on the insert path) and deletes those
    /// that are old enough, so no statement holds its locks, or SQLite's one write lock, for
    /// long, and a million expired rows never become one transaction. `seq` follows `at`
    /// (events are numbered as they are recorded); a row stamped by a clock that went back
    /// is deleted late, never early, since every delete also tests `at`. It stops at the
    /// first batch with nothing expired.
    ///
    /// # Errors
    /// Database failures; the batches already deleted stay deleted.
    pub async fn purge_audit_before(&self, before: i64, batch: i64) -> Result<u64, sqlx::Error> {
        let mut purged = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM audit_events WHERE at < $1 AND seq IN \
                 (SELECT seq FROM audit_events ORDER BY seq LIMIT $2)",
            )
            .bind(before)
            .bind(batch.max(1))
            .execute(self.database.pool())
            .await?
            .rows_affected();
            if deleted == 0 {
                return Ok(purged);
            }
            purged += deleted;
            // Let the calls queued behind this statement run before the next batch.
            tokio::task::yield_now().await;
        }
    }
}
