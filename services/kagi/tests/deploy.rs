//! The Kubernetes manifests in `deploy/` carry each service's settings as TOML; a typo there
//! would only surface at rollout. Each embedded file must load into its service's settings
//! and pass the same checks the service makes at start.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use kagi_runtime::cli::ServiceSettings as _;

/// The TOML block under `<file>: |` in a manifest's ConfigMap.
fn embedded_toml(manifest: &str, file: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/kubernetes")
            .join(manifest),
    )
    .unwrap();
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != format!("{file}: |"));
    lines
        .next()
        .unwrap_or_else(|| panic!("{manifest} has no {file}"));
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_temp(toml: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, toml.as_bytes()).unwrap();
    file
}

#[test]
fn the_keystore_manifest_settings_load() {
    let file = write_temp(&embedded_toml("keystore.yaml", "keystore.toml"));
    let settings =
        kagi_keystore::Settings::load(Some(file.path())).expect("keystore.toml in keystore.yaml");
    assert_eq!(settings.server.listen_addr.port(), 50051);
    assert_eq!(
        settings.auth.tokens_dir.as_deref(),
        Some(Path::new("/etc/kagi/callers"))
    );
    assert_eq!(
        settings.kek.keys_dir.as_deref(),
        Some(Path::new("/etc/kagi/kek"))
    );
    assert!(!settings.campus_networks.is_empty());
    settings.totp.params().unwrap();
    settings.lockout.policy().unwrap();
}

#[test]
fn the_notifier_manifest_settings_load() {
    let file = write_temp(&embedded_toml("notifier.yaml", "notifier.toml"));
    let settings: kagi_notifier::Settings =
        kagi_runtime::settings::load(Some(file.path()), "KAGI_NOTIFIER_TEST_UNUSED_")
            .expect("notifier.toml");
    assert_eq!(settings.server.listen_addr.port(), 50053);
    assert_eq!(
        settings.transport.kind,
        kagi_notifier::config::TransportKind::Smtp
    );
    assert_eq!(settings.transport.smtp.port, 587);
    // The pods' root filesystem is read-only: the payload key must come from the Secret,
    // the one every replica mounts, never be generated per pod.
    assert_eq!(
        settings.sealing.key_file,
        Path::new("/etc/kagi/payload-key/key")
    );
    let manifest = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes/notifier.yaml"),
    )
    .unwrap();
    assert!(manifest.contains("mountPath: /etc/kagi/payload-key"));
    assert!(manifest.contains("secretName: kagi-notifier-payload-key"));
}

#[test]
fn the_reset_manifest_settings_load() {
    let file = write_temp(&embedded_toml("reset.yaml", "reset.toml"));
    let settings: kagi_reset::Settings =
        kagi_runtime::settings::load(Some(file.path()), "KAGI_RESET_TEST_UNUSED_")
            .expect("reset.toml");
    assert_eq!(settings.server.listen_addr.port(), 50052);
    assert_eq!(settings.keystore.endpoint, "http://kagi-keystore:50051");
    assert_eq!(settings.notifier.endpoint, "http://kagi-notifier:50053");
}
