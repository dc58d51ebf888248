//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver. Every
//! multi-step change is one transaction whose first statement writes (so SQLite takes its
//! write lock up front), and every race is settled by a conditional UPDATE rather than a
//! read-then-write.

/// The columns of [`CurrentKey`], as a macro so queries stay `&'static str` literals.
macro_rules! key_columns {
    () => {
        "account_id, current_key_id, key_created_at, algorithm, digits, period, kek_id, nonce, ciphertext, issuer, revoked_at, qr_mask"
    };
}

mod admin;
mod audit;
mod checks;
mod keys;
mod views;

pub use admin::AccountRecord;
pub use audit::{AuditEvent, NewAuditEvent};
pub use checks::CheckAdmission;
pub use keys::{CurrentKey, KeyRecord, NewKey, RotateOutcome, VerifyRow};
pub use views::{MAX_VIEWS_PER_COMMIT, ViewQueue, ViewRequest};

pub use kagi_runtime::db::Backend;
pub(crate) use kagi_runtime::db::is_unique_violation;

use sqlx::Any;
use sqlx::any::{AnyArguments, AnyRow};

kagi_runtime::service_database! {
    /// The keystore's database: accounts with their current key, rotations, the audit trail.
    pub struct Db(KeystoreSchema, embedded = "sqlite://data/keystore.db?mode=rwc", postgres_schema = "keystore");
}

/// A whole SQLite write transaction in one query string: `BEGIN IMMEDIATE; …; COMMIT;`.
type OneShot = sqlx::query::Query<'static, Any, AnyArguments>;

impl Db {
    /// Runs `batch`, a complete SQLite transaction (`BEGIN IMMEDIATE; …; COMMIT;`), as one
    /// command to the connection's worker thread, and returns the rows its statements return.
    ///
    /// Why: a transaction driven statement by statement holds SQLite's one write lock across
    /// four round trips to that thread (BEGIN, UPDATE, INSERT, COMMIT), so the writes of the
    /// whole process queue behind it; this holds it for microseconds, like a single UPDATE.
    /// It is what keeps an audit row in the same commit as the change it records without
    /// slowing the hot paths (`VerifyCode` accepted and rejected).
    ///
    /// It must never stop half way: it runs in its own task, so a caller that gives up (a
    /// cancelled RPC) cannot drop the worker's reply channel between BEGIN and COMMIT; and a
    /// failed statement discards the connection (closing it rolls back) rather than handing
    /// an open transaction back to the pool.
    ///
    /// # Errors
    /// Database failures; nothing of the batch is then committed.
    async fn sqlite_one_shot(&self, batch: OneShot) -> Result<Vec<AnyRow>, sqlx::Error> {
        let pool = self.database.pool().clone();
        tokio::spawn(async move {
            let mut conn = pool.acquire().await?;
            let rows = batch.fetch_all(&mut *conn).await;
            if rows.is_err() {
                conn.close_on_drop();
            }
            rows
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}
