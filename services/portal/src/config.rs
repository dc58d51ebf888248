//! The portal's settings: defaults, then a TOML file, then `KAGI_PORTAL_*` variables.
//! `portal.toml` beside this crate documents every knob and is shown by `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use kagi_runtime::cli::ServiceSettings;
use kagi_runtime::{
    ClientSettings, DatabaseSettings, Institution, MetricsSettings, TelemetrySettings,
};
use serde::Deserialize;

/// Every knob with its default, shown by `--help`.
pub const REFERENCE: &str = include_str!("../portal.toml");

/// Prefix of the environment variables that override the file.
pub const ENV_PREFIX: &str = "KAGI_PORTAL_";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub telemetry: TelemetrySettings,
    pub metrics: MetricsSettings,
    pub keystore: ClientSettings,
    pub reset: ClientSettings,
    pub login: LoginSettings,
    pub session: SessionSettings,
    /// The help desk's console, `/helpdesk`: who is an operator, and the admin services.
    pub helpdesk: HelpdeskSettings,
    /// The institution the pages name, the same section (or shared file) as the notifier's
    /// and the keystore's.
    pub institution: Institution,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::default(),
            database: DatabaseSettings::default(),
            telemetry: TelemetrySettings::default(),
            metrics: MetricsSettings::default(),
            keystore: ClientSettings::at("http://127.0.0.1:50051"),
            reset: ClientSettings::at("http://127.0.0.1:50052"),
            login: LoginSettings::default(),
            session: SessionSettings::default(),
            helpdesk: HelpdeskSettings::default(),
            institution: Institution::default(),
        }
    }
}

impl ServiceSettings for Settings {
    const PROGRAM: &'static str = "kagi-portal";
    const ENV_PREFIX: &'static str = ENV_PREFIX;

    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address users type, e.g. `https://mfa.example.ac.jp`. An `https` URL makes the
    /// session cookie `Secure` and every response carry `Strict-Transport-Security` (TLS is
    /// terminated by the proxy in front of the portal).
    pub public_url: String,
    /// Requests still running this long after SIGTERM are abandoned.
    pub shutdown_grace_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            shutdown_grace_secs: 10,
        }
    }
}

impl ServerSettings {
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// How users log in.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMode {
    /// ID + password form, checked by `kagi.v1.Directory/Authenticate`.
    #[default]
    Local,
    /// The SSO proxy in front of the portal authenticates `/login` and passes the account
    /// ID in `header`; only requests from `trusted_proxies` are believed.
    TrustedHeader,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginSettings {
    pub mode: LoginMode,
    /// The header carrying the authenticated account ID (trusted-header mode).
    pub header: String,
    /// Networks the SSO proxy connects from; the header (and `X-Forwarded-For`) from any
    /// other peer is ignored. `X-Forwarded-For` is read from the right, skipping these
    /// networks: the first other address is the client.
    pub trusted_proxies: Vec<IpNet>,
    /// Trusted-header mode: a file holding a secret the proxy sends in
    /// `proxy_secret_header` on every request; when set, the identity header is believed
    /// only alongside it (so another host inside `trusted_proxies` cannot log anyone in).
    pub proxy_secret_file: Option<PathBuf>,
    /// The header carrying that secret.
    pub proxy_secret_header: String,
    /// Trusted-header mode: the header in which the SSO says how the user authenticated
    /// (SAML `AuthnContextClassRef`, OIDC `acr`, e.g. `x-kagi-authn-context`); empty for
    /// none. When set, `/login` makes a session only when this header (from a trusted
    /// proxy, exactly once) holds one of `authn_context_values`: a login by password
    /// alone never reaches the setup key. Unset, the SSO must itself ask for the one-time
    /// password wherever `CheckLoginPolicy` would.
    pub authn_context_header: String,
    /// The values of `authn_context_header` that prove the one-time-password step.
    pub authn_context_values: Vec<String>,
    /// Where "ログアウト" sends the browser after ending the portal session (the SSO's
    /// logout page, trusted-header mode); empty for the top page.
    pub logout_url: String,
    /// Failed logins allowed per account ID and per client address in a window; the next
    /// login is refused until the window ends. Successful logins are not counted.
    pub per_account_max: u32,
    pub per_ip_max: u32,
    pub window_secs: u64,
}

impl Default for LoginSettings {
    fn default() -> Self {
        Self {
            mode: LoginMode::Local,
            header: "x-remote-user".into(),
            trusted_proxies: Vec::new(),
            proxy_secret_file: None,
            proxy_secret_header: "x-kagi-proxy-secret".into(),
            authn_context_header: String::new(),
            authn_context_values: Vec::new(),
            logout_url: String::new(),
            per_account_max: 10,
            per_ip_max: 50,
            window_secs: 900,
        }
    }
}

impl LoginSettings {
    /// Whether `value` (the SSO's authentication-context header) proves the OTP step.
    pub fn proves_otp(&self, value: &str) -> bool {
        let value = value.trim();
        !value.is_empty() && self.authn_context_values.iter().any(|v| v == value)
    }

    /// The OTP-proving header of trusted-header mode, when one is required.
    ///
    /// # Errors
    /// A header named with no value that would prove anything (no login could succeed).
    pub fn authn_context(&self) -> anyhow::Result<Option<&str>> {
        if self.authn_context_header.is_empty() {
            return Ok(None);
        }
        anyhow::ensure!(
            !self.authn_context_values.is_empty(),
            "login.authn_context_header is set but login.authn_context_values is empty"
        );
        Ok(Some(self.authn_context_header.as_str()))
    }

    /// The proxy's shared secret from `proxy_secret_file` (trimmed), if one is set.
    ///
    /// # Errors
    /// The file cannot be read, or holds nothing.
    pub fn proxy_secret(&self) -> anyhow::Result<Option<secrecy::SecretString>> {
        let Some(path) = &self.proxy_secret_file else {
            return Ok(None);
        };
        let text = secrecy::zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?,
        );
        let secret = text.trim();
        anyhow::ensure!(!secret.is_empty(), "{} is empty", path.display());
        Ok(Some(secret.to_owned().into()))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// A session unused this long is over (the user logs in again).
    pub idle_timeout_secs: u64,
    /// A session this old is over however busy it was (a stolen cookie kept alive by
    /// polling dies with it). Counted from the login, or from the first page of a session
    /// with no login.
    pub absolute_timeout_secs: u64,
    /// Step-up: the setup key (menus 1 and 3) is shown only this soon after the login; an
    /// older login is asked to log in again first, so a cookie left open on a shared
    /// computer does not show the key to the next person.
    pub key_view_max_age_secs: u64,
    /// Name of the session cookie; over https (`server.public_url`) it is sent as
    /// `__Host-` + this name.
    pub cookie_name: String,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            idle_timeout_secs: 900,
            absolute_timeout_secs: 8 * 3600,
            key_view_max_age_secs: 300,
            cookie_name: "kagi_session".into(),
        }
    }
}

/// The help desk's console (issue 15). Off until `keystore.endpoint` is set. An operator
/// is a logged-in user in the configured role, checked on every request (strict: no
/// role, no console, whatever the session says):
/// - `login.mode = "local"`: the account is listed in `operators`;
/// - `login.mode = "trusted-header"`: the SSO proxy's `group_header` (from a trusted
///   proxy, exactly once, beside the identity header of the same account) lists one of
///   `group_values` (comma-separated).
///
/// The console calls the admin services as caller `helpdesk`, with credentials of its
/// own (never the user-facing `portal` caller's), and names the operator in each call.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HelpdeskSettings {
    /// Local mode: the account IDs that are operators.
    pub operators: Vec<String>,
    /// Trusted-header mode: the header in which the proxy lists the user's groups.
    pub group_header: String,
    /// Trusted-header mode: the groups that make an operator.
    pub group_values: Vec<String>,
    /// `kagi.v1.KeystoreAdmin` (the keystore), as caller `helpdesk`.
    pub keystore: ClientSettings,
    /// `kagi.v1.ResetAdmin` (the reset service), as caller `helpdesk`.
    pub reset: ClientSettings,
    /// `kagi.v1.NotifierAdmin` (the notifier), as caller `helpdesk`.
    pub notifier: ClientSettings,
}

impl HelpdeskSettings {
    /// Whether the console is on.
    pub fn enabled(&self) -> bool {
        !self.keystore.endpoint.is_empty()
    }

    /// Refuses a role that the login mode would never match, and a console missing one of
    /// its services. A console with no role configured admits nobody (strict).
    ///
    /// # Errors
    /// A role of the other login mode, or a partial set of endpoints.
    pub fn check(&self, mode: LoginMode) -> anyhow::Result<()> {
        if !self.enabled() {
            return Ok(());
        }
        if self.reset.endpoint.is_empty() || self.notifier.endpoint.is_empty() {
            anyhow::bail!("helpdesk: set keystore, reset and notifier endpoints together");
        }
        match mode {
            LoginMode::Local if !self.group_header.is_empty() => {
                anyhow::bail!(
                    "helpdesk.group_header needs login.mode = \"trusted-header\"; list operators instead"
                )
            }
            LoginMode::TrustedHeader if !self.operators.is_empty() => {
                anyhow::bail!(
                    "helpdesk.operators is for login.mode = \"local\"; use group_header and group_values"
                )
            }
            _ => Ok(()),
        }
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
    fn a_helpdesk_role_of_the_other_login_mode_is_refused() {
        let mut h = HelpdeskSettings::default();
        assert!(h.check(LoginMode::Local).is_ok(), "the console is off");
        h.keystore.endpoint = "http://127.0.0.1:1".into();
        assert!(h.check(LoginMode::Local).is_err(), "one endpoint of three");
        h.reset.endpoint = "http://127.0.0.1:2".into();
        h.notifier.endpoint = "http://127.0.0.1:3".into();
        assert!(
            h.check(LoginMode::Local).is_ok(),
            "no role: nobody is an operator"
        );
        h.group_header = "x-kagi-groups".into();
        assert!(h.check(LoginMode::Local).is_err());
        assert!(h.check(LoginMode::TrustedHeader).is_ok());
        h.operators = vec!["ops1".into()];
        assert!(h.check(LoginMode::TrustedHeader).is_err());
    }

    #[test]
    fn no_setting_can_show_the_dev_outbox() {
        let err = kagi_runtime::settings::parse_reference::<Settings>(
            "dev_outbox_dir = \"/var/spool/mail\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("dev_outbox_dir"), "{err}");
    }

    #[test]
    fn trusted_header_mode_is_spelled_as_in_the_issue() {
        let s: Settings = figment::Figment::new()
            .merge(
                <figment::providers::Toml as figment::providers::Format>::string(
                    "[login]\nmode = \"trusted-header\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
                ),
            )
            .extract()
            .unwrap();
        assert_eq!(s.login.mode, LoginMode::TrustedHeader);
    }
}
