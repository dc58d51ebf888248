//! Typed settings from defaults, an optional TOML file and environment variables.
//!
//! Precedence, lowest first: the struct's `Default`, the TOML file, then variables named
//! `<PREFIX><SECTION>__<KEY>` (for example `KAGI_KEYSTORE_DATABASE__URL`). Secrets are
//! best given as files (a Kubernetes Secret mounted as a directory), which each service's
//! settings point at.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

/// Loads `T` from its defaults, `file` (when given) and the environment under `env_prefix`.
///
/// # Errors
/// A missing or malformed file, or a value of the wrong type; the error names the key
/// and where it came from.
pub fn load<T: DeserializeOwned>(
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, Box<figment::Error>> {
    let mut figment = Figment::new();
    if let Some(file) = file {
        if !file.exists() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                file.display()
            ))));
        }
        figment = figment.merge(Toml::file(file));
    }
    figment
        // `<PREFIX>CONFIG` names the file itself (read by the command line), not a setting.
        .merge(Env::prefixed(env_prefix).ignore(&["config"]).split("__"))
        .extract()
        .map_err(Box::new)
}

/// Parses a service's shipped reference TOML (the file `--help` prints).
///
/// # Errors
/// Malformed TOML or a key the settings do not have.
pub fn parse_reference<T: DeserializeOwned>(toml: &str) -> Result<T, Box<figment::Error>> {
    Figment::new()
        .merge(Toml::string(toml))
        .extract()
        .map_err(Box::new)
}

/// Checks that a service's shipped reference TOML states exactly its defaults, every field
/// of it (their `Debug` renderings are compared, so a new setting cannot be forgotten).
///
/// # Errors
/// The lines that differ, or why the file does not parse.
pub fn reference_states_defaults<T>(toml: &str) -> Result<(), String>
where
    T: DeserializeOwned + Default + std::fmt::Debug,
{
    let from_file: T = parse_reference(toml).map_err(|e| e.to_string())?;
    let (file, defaults) = (format!("{from_file:#?}"), format!("{:#?}", T::default()));
    let differing: Vec<String> = file
        .lines()
        .zip(defaults.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("file: {}  default: {}", a.trim(), b.trim()))
        .collect();
    if differing.is_empty() && file.lines().count() == defaults.lines().count() {
        Ok(())
    } else {
        Err(differing.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        name: String,
        nested: Nested,
    }

    #[derive(serde::Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Nested {
        port: u16,
    }

    impl Default for Sample {
        fn default() -> Self {
            Self {
                name: "default".into(),
                nested: Nested { port: 1 },
            }
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn file_overrides_defaults_and_env_overrides_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("k.toml", "name = \"from-file\"\n[nested]\nport = 7\n")?;
            let from_file: Sample =
                load(Some(Path::new("k.toml")), "KAGI_T_").map_err(|e| e.to_string())?;
            assert_eq!(
                from_file,
                Sample {
                    name: "from-file".into(),
                    nested: Nested { port: 7 }
                }
            );

            jail.set_env("KAGI_T_NESTED__PORT", "9");
            // The file's own variable is not a setting (Sample refuses unknown keys).
            jail.set_env("KAGI_T_CONFIG", "k.toml");
            let from_env: Sample =
                load(Some(Path::new("k.toml")), "KAGI_T_").map_err(|e| e.to_string())?;
            assert_eq!(from_env.nested.port, 9);
            assert_eq!(from_env.name, "from-file");
            Ok(())
        });
    }

    #[test]
    fn a_reference_file_that_drifted_from_the_defaults_is_caught() {
        assert_eq!(
            reference_states_defaults::<Sample>("name = \"default\"\n[nested]\nport = 1\n"),
            Ok(())
        );
        let drifted =
            reference_states_defaults::<Sample>("name = \"default\"\n[nested]\nport = 2\n")
                .unwrap_err();
        assert!(drifted.contains("port: 2"), "{drifted}");
    }

    /// Every shared section, as each service's settings embed them.
    #[derive(serde::Deserialize, Debug, Default)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)] // only its refusals are looked at
    struct Shared {
        server: crate::ServerSettings,
        telemetry: crate::TelemetrySettings,
        auth: crate::AuthSettings,
        metrics: crate::MetricsSettings,
        database: crate::DatabaseSettings,
        keystore: crate::ClientSettings,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own signature
    fn a_typo_in_any_shared_section_is_refused_naming_the_key_and_its_source() {
        figment::Jail::expect_with(|jail| {
            for (section, typo) in [
                ("server", "listen_adr = \"0.0.0.0:50051\""),
                ("telemetry", "log_fromat = \"pretty\""),
                ("auth", "tokens_dirr = \"/etc/kagi/callers\""),
                ("metrics", "listen_adr = \"0.0.0.0:9051\""),
                ("database", "max_conections = 4"),
                ("keystore", "endpont = \"http://keystore:50051\""),
            ] {
                jail.create_file("k.toml", &format!("[{section}]\n{typo}\n"))?;
                let err = load::<Shared>(Some(Path::new("k.toml")), "KAGI_T_")
                    .expect_err(typo)
                    .to_string();
                let key = typo.split(' ').next().unwrap_or_default();
                assert!(err.contains(key), "{section}: {err}");
                assert!(err.contains("k.toml"), "{section}: {err}");
            }
            jail.create_file("k.toml", "")?;
            jail.set_env("KAGI_T_AUTH__TOKENS_DIRR", "/etc/kagi/callers");
            let err = load::<Shared>(Some(Path::new("k.toml")), "KAGI_T_")
                .expect_err("a typo in a variable")
                .to_string();
            assert!(err.contains("tokens_dirr"), "{err}");
            assert!(err.contains("`KAGI_T_` environment"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_missing_config_file_is_an_error_not_silently_defaults() {
        let err = load::<Sample>(Some(Path::new("/nonexistent/kagi.toml")), "KAGI_T_").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
