//! Starting the real notifier (on 127.0.0.1:0, with a fresh SQLite or PostgreSQL database),
//! a real SMTP server (tests/smtp_sink.py, aiosmtpd) and a gRPC client, and reading mail.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kagi_runtime::{Clock as _, OffsetClock};
use kagi_notifier::config::{SmtpTls, TransportKind};
use kagi_notifier::store::Store;
use kagi_notifier::{Application, Settings};
use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_client::NotifierClient;
use secrecy::SecretString;
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const TOKEN: &str = "reset-saga-test-token-0123456789";
pub const SUBJECT_JA: &str = "[OMU二要素認証]二要素認証の再設定のご案内";
pub const SENDER_JA: &str = "大阪公立大学 二要素認証管理システム";

/// Runs one test body against both backends.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )* };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

// ---------------------------------------------------------------- logs

/// Every log line of this test binary, captured once through kagi-runtime's subscriber.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUFFER.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    static GUARD: OnceLock<kagi_runtime::TelemetryGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let settings = kagi_runtime::TelemetrySettings { log_filter: "debug".into(), ..Default::default() };
        let buffer = Arc::clone(log_buffer());
        kagi_runtime::telemetry::init_with_writer("kagi-notifier-test", &settings, move || {
            LogWriter(Arc::clone(&buffer))
        })
        .expect("telemetry")
    });
}

// ---------------------------------------------------------------- SMTP server

/// A real SMTP server (aiosmtpd) answering DATA as scripted, storing what it accepts.
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl SmtpSink {
    /// Starts a sink on a free port: `script` like "250", "451,451,250" or "550".
    pub async fn start(script: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::start_on(0, script, dir).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a sink speaking TLS (`starttls` or `implicit`) with tests/tls/sink.crt.
    pub async fn start_tls(script: &str, tls: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::spawn(0, script, dir, tls, None).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a plaintext sink that requires AUTH with `user:password`.
    pub async fn start_with_auth(credentials: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::spawn(0, "250", dir, "none", Some(credentials)).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a sink on a given port (0 for any), storing mail in `dir`.
    pub async fn start_on(port: u16, script: &str, dir: PathBuf) -> Self {
        Self::spawn(port, script, dir, "none", None).await
    }

    async fn spawn(port: u16, script: &str, dir: PathBuf, tls: &str, auth: Option<&str>) -> Self {
        let python = std::env::var("KAGI_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let tls_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
        let mut child = Command::new(python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py"))
            .args(["--port", &port.to_string(), "--maildir", dir.to_str().unwrap(), "--script", script])
            .args(["--tls", tls, "--cert", &format!("{tls_dir}/sink.crt"), "--key", &format!("{tls_dir}/sink.key")])
            .args(auth.map(|a| ["--auth", a]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd==1.4.6)");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(20), BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("smtp sink did not start")
            .unwrap();
        let port = line.trim().strip_prefix("PORT ").expect("PORT line").parse().unwrap();
        let stdin = child.stdin.take();
        Self { port, dir, _tmp: None, child, stdin }
    }

    /// Stops the server (closing its stdin ends it).
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// The raw messages accepted so far, in order.
    pub fn mails(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// One line per DATA command: "<reply code> <Message-ID>".
    pub fn transcript(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("transcript.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub async fn wait_for_mails(&self, n: usize) -> Vec<Vec<u8>> {
        wait_until(Duration::from_secs(15), || self.mails().len() >= n).await;
        self.mails()
    }
}

/// The root that signed tests/tls/sink.crt.
pub fn test_ca() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.crt"))
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "condition not reached within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- databases

/// A fresh database for one test.
pub struct TestDb {
    pub url: String,
    _tmp: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let tmp = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}/notifier.db?mode=rwc", tmp.path().display());
                Self { url, _tmp: Some(tmp) }
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let server = std::env::var("KAGI_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
                let base = server.split('?').next().unwrap();
                let (prefix, _db) = base.rsplit_once('/').unwrap();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
                let name = format!("notifier_test_{now}_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
                let mut admin = sqlx::AnyConnection::connect(&format!("{prefix}/postgres")).await.unwrap();
                drop_stale_databases(&mut admin, now).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut admin).await.unwrap();
                admin.close().await.unwrap();
                Self { url: format!("{prefix}/{name}"), _tmp: None }
            }
        }
    }
}

/// Drops the databases earlier test runs left behind (older than an hour, so a run going on
/// in parallel keeps its own), once per test binary.
async fn drop_stale_databases(admin: &mut sqlx::AnyConnection, now: u64) {
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    CLEANED
        .get_or_init(|| async {
            use sqlx::Row as _;
            let rows = sqlx::query("SELECT datname::text AS datname FROM pg_database WHERE datname LIKE 'notifier_test_%'")
                .fetch_all(&mut *admin)
                .await
                .unwrap_or_default();
            for row in rows {
                let name: String = row.get("datname");
                let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                if created + 3600 < now {
                    let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&mut *admin).await;
                }
            }
        })
        .await;
}

// ---------------------------------------------------------------- the notifier

pub type Client = NotifierClient<InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, Status>>>;

#[allow(clippy::result_large_err)]
fn bearer(mut request: Request<()>) -> Result<Request<()>, Status> {
    request.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    Ok(request)
}

/// Settings of a notifier sending to `smtp_port` on 127.0.0.1, with fast polling and backoff.
pub fn test_settings(db: &TestDb, smtp_port: u16) -> Settings {
    let mut settings =
        Settings { server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse().unwrap()), ..Default::default() };
    settings.server.shutdown_grace_secs = 2;
    settings.auth.tokens.insert("reset".into(), SecretString::from(TOKEN));
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.mail.templates_dir = None;
    settings.transport.kind = TransportKind::Smtp;
    settings.transport.smtp.host = "127.0.0.1".into();
    settings.transport.smtp.port = smtp_port;
    settings.transport.smtp.tls = SmtpTls::None;
    settings.transport.smtp.timeout_ms = 3_000;
    settings.transport.smtp.pool_max_size = 4;
    settings.transport.smtp.hello_name = Some("notifier.test".into());
    settings.delivery.poll_interval_ms = 25;
    settings.delivery.backoff_initial_ms = 40;
    settings.delivery.backoff_max_ms = 200;
    settings.delivery.lease_secs = 30;
    settings
}

/// A running notifier and a client authenticated as the reset saga.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub client: Client,
    pub store: Store,
    pub clock: Arc<OffsetClock>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        init_logs();
        let clock = Arc::new(OffsetClock::default());
        let app = Application::build_with_clock(settings, clock.clone()).await.expect("build");
        let addr = app.local_addr();
        let store = app.store().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
        let client = NotifierClient::with_interceptor(channel, bearer as fn(_) -> _);
        Self { addr, client, store, clock, stop: Some(stop), task }
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task).await.unwrap().unwrap().unwrap();
    }

    /// Abrupt end, as when the process is killed: nothing gets to finish.
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn send_reset_code(&self, message_id: &str, recipient: &str, code: &str) -> Result<String, Status> {
        self.client
            .clone()
            .send_reset_code(reset_request(
                message_id,
                recipient,
                code,
                self.clock.utc() + chrono::Duration::minutes(30),
            ))
            .await
            .map(|r| r.into_inner().delivery_id)
    }

    /// GetDelivery without a bearer token.
    pub async fn delivery_without_token(&self, id: &str) -> Result<pb::Delivery, Status> {
        let mut client = NotifierClient::connect(format!("http://{}", self.addr)).await.unwrap();
        let request = pb::GetDeliveryRequest { delivery_id: id.to_owned() };
        Ok(client.get_delivery(request).await?.into_inner().delivery.unwrap_or_default())
    }

    pub async fn delivery(&self, id: &str) -> pb::Delivery {
        let request = pb::GetDeliveryRequest { delivery_id: id.to_owned() };
        self.client.clone().get_delivery(request).await.unwrap().into_inner().delivery.unwrap()
    }

    /// Polls GetDelivery until `done` holds.
    pub async fn wait_for(&self, id: &str, mut done: impl FnMut(&pb::Delivery) -> bool) -> pb::Delivery {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let delivery = self.delivery(id).await;
            if done(&delivery) {
                return delivery;
            }
            assert!(tokio::time::Instant::now() < deadline, "delivery never got there: {delivery:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the message is no longer queued.
    pub async fn wait_handled(&self, id: &str) -> pb::Delivery {
        self.wait_for(id, |d| d.state() != pb::DeliveryState::Queued).await
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: 0 }
}

pub fn reset_request(
    message_id: &str,
    recipient: &str,
    code: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> pb::SendResetCodeRequest {
    pb::SendResetCodeRequest {
        message_id: message_id.into(),
        recipient: recipient.into(),
        account_id: "a23b456c".into(),
        code: code.into(),
        expires_at: Some(timestamp(expires_at)),
        locale: String::new(),
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
