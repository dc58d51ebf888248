//! The reset service's settings: defaults, then a TOML file, then `KAGI_RESET_*` variables.
//! `reset.toml` beside this crate documents every knob and is shown by `--help`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kagi_runtime::{AuthSettings, ServerSettings, TelemetrySettings};
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
    pub keystore: DownstreamSettings,
    pub notifier: DownstreamSettings,
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
            keystore: DownstreamSettings::at("http://127.0.0.1:50051"),
            notifier: DownstreamSettings::at("http://127.0.0.1:50053"),
            password: PasswordParams::default(),
            policy: PolicySettings::default(),
            sweeper: SweeperSettings::default(),
        }
    }
}

impl Settings {
    /// # Errors
    /// A missing or malformed file or variable.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        kagi_runtime::settings::load(file, ENV_PREFIX)
            .map_err(|e| anyhow::anyhow!("invalid reset settings: {e}"))
    }

    /// The code hasher: `code_hmac_key` if set, else the key file, created with 32 random
    /// bytes when missing.
    ///
    /// # Errors
    /// No key configured, an unreadable file, bad base64 or a short key.
    pub fn code_hasher(&self) -> anyhow::Result<CodeHasher> {
        let encoded = match (&self.code_hmac_key, &self.code_hmac_key_file) {
            (Some(key), _) => Zeroizing::new(key.expose_secret().trim().to_owned()),
            (None, Some(file)) => read_or_create_key(file)?,
            (None, None) => anyhow::bail!("set code_hmac_key or code_hmac_key_file"),
        };
        let key = STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| anyhow::anyhow!("the code HMAC key is not valid base64"))?;
        CodeHasher::new(Zeroizing::new(key)).map_err(|e| anyhow::anyhow!(e))
    }
}

fn read_or_create_key(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(Zeroizing::new(existing.trim().to_owned()));
    }
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut raw = Zeroizing::new([0_u8; 32]);
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, raw.as_mut())
        .map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let encoded = Zeroizing::new(STANDARD.encode(raw.as_ref()));
    std::fs::write(path, encoded.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    tracing::warn!(path = %path.display(), "created a new code HMAC key");
    Ok(encoded)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "sqlite://data/reset.db?mode=rwc".into(),
            max_connections: 16,
            migrate_on_start: true,
        }
    }
}

/// A service this one calls: where, and the bearer token it knows us by.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DownstreamSettings {
    pub endpoint: String,
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    pub timeout_ms: u64,
}

impl Default for DownstreamSettings {
    fn default() -> Self {
        Self::at("http://127.0.0.1:0")
    }
}

impl DownstreamSettings {
    pub fn at(endpoint: &str) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            token_file: None,
            timeout_ms: 5_000,
        }
    }

    /// The token, from `token_file` if set, else `token`.
    ///
    /// # Errors
    /// An unreadable token file.
    pub fn token(&self) -> anyhow::Result<Option<SecretString>> {
        if let Some(file) = &self.token_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            return Ok(Some(SecretString::from(text.trim().to_owned())));
        }
        Ok(self.token.clone())
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
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
    pub per_account_max: u32,
    pub per_account_window_secs: u64,
    pub per_ip_max: u32,
    pub per_ip_window_secs: u64,
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
            per_account_max: 5,
            per_account_window_secs: 900,
            per_ip_max: 20,
            per_ip_window_secs: 900,
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
                && self.per_ip_window_secs > 0,
            "policy: TTLs, windows and max_wrong_codes must be positive"
        );
        Ok(Policy {
            code_ttl: Duration::from_secs(self.code_ttl_secs),
            resend_after: Duration::from_secs(self.resend_after_secs),
            max_resends: self.max_resends,
            max_wrong_codes: self.max_wrong_codes,
            confirm_within: Duration::from_secs(self.confirm_within_secs),
            completed_view: Duration::from_secs(self.completed_view_secs),
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
        let from_file: Settings = figment::Figment::new()
            .merge(<figment::providers::Toml as figment::providers::Format>::string(REFERENCE))
            .extract()
            .unwrap();
        let d = Settings::default();
        assert_eq!(from_file.server.listen_addr, d.server.listen_addr);
        assert_eq!(
            from_file.server.shutdown_grace_secs,
            d.server.shutdown_grace_secs
        );
        assert_eq!(from_file.database.url, d.database.url);
        assert_eq!(
            from_file.database.max_connections,
            d.database.max_connections
        );
        assert_eq!(from_file.code_hmac_key_file, d.code_hmac_key_file);
        assert_eq!(from_file.keystore.endpoint, d.keystore.endpoint);
        assert_eq!(from_file.keystore.timeout_ms, d.keystore.timeout_ms);
        assert_eq!(from_file.notifier.endpoint, d.notifier.endpoint);
        assert_eq!(from_file.password, d.password);
        assert_eq!(
            from_file.policy.policy().unwrap(),
            d.policy.policy().unwrap()
        );
        assert_eq!(from_file.policy.per_ip_max, d.policy.per_ip_max);
        assert_eq!(from_file.policy.per_account_max, d.policy.per_account_max);
        assert_eq!(
            from_file.policy.per_account_window_secs,
            d.policy.per_account_window_secs
        );
        assert_eq!(
            from_file.policy.per_ip_window_secs,
            d.policy.per_ip_window_secs
        );
        assert_eq!(from_file.sweeper.interval_secs, d.sweeper.interval_secs);
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
