//! `Stack::start`: a keystore, a notifier delivering to an SMTP sink, and the reset service
//! under test, each on 127.0.0.1:0 with a fresh database; the reset service on the backend
//! under test and a clock the test moves.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_reset::accounts::AccountAdmin;
use kagi_runtime::ManualClock;
use secrecy::SecretString;
use sqlx::Connection as _;
use tonic::transport::Channel;

pub use kagi_testkit::{Backend, TestDatabase};

pub const PASSWORD: &str = "correct-horse-battery-staple";
pub const EMAIL: &str = "taro@example.ac.jp";
pub const CODE_KEY: [u8; 32] = [42; 32];

pub fn token_of(caller: &str) -> String {
    format!("test-token-of-{caller}-0123456789")
}

/// Runs a statement against the reset service's database (to look behind the API).
pub async fn sql(db: &TestDatabase, statement: &str) -> Vec<sqlx::any::AnyRow> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// Every log line (JSON, with span fields, at trace level) of every service started in
/// this test binary.
pub fn captured_logs() -> String {
    kagi_testkit::logs::captured()
}

/// The SMTP server (kagi-testkit's aiosmtpd sink), read as the user reads mail.
pub struct SmtpSink {
    pub port: u16,
    inner: kagi_testkit::smtp::SmtpSink,
}

/// One message as the user's mail client shows it.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The addresses of the `To:` header.
    pub to: Vec<String>,
    pub subject: String,
    /// The text body.
    pub body: String,
}

fn parse_mail(raw: &[u8]) -> Mail {
    let mail = mail_parser::MessageParser::default().parse(raw).unwrap();
    Mail {
        to: mail
            .to()
            .map(|to| {
                to.iter()
                    .filter_map(|a| a.address())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        subject: mail.subject().unwrap_or_default().to_owned(),
        body: mail.body_text(0).unwrap_or_default().into_owned(),
    }
}

impl SmtpSink {
    pub async fn start() -> Self {
        let inner = kagi_testkit::smtp::SmtpSink::start("250").await;
        Self {
            port: inner.port,
            inner,
        }
    }

    /// The messages accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.inner.mails().iter().map(|m| parse_mail(m)).collect()
    }

    pub async fn wait_for_mails(&self, n: usize) -> Vec<Mail> {
        self.inner
            .wait_for_mails(n)
            .await
            .iter()
            .map(|m| parse_mail(m))
            .collect()
    }

    /// The confirmation code in the `n`-th mail (1-based), read as the user reads it.
    pub async fn code_in_mail(&self, n: usize) -> String {
        let mails = self.wait_for_mails(n).await;
        let Mail { subject, body, .. } = &mails[n - 1];
        assert!(subject.contains("二要素認証の再設定のご案内"), "{subject}");
        code_in(body).unwrap_or_else(|| panic!("no code in mail:\n{body}"))
    }
}

pub fn code_in(body: &str) -> Option<String> {
    body.lines()
        .find_map(|l| {
            l.strip_prefix("確認コード: ")
                .or_else(|| l.strip_prefix("Confirmation code: "))
        })
        .map(|c| c.trim().to_owned())
}

// ---------------------------------------------------------------- the stack

/// A service running in this process, stopped when dropped.
pub struct Running {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    fn spawn<F>(
        addr: std::net::SocketAddr,
        run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F,
    ) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(stopped));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops as on SIGTERM and waits until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn keystore_settings(db: &TestDatabase, addr: &str) -> kagi_keystore::Settings {
    let mut settings = kagi_keystore::Settings::default();
    settings.server.listen_addr = addr.parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.kek.keys.insert(
        "k1".into(),
        SecretString::from(base64::engine::general_purpose::STANDARD.encode([11_u8; 32])),
    );
    for caller in ["login", "reset", "onboarding", "admin"] {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
    settings
}

pub async fn start_keystore(
    settings: &kagi_keystore::Settings,
    clock: Arc<ManualClock>,
) -> Running {
    kagi_testkit::logs::init();
    let app = kagi_keystore::Application::build_with_clock(settings, clock)
        .await
        .expect("keystore starts");
    let addr = app.local_addr();
    Running::spawn(addr, |stopped| {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
    })
}

pub fn notifier_settings(db: &TestDatabase, smtp_port: u16) -> kagi_notifier::Settings {
    use kagi_notifier::config::{SmtpTls, TransportKind};
    let mut settings = kagi_notifier::Settings {
        server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    settings.server.shutdown_grace_secs = 2;
    settings
        .auth
        .tokens
        .insert("reset".into(), SecretString::from(token_of("reset")));
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.sealing.key_file = db.side_file("notifier-payload-key");
    settings.mail.templates_dir = None;
    settings.transport.kind = TransportKind::Smtp;
    settings.transport.smtp.host = "127.0.0.1".into();
    settings.transport.smtp.port = smtp_port;
    settings.transport.smtp.tls = SmtpTls::None;
    settings.transport.smtp.timeout_ms = 3_000;
    settings.transport.smtp.hello_name = Some("notifier.test".into());
    settings.delivery.poll_interval_ms = 25;
    settings.delivery.backoff_initial_ms = 40;
    settings.delivery.backoff_max_ms = 200;
    settings
}

pub async fn start_notifier(settings: kagi_notifier::Settings) -> Running {
    kagi_testkit::logs::init();
    let app = kagi_notifier::Application::build(&settings)
        .await
        .expect("notifier starts");
    let addr = app.local_addr();
    Running::spawn(addr, |stopped| {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
    })
}

/// Reset settings for the test stack: cheap argon2 (tests hash often; production strength
/// is tested on its own), no background sweeper, and every limit at its shipped default
/// (the notifier's too: see [`notifier_settings`]).
pub fn reset_settings(
    db: &TestDatabase,
    keystore: std::net::SocketAddr,
    notifier: std::net::SocketAddr,
) -> kagi_reset::Settings {
    let mut settings = kagi_reset::Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 8;
    settings.code_hmac_key_file = None;
    settings.code_hmac_key = Some(SecretString::from(
        base64::engine::general_purpose::STANDARD.encode(CODE_KEY),
    ));
    for caller in ["portal", "helpdesk"] {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token = Some(SecretString::from(token_of("reset")));
    settings.keystore.timeout_ms = 2_000;
    settings.notifier.endpoint = format!("http://{notifier}");
    settings.notifier.token = Some(SecretString::from(token_of("reset")));
    settings.notifier.timeout_ms = 2_000;
    settings.password.memory_kib = 1024;
    settings.password.iterations = 1;
    settings.sweeper.interval_secs = 0;
    settings
}

/// Everything one scenario talks to.
pub struct Stack {
    pub db: TestDatabase,
    pub clock: Arc<ManualClock>,
    pub keystore_clock: Arc<ManualClock>,
    _keystore_db: TestDatabase,
    pub keystore_settings: kagi_keystore::Settings,
    pub sink: SmtpSink,
    pub keystore: Option<Running>,
    _notifier: Running,
    pub reset: Option<Running>,
    pub saga: kagi_reset::saga::ResetSaga,
    pub accounts: AccountAdmin,
    pub settings: kagi_reset::Settings,
    pub client: ResetClient<Channel>,
    pub notifier_db: TestDatabase,
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the stack, letting the test change the reset service's settings first.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut kagi_reset::Settings),
    ) -> Self {
        kagi_testkit::logs::init();
        let sink = SmtpSink::start().await;
        let keystore_db = TestDatabase::new(Backend::Sqlite, "keystore.db").await;
        let keystore_settings = keystore_settings(&keystore_db, "127.0.0.1:0");
        let keystore_clock = Arc::new(ManualClock::new(SystemTime::now()));
        let keystore = start_keystore(&keystore_settings, keystore_clock.clone()).await;
        let notifier_db = TestDatabase::new(Backend::Sqlite, "notifier.db").await;
        let notifier = start_notifier(notifier_settings(&notifier_db, sink.port)).await;
        let db = TestDatabase::new(backend, "reset.db").await;
        let mut settings = reset_settings(&db, keystore.addr, notifier.addr);
        tweak(&mut settings);
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let (reset, saga, accounts) = start_reset(&settings, clock.clone()).await;
        let client = ResetClient::new(channel(reset.addr).await);
        // The keystore restarts on the same port in some scenarios.
        let mut keystore_settings = keystore_settings;
        keystore_settings.server.listen_addr = keystore.addr;
        Self {
            db,
            clock,
            keystore_clock,
            _keystore_db: keystore_db,
            keystore_settings,
            sink,
            keystore: Some(keystore),
            _notifier: notifier,
            reset: Some(reset),
            saga,
            accounts,
            settings,
            client,
            notifier_db,
        }
    }

    /// Waits until every message the notifier has queued reached the SMTP server, then
    /// checks there were exactly `n`: with nothing left in the queue, no other mail can
    /// still arrive.
    pub async fn assert_exactly_mailed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let (queued, sent) = loop {
            let rows = sql(
                &self.notifier_db,
                "SELECT COUNT(*) AS queued, COUNT(sent_at) AS sent FROM deliveries",
            )
            .await;
            let queued: i64 = sqlx::Row::get(&rows[0], "queued");
            let sent: i64 = sqlx::Row::get(&rows[0], "sent");
            if queued == sent || tokio::time::Instant::now() > deadline {
                break (queued, sent);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(sent, queued, "every queued mail delivered");
        assert_eq!(usize::try_from(queued).unwrap(), n, "mails queued");
        assert_eq!(self.sink.wait_for_mails(n).await.len(), n, "mails received");
    }

    /// An account in the directory, enrolled at the keystore; returns its first key.
    pub async fn account(&self, id: &str) -> pb::SetupKey {
        self.accounts
            .add(id, EMAIL, SecretString::from(PASSWORD), 0)
            .await
            .unwrap();
        self.enroll(id).await
    }

    pub async fn enroll(&self, id: &str) -> pb::SetupKey {
        let mut ks = self.keystore_client().await;
        ks.enroll(as_caller(
            "onboarding",
            pb::EnrollRequest {
                account_id: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
    }

    pub async fn keystore_client(&self) -> KeystoreClient<Channel> {
        let addr = self.keystore_settings.server.listen_addr;
        KeystoreClient::new(channel(addr).await)
    }

    /// The keystore's answer to a login with `key`'s current code.
    pub async fn login_with(&self, account: &str, key: &pb::SetupKey) -> pb::VerifyResult {
        use kagi_runtime::Clock as _;
        let now = u64::try_from(self.keystore_clock.now_ms() / 1000).unwrap();
        let request = as_caller(
            "login",
            pb::VerifyCodeRequest {
                account_id: account.into(),
                code: totp_at(key, now),
            },
        );
        let reply = self
            .keystore_client()
            .await
            .verify_code(request)
            .await
            .unwrap()
            .into_inner();
        // Each step accepts a code once; the next login must be in a later step.
        self.keystore_clock.advance(Duration::from_secs(30));
        reply.result()
    }

    /// How many times the keystore rotated `account`'s key.
    pub async fn rotations(&self, account: &str) -> usize {
        let request = as_caller(
            "admin",
            pb::ListAuditEventsRequest {
                account_id: account.into(),
                page_size: 1000,
                before: 0,
            },
        );
        self.keystore_client()
            .await
            .list_audit_events(request)
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .filter(|e| e.action == "rotate")
            .count()
    }

    pub async fn stop_keystore(&mut self) {
        if let Some(ks) = self.keystore.take() {
            ks.stop().await;
        }
    }

    pub async fn restart_keystore(&mut self) {
        self.keystore =
            Some(start_keystore(&self.keystore_settings, self.keystore_clock.clone()).await);
    }

    // ---- the portal's calls

    pub async fn start_reset(
        &self,
        account: &str,
        password: &str,
        ip: &str,
    ) -> Result<pb::StartResetResponse, tonic::Status> {
        let request = pb::StartResetRequest {
            account_id: account.into(),
            password: password.into(),
            client_ip: ip.into(),
            user_agent: "Mozilla/5.0 (test)".into(),
            locale: String::new(),
        };
        Ok(self
            .client
            .clone()
            .start_reset(portal(request))
            .await?
            .into_inner())
    }

    /// StartReset with the right password, and the code from the mail that follows.
    pub async fn start_and_read_code(&self, account: &str) -> (String, String) {
        let before = self.sink.mails().len();
        let started = self
            .start_reset(account, PASSWORD, "192.0.2.10")
            .await
            .unwrap();
        let code = self.sink.code_in_mail(before + 1).await;
        (started.reset_id, code)
    }

    pub async fn resend(&self, reset_id: &str) -> Result<pb::ResendCodeResponse, tonic::Status> {
        let request = pb::ResendCodeRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .resend_code(portal(request))
            .await?
            .into_inner())
    }

    pub async fn verify(
        &self,
        reset_id: &str,
        code: &str,
    ) -> Result<pb::VerifyResetCodeResponse, tonic::Status> {
        let request = pb::VerifyResetCodeRequest {
            reset_id: reset_id.into(),
            code: code.into(),
        };
        Ok(self
            .client
            .clone()
            .verify_code(portal(request))
            .await?
            .into_inner())
    }

    pub async fn confirm(&self, reset_id: &str) -> Result<pb::SetupKey, tonic::Status> {
        let request = pb::ConfirmResetRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .confirm_reset(portal(request))
            .await?
            .into_inner()
            .key
            .unwrap())
    }

    pub async fn cancel(&self, reset_id: &str) -> Result<pb::ResetState, tonic::Status> {
        let request = pb::CancelResetRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .cancel_reset(portal(request))
            .await?
            .into_inner()
            .state())
    }

    pub async fn get(&self, reset_id: &str) -> pb::GetResetResponse {
        let request = pb::GetResetRequest {
            reset_id: reset_id.into(),
        };
        self.client
            .clone()
            .get_reset(portal(request))
            .await
            .unwrap()
            .into_inner()
    }
}

pub async fn start_reset(
    settings: &kagi_reset::Settings,
    clock: Arc<ManualClock>,
) -> (Running, kagi_reset::saga::ResetSaga, AccountAdmin) {
    let app = kagi_reset::Application::build_with_clock(settings, clock)
        .await
        .expect("reset service starts");
    let addr = app.local_addr();
    let saga = app.saga().clone();
    let accounts = app.accounts().clone();
    let running = Running::spawn(addr, |stopped| {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
    });
    (running, saga, accounts)
}

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn as_caller<T>(caller: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of(caller)).parse().unwrap(),
    );
    request
}

pub fn portal<T>(message: T) -> tonic::Request<T> {
    as_caller("portal", message)
}

/// RFC 6238 by hand over the Base32 secret the user sees.
pub fn totp_at(key: &pb::SetupKey, unix_secs: u64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(key.secret_base32.as_bytes())
        .unwrap();
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(u8::try_from(key.digits).unwrap())
        .with_step_duration(u64::from(key.period_seconds))
        .with_secret(secret)
        .build()
        .unwrap();
    totp.generate(unix_secs).to_string()
}

/// A six-digit code that is not `right`.
pub fn wrong(right: &str) -> String {
    let n: u32 = right.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}
