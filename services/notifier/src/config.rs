//! The notifier's settings: defaults that run locally with nothing installed (SQLite under
//! `./data`, mail written as `.eml` files to `./data/outbox`), overlaid by a TOML file and
//! `KAGI_NOTIFIER_*` environment variables. `notifier.toml` beside this crate documents every
//! knob and is shown by `--help`; a key the notifier does not know is an error, not ignored.

use std::path::PathBuf;
use std::time::Duration;

use kagi_runtime::cli::ServiceSettings;
use kagi_runtime::{
    AuthSettings, DatabaseSettings, MetricsSettings, ServerSettings, TelemetrySettings,
};
use secrecy::SecretString;
use serde::Deserialize;

/// Every knob with its default, shown by `--help`.
pub const REFERENCE: &str = include_str!("../notifier.toml");

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "KAGI_NOTIFIER_";

/// Everything the notifier can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub transport: TransportSettings,
    pub delivery: DeliverySettings,
    pub limits: LimitsSettings,
    pub sealing: SealingSettings,
    /// The institution the mails name, the same section (or shared file) as the portal's.
    pub institution: kagi_runtime::Institution,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::on(std::net::SocketAddr::from(([127, 0, 0, 1], 50053))),
            auth: AuthSettings::default(),
            telemetry: TelemetrySettings::default(),
            metrics: MetricsSettings::default(),
            database: DatabaseSettings::default(),
            mail: MailSettings::default(),
            transport: TransportSettings::default(),
            delivery: DeliverySettings::default(),
            limits: LimitsSettings::default(),
            sealing: SealingSettings::default(),
            institution: kagi_runtime::Institution::default(),
        }
    }
}

impl ServiceSettings for Settings {
    const PROGRAM: &'static str = "kagi-notifier";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

/// How the mails are sent and worded; who they speak for is `[institution]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailSettings {
    /// The envelope and `From:` address.
    pub from_address: String,
    /// The 2FA management portal.
    pub portal_url: String,
    /// Domain part of generated `Message-ID`s; the from-address domain when unset.
    pub message_id_domain: Option<String>,
    /// Directory of the editable templates; missing files are written from the built-in
    /// defaults at start. Unset: use the built-in templates.
    pub templates_dir: Option<PathBuf>,
}

impl Default for MailSettings {
    fn default() -> Self {
        Self {
            from_address: "no-reply@mfa.example.ac.jp".into(),
            portal_url: "https://mfa.example.ac.jp/".into(),
            message_id_domain: None,
            templates_dir: Some(PathBuf::from("data/notifier-templates")),
        }
    }
}

/// How mail leaves the notifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Write each message as an `.eml` file to `outbox_dir` (development).
    #[default]
    File,
    /// Send through an SMTP relay.
    Smtp,
}

/// TLS on the SMTP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plaintext (a relay on localhost or a trusted network).
    None,
    /// Upgrade with STARTTLS (required), usually port 587.
    #[default]
    Starttls,
    /// TLS from the first byte, usually port 465.
    Tls,
}

/// Where and how to send mail.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportSettings {
    pub kind: TransportKind,
    /// Outbox folder of the `file` transport.
    pub outbox_dir: PathBuf,
    pub smtp: SmtpSettings,
}

impl Default for TransportSettings {
    fn default() -> Self {
        Self {
            kind: TransportKind::File,
            outbox_dir: PathBuf::from("data/outbox"),
            smtp: SmtpSettings::default(),
        }
    }
}

/// The SMTP relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// A file holding the password (a mounted Secret); wins over `password`.
    pub password_file: Option<PathBuf>,
    /// PEM root certificate(s) to trust besides the public roots (a campus CA).
    pub ca_file: Option<PathBuf>,
    /// Per-command timeout.
    pub timeout_ms: u64,
    /// Connections kept open to the relay.
    pub pool_max_size: u32,
    pub pool_idle_timeout_secs: u64,
    /// Name given in EHLO; the machine's hostname when unset.
    pub hello_name: Option<String>,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "localhost".into(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: None,
            password: None,
            password_file: None,
            ca_file: None,
            timeout_ms: 10_000,
            pool_max_size: 8,
            pool_idle_timeout_secs: 60,
            hello_name: None,
        }
    }
}

/// The delivery worker and the limits on what callers may queue.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Run the delivery worker in this process.
    pub worker_enabled: bool,
    /// How often the queue is polled when no new message wakes the worker.
    pub poll_interval_ms: u64,
    /// Messages sent at once (and claimed at most per poll).
    pub concurrency: usize,
    /// How long a claimed message belongs to this replica before another may take it over.
    pub lease_secs: u64,
    /// First retry delay; doubles per attempt, with jitter.
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// A reissue notice not delivered within this time is given up.
    pub notice_max_age_secs: u64,
    /// Reset-code mails one recipient may be sent per hour; 0 disables the limit. The
    /// default, 12, lets a user run two whole reissues in an hour (the reset service's first
    /// code and its 5 resends each), so the manual's "resend" and "start over" never meet
    /// this limit before their own; more than that is somebody mail-bombing the address.
    pub reset_codes_per_recipient_per_hour: u32,
    /// "Your setup key was displayed" notices one recipient may be sent per hour; 0
    /// disables the limit. Counted apart from reset codes, so however often a key is
    /// viewed, the reset-code allowance (and with it the way back after a lost phone) is
    /// untouched; 20 is more views in an hour than anyone needs, and bounds the mail an
    /// intruder viewing the key in a loop can cause.
    pub key_display_notices_per_recipient_per_hour: u32,
    /// Days a sent or failed message's row (recipient, account, last reply) is kept for
    /// `GetDelivery`, idempotent replays and operators before the worker deletes it; 0
    /// keeps rows forever. 30 days outlasts any retry of a call (codes live 30 minutes,
    /// notices a day) and the hourly rate limit, while personal data does not pile up.
    pub retention_days: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            worker_enabled: true,
            poll_interval_ms: 500,
            concurrency: 16,
            lease_secs: 120,
            backoff_initial_ms: 2_000,
            backoff_max_ms: 300_000,
            notice_max_age_secs: 86_400,
            reset_codes_per_recipient_per_hour: 12,
            key_display_notices_per_recipient_per_hour: 20,
            retention_days: 30,
        }
    }
}

/// Bounds on what a caller may send.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSettings {
    /// Largest gRPC request decoded, in bytes. The notifier's requests are a few hundred
    /// bytes (an address of at most 254, IDs of at most 128, a 6-digit code), so 64 KiB is
    /// two orders of magnitude of headroom while a megabyte-sized request is refused with
    /// `OUT_OF_RANGE` before it is decoded or held in memory.
    pub max_request_bytes: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        Self {
            max_request_bytes: 64 * 1024,
        }
    }
}

/// How queued payloads (the reset code) are sealed at rest.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SealingSettings {
    /// The AES-256-GCM key: 32 bytes, base64, in a file (a mounted Secret in production;
    /// created with 32 random bytes, mode 0600, when missing). Every replica sharing the
    /// queue needs the same key, or it cannot send what another queued.
    pub key_file: PathBuf,
}

impl Default for SealingSettings {
    fn default() -> Self {
        Self {
            key_file: PathBuf::from("data/notifier-payload-key"),
        }
    }
}

impl DeliverySettings {
    /// The pause between polls when nothing wakes the worker (at least 1 ms).
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }

    /// How long a claim holds a message (at least 1 s).
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }

    /// How long finished rows are kept; `None` keeps them forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400))
    }

    /// The retry schedule; `backoff_max_ms` never below `backoff_initial_ms`.
    pub fn backoff(&self) -> crate::domain::Backoff {
        crate::domain::Backoff {
            initial: Duration::from_millis(self.backoff_initial_ms.max(1)),
            max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_initial_ms).max(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn load_text(toml: &str) -> anyhow::Result<Settings> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Settings::load(Some(file.path()))
    }

    #[test]
    fn the_shipped_notifier_toml_states_the_real_defaults() {
        kagi_runtime::settings::reference_states_defaults::<Settings>(REFERENCE).unwrap();
    }

    #[test]
    fn a_misspelt_key_in_notifier_toml_is_refused_and_named() {
        for (right, wrong) in [
            ("lease_secs = 120", "lease_sec = 120"),
            ("[delivery]", "[delivry]"),
            ("pool_max_size = 8", "pool_max_sise = 8"),
            ("max_request_bytes = 65536", "max_request_byte = 65536"),
            ("time_zone = \"Asia/Tokyo\"", "time_zon = \"Asia/Tokyo\""),
        ] {
            assert!(REFERENCE.contains(right), "{right}");
            let error = load_text(&REFERENCE.replacen(right, wrong, 1)).unwrap_err();
            let text = format!("{error:#}");
            let key = wrong.trim_matches(['[', ']']).split(' ').next().unwrap();
            assert!(
                text.contains("unknown field") && text.contains(key),
                "{wrong}: {text}"
            );
        }
    }

    #[test]
    fn a_value_from_the_file_overrides_its_default() {
        let settings =
            load_text("[delivery]\nlease_secs = 7\n[limits]\nmax_request_bytes = 1024\n").unwrap();
        assert_eq!(settings.delivery.lease_secs, 7);
        assert_eq!(settings.limits.max_request_bytes, 1024);
        assert_eq!(settings.delivery.concurrency, 16);
    }
}
