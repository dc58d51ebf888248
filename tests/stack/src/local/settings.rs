//! The four services' settings for an in-process stack, in one place: each on 127.0.0.1:0
//! with its own database, the callers' tokens ([`token_of`]), a fixed KEK and code key,
//! cheap password hashing (production strength has its own tests), no background sweeper,
//! and every limit at its shipped default.

use std::net::SocketAddr;

use base64::Engine as _;
use kagi_testkit::TestDatabase;
use secrecy::SecretString;

/// The key-encryption key every in-process keystore holds (as `k1`).
pub const KEK: [u8; 32] = [11; 32];

/// The reset service's confirmation-code HMAC key.
pub const CODE_KEY: [u8; 32] = [42; 32];

/// The bearer token of `caller`: fixed, so a test can build requests without the stack.
pub fn token_of(caller: &str) -> String {
    format!("test-token-of-{caller}-0123456789")
}

fn tokens<'a>(
    into: &mut std::collections::BTreeMap<String, SecretString>,
    callers: impl IntoIterator<Item = &'a str>,
) {
    for caller in callers {
        into.insert(caller.into(), SecretString::from(token_of(caller)));
    }
}

fn base64(bytes: &[u8]) -> SecretString {
    SecretString::from(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The keystore: every caller of the system has a token.
pub fn keystore(db: &TestDatabase) -> kagi_keystore::Settings {
    let mut settings = kagi_keystore::Settings::default();
    settings.server.listen_addr = loopback();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.kek.keys.insert("k1".into(), base64(&KEK));
    tokens(
        &mut settings.auth.tokens,
        [
            "login",
            "reset",
            "onboarding",
            "admin",
            "portal",
            "helpdesk",
        ],
    );
    settings
}

/// The notifier, delivering to the SMTP server on `smtp_port` at once and retrying fast.
pub fn notifier(db: &TestDatabase, smtp_port: u16) -> kagi_notifier::Settings {
    use kagi_notifier::config::{SmtpTls, TransportKind};
    let mut settings = kagi_notifier::Settings {
        server: kagi_runtime::ServerSettings::on(loopback()),
        ..Default::default()
    };
    settings.server.shutdown_grace_secs = 2;
    tokens(&mut settings.auth.tokens, ["reset", "helpdesk"]);
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

/// The reset service, calling the keystore and the notifier at their addresses.
pub fn reset(
    db: &TestDatabase,
    keystore: SocketAddr,
    notifier: SocketAddr,
) -> kagi_reset::Settings {
    let mut settings = kagi_reset::Settings::default();
    settings.server.listen_addr = loopback();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.code_hmac_key_file = None;
    settings.code_hmac_key = Some(base64(&CODE_KEY));
    tokens(&mut settings.auth.tokens, ["portal", "helpdesk"]);
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

/// The portal with its local login, calling the keystore and the reset service; the help
/// desk's console calls all three as its own caller, with no operator unless a test names one.
pub fn portal(
    db: &TestDatabase,
    keystore: SocketAddr,
    reset: SocketAddr,
    notifier: SocketAddr,
) -> kagi_portal::Settings {
    let mut settings = kagi_portal::Settings::default();
    settings.server.listen_addr = loopback();
    settings.server.shutdown_grace_secs = 2;
    settings.database.url = db.url.clone();
    settings.database.max_connections = 4;
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token = Some(SecretString::from(token_of("portal")));
    settings.reset.endpoint = format!("http://{reset}");
    settings.reset.token = Some(SecretString::from(token_of("portal")));
    settings.login.mode = kagi_portal::config::LoginMode::Local;
    let helpdesk = &mut settings.helpdesk;
    for (client, addr) in [
        (&mut helpdesk.keystore, keystore),
        (&mut helpdesk.reset, reset),
        (&mut helpdesk.notifier, notifier),
    ] {
        client.endpoint = format!("http://{addr}");
        client.token = Some(SecretString::from(token_of("helpdesk")));
    }
    settings
}
