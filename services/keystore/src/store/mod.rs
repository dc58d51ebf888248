//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver. Every
//! multi-step change is one transaction whose first statement writes (so SQLite takes its
//! write lock up front), and every race is settled by a conditional UPDATE rather than a
//! read-then-write.

mod audit;
mod keys;

use kagi_runtime::db::{Database, WriteTx};
use sqlx::AnyPool;

pub use audit::{AuditEvent, NewAuditEvent};
pub use keys::{CurrentKey, KeyRecord, NewKey, RotateOutcome, VerifyRow};

pub use kagi_runtime::db::Backend;

/// The keystore's database.
#[derive(Debug, Clone)]
pub struct Db {
    database: Database,
}

impl Db {
    /// Opens the keystore's pool (see [`kagi_runtime::db::connect`]).
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let database = Database::connect(url, max_connections).await?;
        Ok(Self { database })
    }

    /// Begins a write transaction, waiting for this process's turn on SQLite.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        self.database.begin_write().await
    }

    /// After a key is destroyed, SQLite's write-ahead log still holds the page as it was
    /// (with the old ciphertext) until a checkpoint; a truncating checkpoint moves the log
    /// into the file, where `secure_delete` has zeroed the old cell, and empties it.
    /// Best effort: with readers active the checkpoint completes on a later rotation.
    pub(crate) async fn flush_old_pages(&self) {
        if self.backend() == Backend::Sqlite
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(self.database.pool())
                .await
        {
            tracing::warn!(error = %e, "WAL checkpoint after key destruction failed");
        }
    }

    pub fn backend(&self) -> Backend {
        self.database.backend()
    }

    pub fn pool(&self) -> &AnyPool {
        self.database.pool()
    }

    /// Applies the embedded migrations of this backend (idempotent; PostgreSQL takes an
    /// advisory lock so replicas starting together do not race).
    ///
    /// # Errors
    /// A failed or diverged migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend() {
            Backend::Sqlite => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(self.database.pool())
                    .await
            }
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(self.database.pool())
                    .await
            }
        }
    }

    pub async fn close(&self) {
        self.database.close().await;
    }
}

pub(crate) use kagi_runtime::db::is_unique_violation;
