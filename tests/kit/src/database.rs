//! A fresh database per test: a SQLite file in a temporary folder, or a new database on the
//! machine's PostgreSQL (`KAGI_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`), dropped again when the test ends.

use sqlx::Connection as _;

/// The two storage backends every scenario runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A private database for one test.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub backend: Backend,
    dir: Option<tempfile::TempDir>,
    pg_name: Option<String>,
    /// Files that belong with this database and go with it (a key every service on it shares).
    scratch: tempfile::TempDir,
}

/// The PostgreSQL server the tests use.
pub fn postgres_url() -> String {
    std::env::var("KAGI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `url` with its database name replaced by `name`, keeping any query string.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let base = base.rsplit_once('/').map_or(base, |(head, _)| head);
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

impl TestDatabase {
    /// Creates the database; `file` names the SQLite file (e.g. `keystore.db`).
    pub async fn new(backend: Backend, file: &str) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/{file}?mode=rwc", dir.path().display());
                Self {
                    url,
                    backend,
                    dir: Some(dir),
                    pg_name: None,
                    scratch: tempfile::tempdir().unwrap(),
                }
            }
            Backend::Postgres => {
                let name = format!("kagi_test_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&postgres_url())
                    .await
                    .expect("PostgreSQL must be reachable at KAGI_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/test)");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                // Each service keeps its tables in its own schema, named like its file
                // (`keystore.db` → `keystore`); tests that look behind the API with a plain
                // connection find them there by default.
                let schema = file.trim_end_matches(".db");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "ALTER DATABASE {name} SET search_path = \"{schema}\", public"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                let _ = admin.close().await;
                Self {
                    url: with_database(&postgres_url(), &name),
                    backend,
                    dir: None,
                    pg_name: Some(name),
                    scratch: tempfile::tempdir().unwrap(),
                }
            }
        }
    }

    /// A path for a file that belongs with this database (e.g. the notifier's payload key,
    /// which every replica on one queue shares), deleted with it.
    pub fn side_file(&self, name: &str) -> std::path::PathBuf {
        self.scratch.path().join(name)
    }

    /// The PostgreSQL database's name (for an administrator's statements about it);
    /// `None` on SQLite.
    pub fn postgres_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// The SQLite file's folder (the file plus its `-wal` and `-shm`), for scanning bytes.
    pub fn sqlite_dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs outside async; a small runtime on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_url()).await {
                    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}
