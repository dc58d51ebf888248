//! Database connections shared by every service: SQLite (the embedded default) or
//! PostgreSQL (production), chosen by URL, through sqlx's `Any` driver so one set of
//! queries serves both.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

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

/// Opens a pool. A SQLite file (and its folder) is created when missing and runs in WAL mode
/// with a busy timeout, so several connections and processes can share it, and with
/// `secure_delete`, so wiped secrets are overwritten rather than left in free pages.
///
/// # Errors
/// A bad URL or an unreachable database.
pub async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), sqlx::Error> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    if backend == Backend::Sqlite {
        create_sqlite_parent_dir(url);
    }
    let options = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
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
    Ok((pool, backend))
}

/// A service's database: the pool, its backend, and on SQLite a queue for this process's
/// write transactions.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// SQLite admits one writer at a time. A transaction holds that lock across several
    /// round trips, and writers that find it taken sleep in SQLite's busy handler (in steps
    /// of up to 100 ms); queueing this process's transactions here instead keeps the tail
    /// short. Single-statement writes and other processes still meet the busy timeout.
    transaction_gate: Option<Arc<Mutex<()>>>,
}

/// A write transaction, holding this process's SQLite transaction turn while it lives.
#[derive(Debug)]
pub struct WriteTx {
    pub tx: Transaction<'static, Any>,
    pub turn: Option<OwnedMutexGuard<()>>,
}

impl Database {
    /// Opens the pool (see [`connect`]).
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let (pool, backend) = connect(url, max_connections).await?;
        let transaction_gate = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Self {
            pool,
            backend,
            transaction_gate,
        })
    }

    /// Begins a write transaction, waiting for this process's turn on SQLite. Make its
    /// first statement a write, so SQLite takes its lock up front.
    ///
    /// # Errors
    /// The database is unreachable.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = match &self.transaction_gate {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        };
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            turn,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// `sqlite://data/x.db` needs `data/` to exist before SQLite can create the file.
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

/// True when `err` is a unique-constraint violation (a duplicate key), on either backend.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_told_apart_by_url() {
        assert_eq!(
            Backend::of("sqlite://data/k.db?mode=rwc").unwrap(),
            Backend::Sqlite
        );
        assert_eq!(Backend::of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            Backend::of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of("mysql://u@h/db").is_err());
    }

    #[tokio::test]
    async fn a_sqlite_file_and_its_folder_are_created() {
        let dir = std::env::temp_dir().join(format!("kagi-db-test-{}", std::process::id()));
        let url = format!("sqlite://{}/nested/x.db?mode=rwc", dir.display());
        let (pool, backend) = connect(&url, 1).await.unwrap();
        assert_eq!(backend, Backend::Sqlite);
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(mode.0, "wal");
        pool.close().await;
        assert!(dir.join("nested/x.db").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
