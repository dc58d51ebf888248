//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver (the same
//! connection setup as the keystore's). Every multi-step change is one transaction whose
//! first statement writes, and every saga transition is a conditional UPDATE on the
//! reset's state and version, never a read-then-write.

mod accounts;
mod rate;
mod resets;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

pub use accounts::AccountRow;
pub use resets::{NewReset, ResetRow, StartOutcome};

/// Which database engine a URL points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// # Errors
    /// A URL of any other scheme.
    pub fn of(url: &str) -> Result<Self, sqlx::Error> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Self::Postgres)
        } else {
            Err(sqlx::Error::Configuration(
                "database.url must start with sqlite: or postgres:".into(),
            ))
        }
    }
}

/// The reset service's database.
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
    /// Opens a pool. SQLite files are created when missing and run in WAL mode with a busy
    /// timeout, so several connections and processes can share one file.
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of(url)?;
        if backend == Backend::Sqlite {
            create_sqlite_parent_dir(url);
        }
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
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

/// `sqlite://data/reset.db` needs `data/` to exist before SQLite can create the file.
fn create_sqlite_parent_dir(url: &str) {
    let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return;
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(parent);
    }
}

/// True when `err` is a unique-constraint violation (a duplicate key).
pub(crate) fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}
