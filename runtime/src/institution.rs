//! The institution every page and mail speaks for: configured once for the whole
//! deployment, read the same way by the portal (pages), the notifier (mails) and the
//! keystore (the authenticator entry's issuer), so no service can name another university
//! (a mail that does looks like phishing).
//!
//! Each service's settings have an `[institution]` section of this shape with the same
//! defaults; a deployment writes it once, in a file every service mounts (`file`, e.g. one
//! Kubernetes ConfigMap), which then replaces whatever the section says.

use std::path::PathBuf;

use serde::Deserialize;

/// A text in both languages kagi speaks.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Localized {
    pub ja: String,
    pub en: String,
}

impl Localized {
    pub fn new(ja: &str, en: &str) -> Self {
        Self {
            ja: ja.into(),
            en: en.into(),
        }
    }

    /// The text in `lang` (`"en"` for English; anything else is Japanese, the default).
    pub fn get(&self, lang: &str) -> &str {
        if lang == "en" { &self.en } else { &self.ja }
    }
}

/// What the institution says about itself, wherever kagi speaks for it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Institution {
    /// A TOML file holding this section (without the `[institution]` header), shared by
    /// every service of the deployment; when set, it replaces the values written here.
    pub file: Option<PathBuf>,
    /// "サンプル大学": the page header, the mails' first line and sender.
    pub name: Localized,
    /// Bracketed before every mail subject (`[サンプル大学]`).
    pub short_name: Localized,
    /// "二要素認証管理システム": the system's name, after the institution's.
    pub system_name: Localized,
    /// The department running the system: the pages' footer (©) and the mails' signature.
    pub department: Localized,
    /// What the account ID is called (e.g. OMUID).
    pub account_id_label: Localized,
    /// "トラブル・問い合わせ" / the IT help desk the mails link to.
    pub helpdesk_url: String,
    /// "マニュアル".
    pub manual_url: String,
    /// The onboarding guide ("利用開始手続き"), for how to register a setup key.
    pub onboarding_url: String,
    /// IANA time zone every time on a page or in a mail is shown in, with its abbreviation.
    pub time_zone: String,
    /// The issuer of new setup keys in authenticator apps (`otpauth://totp/ISSUER:ID`), e.g.
    /// the institution's short name or, for Apple's `apple-otpauth` autofill, the SSO's
    /// domain. Keys keep the issuer they were issued with.
    pub otpauth_issuer: String,
}

impl Default for Institution {
    fn default() -> Self {
        Self {
            file: None,
            name: Localized::new("サンプル大学", "Example University"),
            short_name: Localized::new("サンプル大学", "Example Univ."),
            system_name: Localized::new(
                "二要素認証管理システム",
                "Two-factor authentication manager",
            ),
            department: Localized::new(
                "サンプル大学 情報基盤センター",
                "Example University Information Technology Center",
            ),
            account_id_label: Localized::new("ID", "ID"),
            helpdesk_url: "https://www.example.ac.jp/it/2fa-trouble/".into(),
            manual_url: "https://www.example.ac.jp/it/2fa-manual.pdf".into(),
            onboarding_url: "https://www.example.ac.jp/it/2fa/".into(),
            time_zone: "Asia/Tokyo".into(),
            otpauth_issuer: "Example University".into(),
        }
    }
}

impl Institution {
    /// The institution as configured: the shared `file` when one is set, else this section;
    /// checked (a known time zone, an issuer an otpauth label can carry).
    ///
    /// # Errors
    /// An unreadable or invalid file, an unknown time zone, an empty or `:`-bearing issuer.
    pub fn resolve(&self) -> anyhow::Result<Self> {
        let resolved = match &self.file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                let shared: Self = figment::Figment::from(
                    <figment::providers::Toml as figment::providers::Format>::string(&text),
                )
                .extract()
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                anyhow::ensure!(
                    shared.file.is_none(),
                    "{}: the shared institution file cannot name another",
                    path.display()
                );
                shared
            }
            None => self.clone(),
        };
        resolved.time_zone.parse::<chrono_tz::Tz>().map_err(|_| {
            anyhow::anyhow!("institution.time_zone {:?} is unknown", resolved.time_zone)
        })?;
        anyhow::ensure!(
            !resolved.otpauth_issuer.is_empty() && !resolved.otpauth_issuer.contains(':'),
            "institution.otpauth_issuer must be non-empty and free of ':'"
        );
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_file_replaces_the_section() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("institution.toml");
        std::fs::write(
            &path,
            "otpauth_issuer = \"OMU\"\n[name]\nja = \"大阪公立大学\"\nen = \"Osaka Metropolitan University\"\n",
        )
        .unwrap();
        let section = Institution {
            file: Some(path),
            ..Institution::default()
        };
        let resolved = section.resolve().unwrap();
        assert_eq!(resolved.name.get("ja"), "大阪公立大学");
        assert_eq!(resolved.otpauth_issuer, "OMU");
        assert_eq!(resolved.time_zone, "Asia/Tokyo", "defaults fill the rest");
    }

    #[test]
    fn an_unknown_zone_or_a_bad_issuer_is_refused() {
        let zone = Institution {
            time_zone: "Asia/Osaka".into(),
            ..Institution::default()
        };
        assert!(zone.resolve().is_err());
        let issuer = Institution {
            otpauth_issuer: "a:b".into(),
            ..Institution::default()
        };
        assert!(issuer.resolve().is_err());
    }
}
