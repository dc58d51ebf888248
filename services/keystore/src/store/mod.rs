//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver. Every
//! multi-step change is one transaction whose first statement writes (so SQLite takes its
//! write lock up front), and every race is settled by a conditional UPDATE rather than a
//! read-then-write.

mod audit;
mod keys;

use std::sync::Arc;

use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use audit::{AuditEvent, NewAuditEvent};
pub use keys::{CurrentKey, KeyRecord, NewKey, RotateOutcome, VerifyRow};

pub use kagi_runtime::db::Backend;

/// The keystore's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite admits one writer at a time. A transaction holds that lock across several
    /// round trips, and writers that find it taken sleep in SQLite's busy handler (in steps
    /// of up to 100 ms); queueing this process's transactions here instead keeps the tail
    /// short. Single-statement writes and other processes still meet the busy timeout.
    transaction_gate: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding this process's SQLite transaction turn while it lives.
pub(crate) struct WriteTx {
    pub(crate) tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

impl Db {
    /// Opens the keystore's pool (see [`kagi_runtime::db::connect`]).
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let (pool, backend) = kagi_runtime::db::connect(url, max_connections).await?;
        let transaction_gate = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Self {
            pool,
            backend,
            transaction_gate,
        })
    }

    /// Begins a write transaction, waiting for this process's turn on SQLite.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = match &self.transaction_gate {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        };
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            _turn: turn,
        })
    }

    /// After a key is destroyed, SQLite's write-ahead log still holds the page as it was
    /// (with the old ciphertext) until a checkpoint; a truncating checkpoint moves the log
    /// into the file, where `secure_delete` has zeroed the old cell, and empties it.
    /// Best effort: with readers active the checkpoint completes on a later rotation.
    pub(crate) async fn flush_old_pages(&self) {
        if self.backend == Backend::Sqlite
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "WAL checkpoint after key destruction failed");
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Applies the embedded migrations of this backend (idempotent; PostgreSQL takes an
    /// advisory lock so replicas starting together do not race).
    ///
    /// # Errors
    /// A failed or diverged migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

pub(crate) use kagi_runtime::db::is_unique_violation;
