//! Database connections shared by every service: SQLite (the embedded default) or
//! PostgreSQL (production), chosen by URL, through sqlx's `Any` driver so one set of
//! queries serves both. Every service opens its database the same way:
//! `Database::<ItsSchema>::open(&settings.database)` connects and migrates.
//!
//! On PostgreSQL each service keeps its tables, and sqlx's `_sqlx_migrations` record, in a
//! schema of its own ([`Schema::POSTGRES_SCHEMA`]: `keystore`, `reset`, `notifier`, `portal`),
//! so all four can share one database (one CloudNativePG cluster) without their tables or
//! migration histories colliding: every pooled connection starts with `SET search_path` to
//! that schema, and `migrate` creates it when missing. The queries themselves stay
//! unqualified, the same text on SQLite, where each service has its own file.

use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Connection as _, Executor, Transaction};
use tokio::sync::{Mutex, OwnedMutexGuard};

mod metered;
mod wal;
pub use metered::{MeteredPool, PoolMeter};
pub use wal::{WAL_CHECKPOINT_EVERY, WalCheckpoint};

/// The sqlx this crate was built with, for [`crate::service_database!`].
pub use sqlx;

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

/// How long a pooled connection may sit idle and still be handed out without a ping.
/// sqlx pings every connection as it goes back to the pool, so one returned this recently
/// was alive then; its default second ping on the way out cost every statement another
/// round trip to PostgreSQL (or hop to SQLite's connection thread), a third of a
/// `VerifyCode`'s trips. A connection idle longer is pinged first (a firewall or the
/// server may have closed it meanwhile). One that dies within the second is found by the
/// call that uses it: `UNAVAILABLE`, which callers retry, and the connection is dropped
/// when its release ping fails.
pub const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// Opens a pool. A SQLite file (and its folder) is created when missing and runs in WAL mode
/// with a busy timeout, so several connections and processes can share it, and with
/// `secure_delete`, so wiped secrets are overwritten rather than left in free pages.
/// A service also runs the WAL keeper ([`Database::keep_wal`]); [`SQLITE_WAL_SIZE_LIMIT`]
/// bounds the log that a restart leaves behind where no keeper runs.
///
/// # Errors
/// A bad URL or an unreachable database.
pub async fn connect(url: &str, max_connections: u32) -> Result<(AnyPool, Backend), sqlx::Error> {
    connect_in(url, max_connections, None).await
}

/// Opens a pool like [`connect`] whose PostgreSQL connections each start with
/// `search_path` set to `schema` alone (so a table of `public`, or of another service, is
/// never found by accident). `None`, or a SQLite URL, changes nothing.
///
/// The setting is per session, so a pooler in front must hand one client the same server
/// connection for the whole session (PgBouncer `pool_mode = session`, see `deploy/`).
///
/// # Errors
/// A bad URL, a schema name that is not a plain lower-case identifier, or an unreachable
/// database.
pub async fn connect_in(
    url: &str,
    max_connections: u32,
    schema: Option<&'static str>,
) -> Result<(AnyPool, Backend), sqlx::Error> {
    sqlx::any::install_default_drivers();
    if let Some(schema) = schema {
        check_schema_name(schema)?;
    }
    let backend = Backend::of(url)?;
    if backend == Backend::Sqlite {
        create_sqlite_parent_dir(url);
    }
    let options = AnyConnectOptions::from_str(url)?;
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(10))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_WHEN_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                if backend == Backend::Sqlite {
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000; \
                         PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON; \
                         PRAGMA journal_size_limit = {SQLITE_WAL_SIZE_LIMIT};"
                    )))
                    .await?;
                } else if let Some(schema) = schema {
                    conn.execute(sqlx::AssertSqlSafe(format!(
                        "SET search_path TO \"{schema}\""
                    )))
                    .await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await?;
    Ok((pool, backend))
}

/// SQLite reuses its write-ahead log from the start once it has been checkpointed, but never
/// shrinks the file: a burst leaves it at its largest. With this `journal_size_limit` the
/// first commit after such a restart truncates it to 16 MiB: above the ~4 MB at which the
/// automatic checkpoint runs, so the usual restart costs nothing, while a file grown by a
/// burst (between keeper passes, or in a command-line tool that runs no keeper) gives its
/// space back.
pub const SQLITE_WAL_SIZE_LIMIT: i64 = 16 * 1024 * 1024;

/// Schema names are spliced into SQL (`SET search_path`, `CREATE SCHEMA`): only
/// `[a-z_][a-z0-9_]*` passes, which also needs no quoting rules.
fn check_schema_name(schema: &str) -> Result<(), sqlx::Error> {
    let mut chars = schema.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain && schema.len() <= 63 {
        Ok(())
    } else {
        Err(sqlx::Error::Configuration(
            format!("{schema:?} is not a plain PostgreSQL schema name").into(),
        ))
    }
}

/// Creates PostgreSQL schema `schema` unless it exists. Looks first, so a role that owns its
/// schema but may not create new ones in the database (a locked-down production role) still
/// migrates; two replicas creating it at the same moment both succeed.
///
/// # Errors
/// The database refuses (no `CREATE` privilege while the schema is missing) or is unreachable.
pub async fn create_schema(pool: &AnyPool, schema: &'static str) -> Result<(), sqlx::Error> {
    check_schema_name(schema)?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(schema)
        .fetch_optional(pool)
        .await?;
    if exists.is_some() {
        return Ok(());
    }
    match pool
        .execute(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
        )))
        .await
    {
        // 23505: a concurrent CREATE SCHEMA won the race on the catalogue's unique index.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Where a service keeps its data, the `[database]` section of every service's settings.
#[derive(Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://<file>?mode=rwc` (embedded) or `postgres://user@host/db` (production).
    /// Empty: the service's own SQLite file under `./data` ([`Schema::EMBEDDED_URL`]), so a
    /// section that sets only another key keeps each service in its own file.
    pub url: String,
    /// A file holding the URL instead (a mounted Kubernetes Secret, so the password is in
    /// neither the ConfigMap nor the pod's environment); surrounding whitespace is ignored.
    /// Setting both this and `url` is an error rather than a silent choice.
    pub url_file: Option<PathBuf>,
    pub max_connections: u32,
    /// Apply the embedded migrations at start-up. Switch it off to run `<service> migrate`
    /// as a separate step (a Kubernetes Job before the rollout).
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            url_file: None,
            max_connections: 16,
            migrate_on_start: true,
        }
    }
}

/// A database URL may carry a password: only its scheme and host are ever printed.
impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("url_file", &self.url_file)
            .field("max_connections", &self.max_connections)
            .field("migrate_on_start", &self.migrate_on_start)
            .finish()
    }
}

impl DatabaseSettings {
    /// The configured URL (from `url` or read from `url_file`), or the schema's embedded
    /// SQLite file when neither is set.
    ///
    /// # Errors
    /// Both `url` and `url_file` set, or the file unreadable or empty.
    pub fn url_or<S: Schema>(&self) -> Result<String, DatabaseError> {
        match (&self.url_file, self.url.is_empty()) {
            (Some(_), false) => Err(DatabaseError::UrlTwice),
            (Some(path), true) => {
                let read =
                    std::fs::read_to_string(path).map_err(|source| DatabaseError::UrlFile {
                        path: path.clone(),
                        source,
                    })?;
                let url = read.trim();
                if url.is_empty() {
                    return Err(DatabaseError::UrlFile {
                        path: path.clone(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "empty"),
                    });
                }
                Ok(url.to_owned())
            }
            (None, true) => Ok(S::EMBEDDED_URL.to_owned()),
            (None, false) => Ok(self.url.clone()),
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://host/db`.
fn redact_url(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A service's tables: where they live by default and how to create them on each backend.
pub trait Schema: Send + Sync + 'static {
    /// The SQLite file used when `database.url` is not set.
    const EMBEDDED_URL: &'static str;

    /// The PostgreSQL schema holding the tables and their migration record (see the module
    /// docs): a plain lower-case identifier, one per service.
    const POSTGRES_SCHEMA: &'static str;

    /// The embedded migrations for `backend` (`sqlx::migrate!` of a folder per backend).
    fn migrator(backend: Backend) -> &'static Migrator;
}

/// A service's database: the pool, its backend, and on SQLite a queue for this process's
/// write transactions. `S` names the service's schema, so each service's `store::Db` is
/// `Database<ItsSchema>` and can only migrate its own tables.
pub struct Database<S> {
    /// Every statement, transaction and connection of the stores goes through it, so the
    /// waits for a connection are measured (see [`MeteredPool`]).
    pool: MeteredPool,
    backend: Backend,
    /// SQLite admits one writer at a time. A transaction holds that lock across several
    /// round trips, and writers that find it taken sleep in SQLite's busy handler (in steps
    /// of up to 100 ms); queueing this process's transactions here instead keeps the tail
    /// short. Single-statement writes and other processes still meet the busy timeout.
    transaction_gate: Option<Arc<Mutex<()>>>,
    schema: PhantomData<fn() -> S>,
}

impl<S> Clone for Database<S> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            backend: self.backend,
            transaction_gate: self.transaction_gate.clone(),
            schema: PhantomData,
        }
    }
}

impl<S> std::fmt::Debug for Database<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("schema", &std::any::type_name::<S>())
            .finish_non_exhaustive()
    }
}

/// A write transaction, holding this process's SQLite transaction turn while it lives.
#[derive(Debug)]
pub struct WriteTx {
    pub tx: Transaction<'static, Any>,
    pub turn: Option<OwnedMutexGuard<()>>,
}

impl<S: Schema> Database<S> {
    /// Connects as `settings` say and applies the migrations unless
    /// `migrate_on_start = false`: what every service does at start-up.
    ///
    /// # Errors
    /// A bad URL, an unreachable database or a failed migration.
    pub async fn open(settings: &DatabaseSettings) -> Result<Self, DatabaseError> {
        let db = Self::connect(&settings.url_or::<S>()?, settings.max_connections).await?;
        if settings.migrate_on_start {
            db.migrate().await?;
        }
        Ok(db)
    }

    /// Opens the pool (see [`connect`]).
    ///
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let (pool, backend) = connect_in(url, max_connections, Some(S::POSTGRES_SCHEMA)).await?;
        let transaction_gate = (backend == Backend::Sqlite).then(|| Arc::new(Mutex::new(())));
        Ok(Self {
            pool: MeteredPool::new(pool),
            backend,
            transaction_gate,
            schema: PhantomData,
        })
    }

    /// Applies this schema's migrations for the pool's backend (idempotent; PostgreSQL takes
    /// an advisory lock, so replicas starting together do not race). On PostgreSQL the
    /// service's schema is created first when missing.
    ///
    /// # Errors
    /// A failed migration, or one changed after it ran.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        if self.backend == Backend::Postgres {
            create_schema(self.pool.unmetered(), S::POSTGRES_SCHEMA).await?;
        }
        S::migrator(self.backend).run(self.pool.unmetered()).await
    }
}

impl<S> Database<S> {
    /// Begins a write transaction, waiting for this process's turn on SQLite. Make its
    /// first statement a write, so SQLite takes its lock up front.
    ///
    /// # Errors
    /// The database is unreachable.
    pub async fn begin_write(&self) -> Result<WriteTx, sqlx::Error> {
        let turn = self.write_turn().await;
        Ok(WriteTx {
            tx: self.pool.begin().await?,
            turn,
        })
    }

    /// Waits for this process's SQLite write turn (the one [`Self::begin_write`] takes) and
    /// holds it until the guard drops; `None` at once on PostgreSQL, which has no single
    /// writer. For a hot write sent as one statement or one batch: under concurrency its
    /// writers then queue here, in order and without sleeping, instead of in SQLite's busy
    /// handler, whose sleeps (1, 2, 5 … 100 ms) become the tail of every page that writes.
    pub async fn write_turn(&self) -> Option<OwnedMutexGuard<()>> {
        match &self.transaction_gate {
            Some(gate) => Some(Arc::clone(gate).lock_owned().await),
            None => None,
        }
    }

    /// After secrets are destroyed, SQLite's write-ahead log still holds the pages as they
    /// were until a checkpoint; a truncating checkpoint moves the log into the file, where
    /// `secure_delete` has zeroed the old cells, and empties it. Best effort: with readers
    /// active the checkpoint completes later. Nothing to do on PostgreSQL.
    pub async fn flush_old_pages(&self) {
        if self.backend == Backend::Sqlite
            && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
        {
            tracing::warn!(error = %e, "WAL checkpoint after destroying secrets failed");
        }
    }

    /// The pool the stores run their statements on: an [`Executor`] like `&AnyPool`, whose
    /// every acquisition is measured.
    pub fn pool(&self) -> &MeteredPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Declares a service's database: its [`Schema`] (the embedded SQLite file, the PostgreSQL
/// schema, and the migrations under the crate's `migrations/sqlite` and `migrations/postgres`) and a newtype
/// over [`Database`] of it, so the service adds its queries as inherent methods (`impl Db {
/// .. }` in the files of its `store` module) while opening, migrating and transactions stay
/// here.
///
/// ```ignore
/// kagi_runtime::service_database! {
///     /// The keystore's database.
///     pub struct Db(
///         KeystoreSchema,
///         embedded = "sqlite://data/keystore.db?mode=rwc",
///         postgres_schema = "keystore"
///     );
/// }
/// ```
#[macro_export]
macro_rules! service_database {
    ($(#[$meta:meta])* $vis:vis struct $name:ident(
        $schema:ident,
        embedded = $url:literal,
        postgres_schema = $pg_schema:literal $(,)?
    );) => {
        /// The tables of
        #[doc = concat!("[`", stringify!($name), "`].")]
        #[derive(Debug)]
        $vis struct $schema;

        impl $crate::db::Schema for $schema {
            const EMBEDDED_URL: &'static str = $url;
            const POSTGRES_SCHEMA: &'static str = $pg_schema;

            fn migrator(backend: $crate::db::Backend) -> &'static $crate::db::sqlx::migrate::Migrator {
                static SQLITE: $crate::db::sqlx::migrate::Migrator =
                    ::sqlx::migrate!("./migrations/sqlite");
                static POSTGRES: $crate::db::sqlx::migrate::Migrator =
                    ::sqlx::migrate!("./migrations/postgres");
                match backend {
                    $crate::db::Backend::Sqlite => &SQLITE,
                    $crate::db::Backend::Postgres => &POSTGRES,
                }
            }
        }

        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            database: $crate::db::Database<$schema>,
        }

        impl $name {
            /// Connects as the settings say, and migrates unless `migrate_on_start = false`.
            ///
            /// # Errors
            /// A bad URL, an unreachable database or a failed migration.
            pub async fn open(
                settings: &$crate::db::DatabaseSettings,
            ) -> ::std::result::Result<Self, $crate::db::DatabaseError> {
                let database = $crate::db::Database::open(settings).await?;
                Ok(Self { database })
            }

            /// Opens the pool without migrating.
            ///
            /// # Errors
            /// A bad URL or an unreachable database.
            pub async fn connect(
                url: &str,
                max_connections: u32,
            ) -> ::std::result::Result<Self, $crate::db::sqlx::Error> {
                let database = $crate::db::Database::connect(url, max_connections).await?;
                Ok(Self { database })
            }
        }

        impl ::std::ops::Deref for $name {
            type Target = $crate::db::Database<$schema>;

            fn deref(&self) -> &Self::Target {
                &self.database
            }
        }
    };
}

/// Why a database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("connecting to the database")]
    Connect(#[from] sqlx::Error),
    #[error("applying the database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database.url and database.url_file are both set; keep one")]
    UrlTwice,
    #[error("reading database.url_file {}", path.display())]
    UrlFile {
        path: PathBuf,
        source: std::io::Error,
    },
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

    #[test]
    fn a_database_password_never_reaches_debug_output() {
        let settings = DatabaseSettings {
            url: "postgres://kagi:hunter2@db.example/kagi".into(),
            ..DatabaseSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("postgres://db.example/kagi"), "{printed}");
    }

    struct Demo;
    impl Schema for Demo {
        const EMBEDDED_URL: &'static str = "sqlite://data/demo.db?mode=rwc";
        const POSTGRES_SCHEMA: &'static str = "demo";
        fn migrator(_: Backend) -> &'static Migrator {
            static NONE: Migrator = Migrator::DEFAULT;
            &NONE
        }
    }

    #[test]
    fn an_unset_url_is_the_schemas_own_file_and_partial_sections_keep_it() {
        assert_eq!(
            DatabaseSettings::default().url_or::<Demo>().unwrap(),
            "sqlite://data/demo.db?mode=rwc"
        );
        // Only max_connections given (e.g. by an environment variable): the file stays.
        let partial: DatabaseSettings = figment::Figment::new()
            .merge(("max_connections", 4))
            .extract()
            .unwrap();
        assert_eq!(
            partial.url_or::<Demo>().unwrap(),
            "sqlite://data/demo.db?mode=rwc"
        );
        assert_eq!(partial.max_connections, 4);
        assert!(partial.migrate_on_start);
        let postgres = DatabaseSettings {
            url: "postgres://u@h/db".into(),
            ..partial
        };
        assert_eq!(postgres.url_or::<Demo>().unwrap(), "postgres://u@h/db");
    }

    #[test]
    fn the_url_can_come_from_a_mounted_secret_but_not_from_two_places() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://kagi:hunter2@pg-rw/kagi\n").unwrap();
        let from_file = DatabaseSettings {
            url_file: Some(file.clone()),
            ..DatabaseSettings::default()
        };
        assert_eq!(
            from_file.url_or::<Demo>().unwrap(),
            "postgres://kagi:hunter2@pg-rw/kagi"
        );
        assert!(!format!("{from_file:?}").contains("hunter2"));
        let both = DatabaseSettings {
            url: "postgres://u@h/db".into(),
            ..from_file
        };
        assert!(matches!(
            both.url_or::<Demo>(),
            Err(DatabaseError::UrlTwice)
        ));
        let missing = DatabaseSettings {
            url_file: Some(dir.path().join("absent")),
            ..DatabaseSettings::default()
        };
        let err = missing.url_or::<Demo>().unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn only_plain_schema_names_reach_sql() {
        assert!(check_schema_name("keystore").is_ok());
        assert!(check_schema_name("kagi_2").is_ok());
        for bad in ["", "Keystore", "a\"; DROP", "1abc", "a-b"] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn sqlite_writers_of_one_process_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/turns.db?mode=rwc", dir.path().display());
        let db = Database::<Demo>::connect(&url, 2).await.unwrap();

        let first = db.write_turn().await;
        let meanwhile = tokio::time::timeout(Duration::from_millis(50), db.begin_write()).await;

        // While one writer holds the turn no other gets it, a transaction neither; once it
        // is released the next one has it.
        assert!(first.is_some());
        assert!(meanwhile.is_err());
        drop(first);
        assert!(db.write_turn().await.is_some());
        db.close().await;
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
        let limit: i64 = sqlx::query_scalar("PRAGMA journal_size_limit")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(limit, SQLITE_WAL_SIZE_LIMIT);
        pool.close().await;
        assert!(dir.join("nested/x.db").exists());
        let _ = std::fs::remove_dir_all(dir);
    }
}
