//! What the portal's tests share: the whole system on 127.0.0.1:0 (a keystore, a notifier
//! delivering to a real SMTP server, the reset service and the portal under test), all four
//! on fresh SQLite files or all four on fresh PostgreSQL databases, every limit at its
//! production default; and a tiny HTTP/1.1 client (for the pages and for chromedriver).

#![allow(dead_code)]

pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use kagi_portal::config::LoginMode;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::client::{ClientSettings, channel};
use kagi_runtime::{Clock as _, ManualClock, ServiceChannel};
use kagi_testkit::smtp::SmtpSink;
use kagi_testkit::tls::TestPki;
use kagi_testkit::{Backend, TestDatabase};
use secrecy::SecretString;
use tonic::transport::Channel;

pub const ACCOUNT: &str = "taro";
pub const PASSWORD: &str = "correct-horse-battery-staple";
pub const EMAIL: &str = "taro@example.ac.jp";

pub fn token_of(caller: &str) -> String {
    format!("test-token-of-{caller}-0123456789")
}

/// A running service and the way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Running {
    fn spawn<F>(addr: SocketAddr, run: impl FnOnce(tokio::sync::oneshot::Receiver<()>) -> F) -> Self
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(run(stopped));
        Self {
            addr,
            stop: Some(stop),
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

/// The whole system for one test.
pub struct Stack {
    pub portal: SocketAddr,
    pub keystore: SocketAddr,
    /// The clock of the portal and the reset service (resend cooldown, idle sessions).
    pub clock: Arc<ManualClock>,
    /// The keystore's clock (one-time passwords).
    pub keystore_clock: Arc<ManualClock>,
    pub sink: SmtpSink,
    pub accounts: kagi_reset::accounts::AccountAdmin,
    pub first_key: pb::SetupKey,
    /// The reset service's database (to check what it recorded).
    pub reset_db: String,
    /// The notifier's database (to check what it queued).
    pub notifier_db: String,
    /// The portal's own database (sessions, login limits).
    pub portal_db: String,
    /// With every gRPC hop on mTLS: the CA and certificates the services use.
    pub tls: Option<TestPki>,
    _services: Vec<Running>,
    _dbs: Vec<TestDatabase>,
}

impl Stack {
    /// Everything on SQLite.
    pub async fn start() -> Self {
        Self::start_on(Backend::Sqlite).await
    }

    /// Everything on `backend`: the four services each on a fresh database of it.
    pub async fn start_on(backend: Backend) -> Self {
        Self::start_with_on(backend, |_| {}).await
    }

    /// Everything on SQLite, letting the test change the portal's settings first.
    pub async fn start_with(tweak: impl FnOnce(&mut kagi_portal::Settings)) -> Self {
        Self::start_with_on(Backend::Sqlite, tweak).await
    }

    /// Everything on `backend`, letting the test change the portal's settings first.
    pub async fn start_with_on(
        backend: Backend,
        tweak: impl FnOnce(&mut kagi_portal::Settings),
    ) -> Self {
        Self::start_full(backend, &kagi_runtime::Institution::default(), tweak, None).await
    }

    /// Everything on `backend`, every gRPC hop (portal → keystore and reset, reset →
    /// keystore and notifier, the test's own calls) over TLS with client certificates.
    pub async fn start_mtls_on(backend: Backend) -> Self {
        Self::start_full(
            backend,
            &kagi_runtime::Institution::default(),
            |_| {},
            Some(TestPki::new()),
        )
        .await
    }

    /// Everything on `backend` for `institution`, configured once and given to the portal,
    /// the notifier and the keystore alike (as a deployment's shared file would).
    pub async fn start_for(
        backend: Backend,
        institution: &kagi_runtime::Institution,
        tweak: impl FnOnce(&mut kagi_portal::Settings),
    ) -> Self {
        Self::start_full(backend, institution, tweak, None).await
    }

    async fn start_full(
        backend: Backend,
        institution: &kagi_runtime::Institution,
        tweak: impl FnOnce(&mut kagi_portal::Settings),
        tls: Option<TestPki>,
    ) -> Self {
        kagi_testkit::logs::init();
        let sink = SmtpSink::start("250").await;
        let keystore_db = TestDatabase::new(backend, "keystore.db").await;
        let notifier_db = TestDatabase::new(backend, "notifier.db").await;
        let reset_db = TestDatabase::new(backend, "reset.db").await;
        let portal_db = TestDatabase::new(backend, "portal.db").await;

        let keystore_clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut settings = keystore_settings(&keystore_db);
        settings.institution = institution.clone();
        if let Some(pki) = &tls {
            let callers = ["login", "reset", "onboarding", "admin", "portal"];
            pki.serve_mtls(&mut settings.server, &mut settings.auth, &callers);
        }
        let keystore =
            kagi_keystore::Application::build_with_clock(&settings, keystore_clock.clone())
                .await
                .expect("keystore starts");
        let keystore_addr = keystore.local_addr();
        let keystore = Running::spawn(keystore_addr, |s| {
            keystore.run_until_stopped(async {
                let _ = s.await;
            })
        });

        let mut settings = notifier_settings(&notifier_db, sink.port);
        settings.institution = institution.clone();
        if let Some(pki) = &tls {
            pki.serve_mtls(&mut settings.server, &mut settings.auth, &["reset"]);
        }
        let notifier = kagi_notifier::Application::build(&settings)
            .await
            .expect("notifier starts");
        let notifier_addr = notifier.local_addr();
        let notifier = Running::spawn(notifier_addr, |s| {
            notifier.run_until_stopped(async {
                let _ = s.await;
            })
        });

        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let mut settings = reset_settings(&reset_db, keystore_addr, notifier_addr);
        if let Some(pki) = &tls {
            pki.serve_mtls(&mut settings.server, &mut settings.auth, &["portal"]);
            settings.keystore = over_mtls(pki, settings.keystore, keystore_addr, "reset");
            settings.notifier = over_mtls(pki, settings.notifier, notifier_addr, "reset");
        }
        let reset = kagi_reset::Application::build_with_clock(&settings, clock.clone())
            .await
            .expect("reset service starts");
        let reset_addr = reset.local_addr();
        let accounts = reset.accounts().clone();
        let reset = Running::spawn(reset_addr, |s| {
            reset.run_until_stopped(async {
                let _ = s.await;
            })
        });

        let mut settings = portal_settings(&portal_db, keystore_addr, reset_addr);
        settings.institution = institution.clone();
        if let Some(pki) = &tls {
            settings.keystore = over_mtls(pki, settings.keystore, keystore_addr, "portal");
            settings.reset = over_mtls(pki, settings.reset, reset_addr, "portal");
        }
        // The help desk's console, as its own caller; no operator unless a test names one.
        for (client, addr) in [
            (&mut settings.helpdesk.keystore, keystore_addr),
            (&mut settings.helpdesk.reset, reset_addr),
            (&mut settings.helpdesk.notifier, notifier_addr),
        ] {
            client.endpoint = format!("http://{addr}");
            client.token = Some(SecretString::from(token_of("helpdesk")));
        }
        tweak(&mut settings);
        let portal = kagi_portal::Application::build_with_clock(&settings, clock.clone())
            .await
            .expect("portal starts");
        let portal_addr = portal.local_addr();
        let portal = Running::spawn(portal_addr, |s| {
            portal.run_until_stopped(async {
                let _ = s.await;
            })
        });

        accounts
            .add(ACCOUNT, EMAIL, SecretString::from(PASSWORD), 0)
            .await
            .expect("demo account");
        let first_key = keystore_as(tls.as_ref(), keystore_addr, "onboarding")
            .enroll(pb::EnrollRequest {
                account_id: ACCOUNT.into(),
            })
            .await
            .expect("enroll")
            .into_inner()
            .key
            .expect("key");
        Self {
            portal: portal_addr,
            keystore: keystore_addr,
            clock,
            keystore_clock,
            sink,
            accounts,
            first_key,
            reset_db: reset_db.url.clone(),
            notifier_db: notifier_db.url.clone(),
            portal_db: portal_db.url.clone(),
            tls,
            _services: vec![portal, reset, notifier, keystore],
            _dbs: vec![keystore_db, notifier_db, reset_db, portal_db],
        }
    }

    /// How many rows `table` of the database at `url` holds.
    pub async fn rows(url: &str, table: &str) -> i64 {
        let (pool, _) = kagi_runtime::db::connect(url, 1).await.unwrap();
        let (n,): (i64,) =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&pool)
                .await
                .unwrap();
        pool.close().await;
        n
    }

    /// True when the reset service holds no reset and the notifier has queued nothing: no
    /// mail is on its way, now or later.
    pub async fn nothing_was_started(&self) -> bool {
        Self::rows(&self.reset_db, "resets").await == 0
            && Self::rows(&self.notifier_db, "deliveries").await == 0
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.portal)
    }

    pub async fn current_key(&self) -> pb::SetupKey {
        keystore_as(self.tls.as_ref(), self.keystore, "portal")
            .get_current_key(pb::GetCurrentKeyRequest {
                account_id: ACCOUNT.into(),
                ..Default::default()
            })
            .await
            .expect("current key")
            .into_inner()
            .key
            .expect("key")
    }

    /// What the keystore says to a login with the code `secret_base32` shows now; the
    /// keystore's clock then moves a step on, so the next login uses a fresh code.
    pub async fn login_with_secret(&self, secret_base32: &str) -> pb::VerifyResult {
        let now = u64::try_from(self.keystore_clock.now_ms() / 1000).unwrap();
        let request = pb::VerifyCodeRequest {
            account_id: ACCOUNT.into(),
            code: totp(secret_base32, now),
        };
        let reply = keystore_as(self.tls.as_ref(), self.keystore, "login")
            .verify_code(request)
            .await
            .expect("verify")
            .into_inner();
        self.keystore_clock.advance(Duration::from_secs(30));
        reply.result()
    }

    /// The confirmation code in the `n`-th mail (1-based), read as the user reads it.
    pub async fn code_in_mail(&self, n: usize) -> String {
        let mails = self.sink.wait_for_mails(n).await;
        let mail = mail_parser::MessageParser::default()
            .parse(&mails[n - 1])
            .expect("a mail");
        let body = mail.body_text(0).unwrap_or_default().into_owned();
        body.lines()
            .find_map(|l| {
                l.strip_prefix("確認コード: ")
                    .or_else(|| l.strip_prefix("Confirmation code: "))
            })
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|| panic!("no code in mail:\n{body}"))
    }
}

/// A keystore client calling as `caller`: its token over plaintext, or its certificate
/// (and token) over mTLS.
pub fn keystore_as(
    tls: Option<&TestPki>,
    addr: SocketAddr,
    caller: &str,
) -> KeystoreClient<ServiceChannel> {
    let mut settings = match tls {
        Some(pki) => pki.client_settings(addr, Some(caller)),
        None => ClientSettings::at(format!("http://{addr}")),
    };
    settings.token = Some(SecretString::from(token_of(caller)));
    KeystoreClient::new(channel(&settings).expect("a keystore client"))
}

/// `plain` (a client of `addr` with its token) over TLS, presenting `caller`'s certificate.
fn over_mtls(
    pki: &TestPki,
    plain: ClientSettings,
    addr: SocketAddr,
    caller: &str,
) -> ClientSettings {
    ClientSettings {
        token: plain.token,
        ..pki.client_settings(addr, Some(caller))
    }
}

pub async fn keystore_client(addr: SocketAddr) -> KeystoreClient<Channel> {
    KeystoreClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// RFC 6238 over a Base32 secret, SHA-1, 6 digits, 30 s (the keystore's defaults).
pub fn totp(secret_base32: &str, unix_secs: u64) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(secret_base32.as_bytes())
        .unwrap();
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret)
        .build()
        .unwrap()
        .generate(unix_secs)
        .to_string()
}

/// The `secret` parameter of an otpauth URI.
pub fn secret_of(otpauth_uri: &str) -> String {
    otpauth_uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned()
}

/// A six-digit code that is not `right`.
pub fn wrong(right: &str) -> String {
    let n: u32 = right.parse().unwrap();
    format!("{:06}", (n + 1) % 1_000_000)
}

/// Decodes the QR code in a PNG.
pub fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        image.width() as usize,
        image.height() as usize,
        |x, y| image.get_pixel(u32::try_from(x).unwrap(), u32::try_from(y).unwrap())[0],
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

/// The PNG behind a `data:image/png;base64,` URI.
pub fn png_of_data_uri(uri: &str) -> Vec<u8> {
    let b64 = uri
        .strip_prefix("data:image/png;base64,")
        .expect("a PNG data URI");
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn keystore_settings(db: &TestDatabase) -> kagi_keystore::Settings {
    let mut settings = kagi_keystore::Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.kek.keys.insert(
        "k1".into(),
        SecretString::from(base64::engine::general_purpose::STANDARD.encode([11_u8; 32])),
    );
    // The tests' browsers connect from loopback: on campus, so the local login asks for
    // the password only. Tests of the off-campus login come through a trusted proxy that
    // names an outside address (`X-Forwarded-For`).
    settings.campus_networks = vec!["127.0.0.0/8".parse().unwrap()];
    for caller in [
        "login",
        "reset",
        "onboarding",
        "admin",
        "portal",
        "helpdesk",
    ] {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
    settings
}

fn notifier_settings(db: &TestDatabase, smtp_port: u16) -> kagi_notifier::Settings {
    use kagi_notifier::config::{SmtpTls, TransportKind};
    let mut settings = kagi_notifier::Settings {
        server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    settings.server.shutdown_grace_secs = 2;
    for caller in ["reset", "helpdesk"] {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
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
    // Every limit stays at its production default (reset mails per recipient included).
    settings
}

fn reset_settings(
    db: &TestDatabase,
    keystore: SocketAddr,
    notifier: SocketAddr,
) -> kagi_reset::Settings {
    let mut settings = kagi_reset::Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.code_hmac_key_file = None;
    settings.code_hmac_key = Some(SecretString::from(
        base64::engine::general_purpose::STANDARD.encode([42_u8; 32]),
    ));
    for caller in ["portal", "helpdesk"] {
        settings
            .auth
            .tokens
            .insert(caller.into(), SecretString::from(token_of(caller)));
    }
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token = Some(SecretString::from(token_of("reset")));
    settings.notifier.endpoint = format!("http://{notifier}");
    settings.notifier.token = Some(SecretString::from(token_of("reset")));
    settings.password.memory_kib = 1024;
    settings.password.iterations = 1;
    // The reset policy (resends, attempts per account and per address) stays at its
    // production defaults.
    settings.sweeper.interval_secs = 0;
    settings
}

fn portal_settings(
    db: &TestDatabase,
    keystore: SocketAddr,
    reset: SocketAddr,
) -> kagi_portal::Settings {
    let mut settings = kagi_portal::Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token = Some(SecretString::from(token_of("portal")));
    settings.reset.endpoint = format!("http://{reset}");
    settings.reset.token = Some(SecretString::from(token_of("portal")));
    settings.login.mode = LoginMode::Local;
    settings
}

/// A secret as the key page groups it.
pub struct ShownSecret<'a>(pub &'a str);

impl ShownSecret<'_> {
    pub fn grouped(&self) -> String {
        self.0
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }
}
