//! `spawn_app`: a keystore on 127.0.0.1:0 with a fresh database, a clock the test moves, and
//! one bearer token per calling service.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use data_encoding::BASE64;
use kagi_keystore::{Application, Settings};
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::ManualClock;
use secrecy::SecretString;
use sqlx::Connection;
use tonic::transport::Channel;

pub use kagi_testkit::{Backend, TestDatabase};

pub const CALLERS: [&str; 6] = [
    "login",
    "reset",
    "portal",
    "admin",
    "onboarding",
    "helpdesk",
];

/// Settings for a test keystore: port 0, one KEK, a token per caller, a campus network.
pub fn test_settings(db: &TestDatabase) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 5;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 8;
    settings
        .kek
        .keys
        .insert("k1".into(), SecretString::from(BASE64.encode(&[11_u8; 32])));
    for caller in CALLERS {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
    settings.campus_networks = vec![
        "10.0.0.0/8".parse().unwrap(),
        "2001:db8:10::/48".parse().unwrap(),
    ];
    settings
}

pub fn token_of(caller: &str) -> String {
    format!("test-token-of-{caller}-0123456789")
}

/// A running keystore and what a test needs to talk to it.
#[derive(Debug)]
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served, when the settings asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub clock: Arc<ManualClock>,
    pub client: KeystoreClient<Channel>,
    /// The running service's use cases and database (its pool is the one the RPCs use).
    pub keystore: kagi_keystore::service::Keystore,
    /// The audit trail's purge, the one the service runs hourly.
    pub audit_retention: kagi_keystore::retention::AuditRetention,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts a keystore with `settings` and a clock at `clock`'s time.
    pub async fn start(settings: &Settings, clock: Arc<ManualClock>) -> Self {
        kagi_testkit::logs::init();
        let app = Application::build_with_clock(settings, clock.clone())
            .await
            .expect("keystore starts");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let keystore = app.keystore().clone();
        let audit_retention = app.audit_retention().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = KeystoreClient::new(channel(addr).await);
        Self {
            addr,
            metrics_addr,
            clock,
            client,
            keystore,
            audit_retention,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the service the way SIGTERM does and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the keystore stops within 30 s")
                .unwrap()
                .unwrap();
        }
    }

    /// A request carrying `caller`'s bearer token.
    pub fn as_caller<T>(caller: &str, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token_of(caller)).parse().unwrap(),
        );
        request
    }

    pub async fn enroll(&self, account: &str) -> pb::SetupKey {
        let request = Self::as_caller(
            "onboarding",
            pb::EnrollRequest {
                account_id: account.into(),
            },
        );
        self.client
            .clone()
            .enroll(request)
            .await
            .expect("enroll")
            .into_inner()
            .key
            .unwrap()
    }

    pub async fn current_key(&self, account: &str) -> Result<pb::SetupKey, tonic::Status> {
        self.current_key_in(account, &[]).await
    }

    /// The current key in the named forms only (`GetCurrentKeyRequest.forms`).
    pub async fn current_key_in(
        &self,
        account: &str,
        forms: &[pb::KeyForm],
    ) -> Result<pb::SetupKey, tonic::Status> {
        let request = Self::as_caller(
            "portal",
            pb::GetCurrentKeyRequest {
                account_id: account.into(),
                forms: forms.iter().map(|f| i32::from(*f)).collect(),
            },
        );
        Ok(self
            .client
            .clone()
            .get_current_key(request)
            .await?
            .into_inner()
            .key
            .unwrap())
    }

    pub async fn rotate(
        &self,
        account: &str,
        idempotency_key: &str,
    ) -> Result<pb::RotateKeyResponse, tonic::Status> {
        let request = Self::as_caller(
            "reset",
            pb::RotateKeyRequest {
                account_id: account.into(),
                idempotency_key: idempotency_key.into(),
            },
        );
        Ok(self.client.clone().rotate_key(request).await?.into_inner())
    }

    pub async fn verify(
        &self,
        account: &str,
        code: &str,
    ) -> Result<pb::VerifyCodeResponse, tonic::Status> {
        let request = Self::as_caller(
            "login",
            pb::VerifyCodeRequest {
                account_id: account.into(),
                code: code.into(),
            },
        );
        Ok(self.client.clone().verify_code(request).await?.into_inner())
    }

    /// The server's current Unix time, in seconds.
    pub fn clock_unix(&self) -> i64 {
        self.clock.now_unix()
    }

    /// The code `key` shows on a phone whose clock is `offset_secs` away from the server's.
    pub fn code_for(&self, key: &pb::SetupKey, offset_secs: i64) -> String {
        let now = self.clock.now_unix();
        code_at(key, u64::try_from(now + offset_secs).unwrap())
    }

    pub async fn audit(&self, account: &str) -> Vec<pb::AuditEvent> {
        let request = Self::as_caller(
            "admin",
            pb::ListAuditEventsRequest {
                account_id: account.into(),
                page_size: 1000,
                before: 0,
            },
        );
        self.client
            .clone()
            .list_audit_events(request)
            .await
            .unwrap()
            .into_inner()
            .events
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A keystore on a fresh database with the default settings.
pub async fn spawn_app(backend: Backend) -> (TestApp, TestDatabase) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let app = TestApp::start(
        &test_settings(&db),
        Arc::new(ManualClock::new(SystemTime::now())),
    )
    .await;
    (app, db)
}

pub trait UnixClock {
    fn now_unix(&self) -> i64;
}

impl UnixClock for ManualClock {
    fn now_unix(&self) -> i64 {
        use kagi_runtime::Clock;
        self.now_ms() / 1000
    }
}

/// The key's code at `unix_secs`, computed independently of the keystore's own code path
/// (RFC 6238 by hand over the Base32 secret the user sees).
pub fn code_at(key: &pb::SetupKey, unix_secs: u64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(key.secret_base32.as_bytes())
        .unwrap();
    let algorithm = match pb::HashAlgorithm::try_from(key.algorithm).unwrap() {
        pb::HashAlgorithm::Sha256 => totp_rs::Algorithm::SHA256,
        pb::HashAlgorithm::Sha512 => totp_rs::Algorithm::SHA512,
        _ => totp_rs::Algorithm::SHA1,
    };
    let totp = totp_rs::Builder::new()
        .with_algorithm(algorithm)
        .with_digits(u8::try_from(key.digits).unwrap())
        .with_step_duration(u64::from(key.period_seconds))
        .with_secret(secret)
        .build()
        .unwrap();
    totp.generate(unix_secs).to_string()
}

/// A code that is certainly not the key's right now (nor in the skew window).
pub fn wrong_code(app: &TestApp, key: &pb::SetupKey) -> String {
    let valid: Vec<String> = (-2..=2).map(|d| app.code_for(key, d * 30)).collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !valid.contains(c))
        .unwrap()
}

pub fn advance(app: &TestApp, by: Duration) {
    app.clock.advance(by);
}

/// Log lines written by every service started in this test binary.
pub fn captured_logs() -> String {
    kagi_testkit::logs::captured()
}

/// Every user table in the test's database, read from the catalogue (not from a list this
/// test suite keeps): bare names on SQLite, `schema.table` on PostgreSQL, ready to put in SQL.
pub async fn user_tables(db: &TestDatabase) -> Vec<String> {
    let rows: Vec<(String,)> = match db.backend {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(
                "SELECT name FROM sqlite_schema \
                 WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            sqlx::query_as(
                "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind IN ('r', 'p', 'm') \
                   AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                   AND n.nspname NOT LIKE 'pg_toast%' \
                 ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap()
        }
    };
    rows.into_iter().map(|(name,)| name).collect()
}

/// Everything the database holds, for scanning. On SQLite: every file in the database's
/// folder (the file, its `-wal` and `-shm`, a `-journal`), byte for byte; a file that cannot
/// be read fails the test. On PostgreSQL: every row of every user table the catalogue lists,
/// as JSON text (`bytea` as hex).
pub async fn dump_database(db: &TestDatabase) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    match db.backend {
        Backend::Sqlite => {
            let dir = db.sqlite_dir().unwrap();
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path)
                    .unwrap_or_else(|e| panic!("cannot scan {}: {e}", path.display()));
                out.insert(path.display().to_string(), bytes);
            }
            let main = dir.join("keystore.db").display().to_string();
            assert!(out.contains_key(&main), "{main} among {:?}", out.keys());
        }
        Backend::Postgres => {
            let tables = user_tables(db).await;
            for table in [
                "keystore.accounts",
                "keystore.setup_keys",
                "keystore.rotations",
                "keystore.audit_events",
            ] {
                assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
            }
            let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
            for table in tables {
                let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t.*)::text FROM {table} t"
                )))
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let text: String = rows.into_iter().map(|(r,)| r + "\n").collect();
                out.insert(table, text.into_bytes());
            }
        }
    }
    out
}
