//! What the portal's tests share: the whole system on 127.0.0.1:0 (a keystore, a notifier
//! delivering to a real SMTP server, the reset service and the portal under test), all four
//! on fresh SQLite files or all four on fresh PostgreSQL databases, every limit at its
//! production default; and a tiny HTTP/1.1 client (for the pages and for chromedriver).

#![allow(dead_code)]

pub mod http;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::client::{ClientSettings, channel};
use kagi_runtime::{Clock as _, ServiceChannel};
use kagi_stack::LocalStack;
use kagi_testkit::Backend;
use kagi_testkit::tls::TestPki;
use secrecy::SecretString;
use tonic::transport::Channel;

pub const ACCOUNT: &str = "taro";
pub const PASSWORD: &str = "correct-horse-battery-staple";
pub const EMAIL: &str = "taro@example.ac.jp";

pub use kagi_stack::local::{token_of, wrong};

/// The whole system for one test ([`LocalStack`]), with the demo account enrolled.
#[derive(Debug)]
pub struct Stack {
    pub portal: SocketAddr,
    pub keystore: SocketAddr,
    pub accounts: kagi_reset::accounts::AccountAdmin,
    pub first_key: pb::SetupKey,
    /// The reset service's database (to check what it recorded).
    pub reset_db: String,
    /// The notifier's database (to check what it queued).
    pub notifier_db: String,
    /// The portal's own database (sessions, login limits).
    pub portal_db: String,
    /// The clocks (`clock`, `keystore_clock`), the SMTP server (`sink`), the mTLS material
    /// (`tls`) and the running services.
    system: LocalStack,
}

impl std::ops::Deref for Stack {
    type Target = LocalStack;

    fn deref(&self) -> &LocalStack {
        &self.system
    }
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
    pub async fn start_with<'a>(
        tweak: impl FnOnce(&mut kagi_portal::Settings) + Send + 'a,
    ) -> Self {
        Self::start_with_on(Backend::Sqlite, tweak).await
    }

    /// Everything on `backend`, letting the test change the portal's settings first.
    pub async fn start_with_on<'a>(
        backend: Backend,
        tweak: impl FnOnce(&mut kagi_portal::Settings) + Send + 'a,
    ) -> Self {
        Self::start_from(LocalStack::builder(backend).portal(tweak)).await
    }

    /// Everything on `backend`, every gRPC hop (portal → keystore and reset, reset →
    /// keystore and notifier, the test's own calls) over TLS with client certificates.
    pub async fn start_mtls_on(backend: Backend) -> Self {
        Self::start_from(LocalStack::builder(backend).mtls(TestPki::new())).await
    }

    /// Everything on `backend` for `institution`, configured once and given to the portal,
    /// the notifier and the keystore alike (as a deployment's shared file would).
    pub async fn start_for<'a>(
        backend: Backend,
        institution: &kagi_runtime::Institution,
        tweak: impl FnOnce(&mut kagi_portal::Settings) + Send + 'a,
    ) -> Self {
        Self::start_from(
            LocalStack::builder(backend)
                .institution(institution.clone())
                .portal(tweak),
        )
        .await
    }

    async fn start_from(builder: kagi_stack::LocalBuilder<'_>) -> Self {
        // The tests' browsers connect from loopback: on campus, so the local login asks for
        // the password only. Tests of the off-campus login come through a trusted proxy that
        // names an outside address (`X-Forwarded-For`).
        let system = builder
            .keystore(|s| s.campus_networks = vec!["127.0.0.0/8".parse().unwrap()])
            .start()
            .await
            .expect("the system starts");
        let accounts = system.reset.as_ref().unwrap().accounts.clone();
        accounts
            .add(ACCOUNT, EMAIL, SecretString::from(PASSWORD), 0)
            .await
            .expect("demo account");
        let keystore = system.keystore_addr();
        let first_key = keystore_as(system.tls.as_ref(), keystore, "onboarding")
            .enroll(pb::EnrollRequest {
                account_id: ACCOUNT.into(),
            })
            .await
            .expect("enroll")
            .into_inner()
            .key
            .expect("key");
        Self {
            portal: system.portal.as_ref().unwrap().addr,
            keystore,
            accounts,
            first_key,
            reset_db: system.reset_db.url.clone(),
            notifier_db: system.notifier_db.url.clone(),
            portal_db: system.portal_db.as_ref().unwrap().url.clone(),
            system,
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
        self.sink.code_in_mail(n).await
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

pub async fn keystore_client(addr: SocketAddr) -> KeystoreClient<Channel> {
    KeystoreClient::new(
        Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// The code `secret_base32` shows at `unix_secs` (SHA-1, 6 digits, 30 s: the keystore's
/// defaults).
pub fn totp(secret_base32: &str, unix_secs: u64) -> String {
    kagi_stack::local::totp(secret_base32, 6, 30, unix_secs)
}

/// The `secret` parameter of an otpauth URI.
pub fn secret_of(otpauth_uri: &str) -> String {
    otpauth_uri
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("secret="))
        .unwrap()
        .to_owned()
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
