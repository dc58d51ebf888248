//! The keystore's settings: defaults, then a TOML file, then `KAGI_KEYSTORE_*` variables.
//! `keystore.toml` beside this crate documents every knob and is shown by `--help`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use data_encoding::BASE64;
use ipnet::IpNet;
use kagi_runtime::cli::ServiceSettings;
use kagi_runtime::{
    AuthSettings, DatabaseSettings, MetricsSettings, ServerSettings, TelemetrySettings,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::crypto::Keyring;
use crate::domain::{
    AuthenticatorCheck, CampusNetworks, CheckLimit, KeyParams, LockoutPolicy, TotpVerifier,
};

/// Every knob with its default, shown by `--help`.
pub const REFERENCE: &str = include_str!("../keystore.toml");

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "KAGI_KEYSTORE_";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub campus_networks: Vec<IpNet>,
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub auth: AuthSettings,
    pub metrics: MetricsSettings,
    pub kek: KekSettings,
    pub totp: TotpSettings,
    pub lockout: LockoutSettings,
    pub rotation: RotationSettings,
    /// "Check my authenticator" (CheckAuthenticator): its window and allowance.
    pub check: CheckSettings,
    /// How long the audit trail is kept.
    pub audit: AuditSettings,
    /// The institution: its `otpauth_issuer` names new keys in authenticator apps. The same
    /// section (or shared file) as the portal's and the notifier's.
    pub institution: kagi_runtime::Institution,
}

impl ServiceSettings for Settings {
    const PROGRAM: &'static str = "kagi-keystore";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KekSettings {
    pub active: Option<String>,
    pub keys: BTreeMap<String, SecretString>,
    pub keys_dir: Option<PathBuf>,
}

impl KekSettings {
    /// Loads every configured KEK.
    ///
    /// # Errors
    /// No KEK at all, an unreadable directory, bad base64 or a key of the wrong size.
    pub fn keyring(&self) -> anyhow::Result<Keyring> {
        let mut encoded: BTreeMap<String, SecretString> = self.keys.clone();
        if let Some(dir) = &self.keys_dir {
            for entry in std::fs::read_dir(dir)
                .with_context(|| format!("reading KEKs from {}", dir.display()))?
            {
                let path = entry?.path();
                let Some(id) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                    continue;
                };
                if id.starts_with('.') || !path.is_file() {
                    continue;
                }
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                encoded.insert(id, SecretString::from(text.trim().to_owned()));
            }
        }
        let mut keys = BTreeMap::new();
        for (id, b64) in &encoded {
            let bytes = BASE64
                .decode(b64.expose_secret().trim().as_bytes())
                .map_err(|_| anyhow::anyhow!("key-encryption key {id:?} is not valid base64"))?;
            keys.insert(id.clone(), Zeroizing::new(bytes));
        }
        let active = match (&self.active, keys.len()) {
            (Some(active), _) => active.clone(),
            (None, 1) => keys.keys().next().cloned().unwrap_or_default(),
            (None, 0) => {
                anyhow::bail!("no key-encryption key configured: set kek.keys or kek.keys_dir")
            }
            (None, _) => anyhow::bail!("several key-encryption keys loaded: set kek.active"),
        };
        Ok(Keyring::new(&active, keys)?)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TotpSettings {
    /// The otpauth issuer of keys issued before each key recorded its own; new keys get
    /// `institution.otpauth_issuer`.
    pub issuer: String,
    pub algorithm: String,
    pub digits: u32,
    pub period: u32,
    pub skew_steps: u32,
}

impl Default for TotpSettings {
    fn default() -> Self {
        Self {
            issuer: "kagi".into(),
            algorithm: "SHA1".into(),
            digits: 6,
            period: 30,
            skew_steps: 1,
        }
    }
}

impl TotpSettings {
    /// # Errors
    /// An unknown algorithm, digits outside 6–8, a period outside 15–300 s, skew over 10,
    /// or an issuer containing `:`.
    pub fn params(&self) -> anyhow::Result<KeyParams> {
        anyhow::ensure!(
            !self.issuer.is_empty() && !self.issuer.contains(':'),
            "totp.issuer must be non-empty and free of ':'"
        );
        let algorithm = self
            .algorithm
            .parse()
            .map_err(|e: String| anyhow::anyhow!("totp.algorithm: {e}"))?;
        KeyParams {
            algorithm,
            digits: self.digits,
            period: self.period,
        }
        .validate()
        .map_err(|e| anyhow::anyhow!("totp: {e}"))
    }

    /// # Errors
    /// A skew over 10 steps, which would make codes guessable.
    pub fn verifier(&self) -> anyhow::Result<TotpVerifier> {
        anyhow::ensure!(self.skew_steps <= 10, "totp.skew_steps must be at most 10");
        Ok(TotpVerifier {
            skew: self.skew_steps,
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LockoutSettings {
    pub max_failures: u32,
    pub lock_secs: u64,
    pub max_lock_secs: u64,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        let policy = LockoutPolicy::default();
        Self {
            max_failures: policy.max_failures,
            lock_secs: policy.base.as_secs(),
            max_lock_secs: policy.max.as_secs(),
        }
    }
}

impl LockoutSettings {
    /// # Errors
    /// Zero failures allowed, or a zero lock time.
    pub fn policy(&self) -> anyhow::Result<LockoutPolicy> {
        anyhow::ensure!(
            self.max_failures > 0 && self.lock_secs > 0,
            "lockout.max_failures and lockout.lock_secs must be positive"
        );
        Ok(LockoutPolicy {
            max_failures: self.max_failures,
            base: Duration::from_secs(self.lock_secs),
            max: Duration::from_secs(self.max_lock_secs.max(self.lock_secs)),
        })
    }
}

/// RotateKey retries: the reset service repeats a rotation (same idempotency key) to show
/// the new key again while its confirmation page is open; after that a retry is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RotationSettings {
    /// The reset service's confirm/completed view window (10 minutes by default).
    pub replay_window_secs: u64,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            replay_window_secs: 600,
        }
    }
}

impl RotationSettings {
    pub fn replay_window(&self) -> Duration {
        Duration::from_secs(self.replay_window_secs)
    }
}

/// The audit trail's retention.
///
/// Why 400 days by default: the trail answers "who saw, rotated or tried this account's key,
/// and when" for incidents found late (a compromised account noticed at the end of a
/// semester, a complaint after the academic year) and for the yearly audit, which compares
/// with the same weeks a year before: a year plus a month's margin. It holds no secret and no
/// address, only account IDs, callers and trace IDs, so it may outlive the 30 days the reset
/// service and notifier keep personal data. Growth is about 200 bytes per login
/// (BENCHMARKS.md, issue 16 item 3).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    /// Events older than this many days are deleted, hourly; 0 keeps them forever.
    pub retention_days: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            retention_days: 400,
        }
    }
}

impl AuditSettings {
    /// `None` when events are kept forever.
    pub fn retention(&self) -> Option<Duration> {
        (self.retention_days > 0)
            .then(|| Duration::from_secs(self.retention_days.saturating_mul(86_400)))
    }
}

/// "Check my authenticator": how far from now a code still says "your clock is off"
/// rather than "another key", and how many checks an account gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckSettings {
    /// ± this many seconds around now (15 minutes by default).
    pub diagnosis_window_secs: u64,
    /// Checks per account per `limit_window_secs`.
    pub max_per_account: u32,
    pub limit_window_secs: u64,
}

impl Default for CheckSettings {
    fn default() -> Self {
        let limit = CheckLimit::default();
        Self {
            diagnosis_window_secs: 900,
            max_per_account: limit.max,
            limit_window_secs: limit.window.as_secs(),
        }
    }
}

impl CheckSettings {
    /// The check's windows (the login's from `verifier`) and allowance.
    ///
    /// # Errors
    /// A diagnosis window outside 1–60 minutes, an allowance outside 1–100 checks, or a
    /// limit window outside 1 minute–1 day: a wider window or more checks would turn the
    /// diagnosis into a code oracle.
    pub fn policy(
        &self,
        verifier: &TotpVerifier,
    ) -> anyhow::Result<(AuthenticatorCheck, CheckLimit)> {
        anyhow::ensure!(
            (60..=3600).contains(&self.diagnosis_window_secs),
            "check.diagnosis_window_secs must be 60 to 3600"
        );
        anyhow::ensure!(
            (1..=100).contains(&self.max_per_account),
            "check.max_per_account must be 1 to 100"
        );
        anyhow::ensure!(
            (60..=86_400).contains(&self.limit_window_secs),
            "check.limit_window_secs must be 60 to 86400"
        );
        Ok((
            AuthenticatorCheck {
                login_skew: verifier.skew,
                window: Duration::from_secs(self.diagnosis_window_secs),
            },
            CheckLimit {
                max: self.max_per_account,
                window: Duration::from_secs(self.limit_window_secs),
            },
        ))
    }
}

impl Settings {
    pub fn campus(&self) -> CampusNetworks {
        CampusNetworks::new(self.campus_networks.clone())
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
    fn the_check_window_and_allowance_are_held_to_their_bounds() {
        let verifier = TotpVerifier { skew: 1 };
        let (check, limit) = CheckSettings::default().policy(&verifier).unwrap();
        assert_eq!(check.window, Duration::from_secs(900));
        assert_eq!((limit.max, limit.window), (5, Duration::from_secs(3600)));
        for bad in [
            CheckSettings {
                diagnosis_window_secs: 7200,
                ..CheckSettings::default()
            },
            CheckSettings {
                max_per_account: 0,
                ..CheckSettings::default()
            },
            CheckSettings {
                max_per_account: 1000,
                ..CheckSettings::default()
            },
            CheckSettings {
                limit_window_secs: 1,
                ..CheckSettings::default()
            },
        ] {
            assert!(bad.policy(&verifier).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_single_kek_is_active_without_naming_it() {
        let mut kek = KekSettings::default();
        kek.keys
            .insert("k1".into(), SecretString::from(BASE64.encode(&[7_u8; 32])));
        assert_eq!(kek.keyring().unwrap().active_id(), "k1");
        kek.keys
            .insert("k2".into(), SecretString::from(BASE64.encode(&[8_u8; 32])));
        assert!(kek.keyring().is_err(), "two keys need kek.active");
    }
}
