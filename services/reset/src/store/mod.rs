//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver (the same
//! connection setup as the keystore's). Every multi-step change is one transaction whose
//! first statement writes, and every saga transition is a conditional UPDATE on the
//! reset's state and version, never a read-then-write.

mod accounts;
mod rate;
mod resets;

use kagi_runtime::db::Database;
use sqlx::AnyPool;

pub use accounts::AccountRow;
pub use resets::{NewReset, ResetRow, StartOutcome};

pub use kagi_runtime::db::Backend;
pub(crate) use kagi_runtime::db::{WriteTx, is_unique_violation};

/// The reset service's database.
#[derive(Debug, Clone)]
pub struct Db {
    database: Database,
}

impl Db {
    /// Opens the pool (see [`kagi_runtime::db::connect`]).
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        Ok(Self {
            database: Database::connect(url, max_connections).await?,
        })
    }

    /// Begins a write transaction, waiting for this process's turn on SQLite.
    pub(crate) async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        self.database.begin_write().await
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
