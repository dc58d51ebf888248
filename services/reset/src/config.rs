//! The reset service's settings: defaults, then a TOML file, then `KAGI_RESET_*` variables.
//! `reset.toml` beside this crate documents every knob and is shown by `--help`.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kagi_runtime::cli::ServiceSettings;
use kagi_runtime::{
    AuthSettings, ClientSettings, DatabaseSettings, MetricsSettings, ServerSettings,
    TelemetrySettings,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::directory::PasswordParams;
use crate::domain::{CodeHasher, Policy};

/// Every knob with its default, shown by `--help`.
pub const REFERENCE: &str = include_str!("../reset.toml");

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "KAGI_RESET_";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub code_hmac_key: Option<SecretString>,
    pub code_hmac_key_file: Option<PathBuf>,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub keystore: ClientSettings,
    pub notifier: ClientSettings,
    pub password: PasswordParams,
    pub policy: PolicySettings,
    pub sweeper: SweeperSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            code_hmac_key: None,
            code_hmac_key_file: Some(PathBuf::from("data/reset-code-key")),
            server: ServerSettings::on(std::net::SocketAddr::from(([127, 0, 0, 1], 50052))),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
            auth: AuthSettings::default(),
            metrics: MetricsSettings::default(),
            keystore: ClientSettings::at("http://127.0.0.1:50051"),
            notifier: ClientSettings::at("http://127.0.0.1:50053"),
            password: PasswordParams::default(),
            policy: PolicySettings::default(),
            sweeper: SweeperSettings::default(),
        }
    }
}

impl ServiceSettings for Settings {
    const PROGRAM: &'static str = "kagi-reset";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

impl Settings {
    /// The code hasher: `code_hmac_key` if set, else the key file, created with 32 random
    /// bytes when missing.
    ///
    /// # Errors
    /// No key configured, an unreadable file, bad base64 or a short key.
    pub fn code_hasher(&self) -> anyhow::Result<CodeHasher> {
        let encoded = match (&self.code_hmac_key, &self.code_hmac_key_file) {
            (Some(key), _) => Zeroizing::new(key.expose_secret().trim().to_owned()),
            (None, Some(file)) => kagi_runtime::random::read_or_create_secret_file(file, 32)?,
            (None, None) => anyhow::bail!("set code_hmac_key or code_hmac_key_file"),
        };
        let key = STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| anyhow::anyhow!("the code HMAC key is not valid base64"))?;
        CodeHasher::new(Zeroizing::new(key)).map_err(|e| anyhow::anyhow!(e))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    pub code_ttl_secs: u64,
    pub resend_after_secs: u64,
    pub max_resends: u32,
    pub max_wrong_codes: u32,
    pub confirm_within_secs: u64,
    pub completed_view_secs: u64,
    /// Days a finished reset's personal data (addresses, user agent) is kept; 0 keeps it.
    pub retention_days: u64,
    /// Mail "your setup key was displayed" on every view of the key (menus 1 and 3).
    pub notify_key_display: bool,
    pub per_account_max: u32,
    pub per_account_window_secs: u64,
    pub per_ip_max: u32,
    pub per_ip_window_secs: u64,
    /// Reissues one account may start per hour. Each mails a code and up to `max_resends`
    /// more, so `starts_per_hour × (1 + max_resends)` must fit the notifier's
    /// `reset_codes_per_recipient_per_hour` (2 × 6 = 12): the user is told when to come
    /// back by this limit, never left waiting for a mail the notifier refused.
    pub starts_per_hour: u32,
}

impl Default for PolicySettings {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            code_ttl_secs: p.code_ttl.as_secs(),
            resend_after_secs: p.resend_after.as_secs(),
            max_resends: p.max_resends,
            max_wrong_codes: p.max_wrong_codes,
            confirm_within_secs: p.confirm_within.as_secs(),
            completed_view_secs: p.completed_view.as_secs(),
            retention_days: p.retention.as_secs() / (24 * 3600),
            notify_key_display: p.notify_key_display,
            per_account_max: 5,
            per_account_window_secs: 900,
            per_ip_max: 20,
            per_ip_window_secs: 900,
            starts_per_hour: 2,
        }
    }
}

impl PolicySettings {
    /// # Errors
    /// A zero TTL, window or cap.
    pub fn policy(&self) -> anyhow::Result<Policy> {
        anyhow::ensure!(
            self.code_ttl_secs > 0
                && self.confirm_within_secs > 0
                && self.max_wrong_codes > 0
                && self.per_account_window_secs > 0
                && self.per_ip_window_secs > 0
                && self.starts_per_hour > 0,
            "policy: TTLs, windows and max_wrong_codes must be positive"
        );
        Ok(Policy {
            code_ttl: Duration::from_secs(self.code_ttl_secs),
            resend_after: Duration::from_secs(self.resend_after_secs),
            max_resends: self.max_resends,
            max_wrong_codes: self.max_wrong_codes,
            confirm_within: Duration::from_secs(self.confirm_within_secs),
            completed_view: Duration::from_secs(self.completed_view_secs),
            retention: Duration::from_secs(self.retention_days.saturating_mul(24 * 3600)),
            notify_key_display: self.notify_key_display,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SweeperSettings {
    /// 0 disables the background sweeper (tests drive it by hand).
    pub interval_secs: u64,
}

impl Default for SweeperSettings {
    fn default() -> Self {
        Self { interval_secs: 30 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_states_the_real_defaults() {
        kagi_runtime::settings::reference_states_defaults::<Settings>(REFERENCE).unwrap();
    }

    #[test]
    fn a_configured_key_wins_and_short_keys_are_refused() {
        let mut s = Settings {
            code_hmac_key_file: None,
            ..Settings::default()
        };
        assert!(s.code_hasher().is_err());
        s.code_hmac_key = Some(SecretString::from(STANDARD.encode([1_u8; 8])));
        assert!(s.code_hasher().is_err());
        s.code_hmac_key = Some(SecretString::from(STANDARD.encode([1_u8; 32])));
        assert!(s.code_hasher().is_ok());
    }
}
