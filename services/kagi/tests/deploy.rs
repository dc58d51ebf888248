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
    assert_eq!(settings.metrics.listen_addr.map(|a| a.port()), Some(9051));
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
    assert_eq!(settings.metrics.listen_addr.map(|a| a.port()), Some(9053));
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
    assert_eq!(settings.metrics.listen_addr.map(|a| a.port()), Some(9052));
    assert_eq!(settings.keystore.endpoint, "http://kagi-keystore:50051");
    assert_eq!(settings.notifier.endpoint, "http://kagi-notifier:50053");
}

// deploy/monitoring: the alerts, their unit tests, the dashboard and the ServiceMonitors.

fn monitoring(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/monitoring")
        .join(file)
}

fn promtool(args: &[&str]) {
    let out = std::process::Command::new(kagi_testkit::metrics::promtool())
        .args(args)
        .current_dir(monitoring(""))
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "alerts.rules.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The PrometheusRule is the plain rules file's groups under `spec:`, indented by two.
#[test]
fn the_prometheus_rule_holds_exactly_the_plain_rules() {
    let plain = std::fs::read_to_string(monitoring("alerts.rules.yml")).unwrap();
    let operator = std::fs::read_to_string(monitoring("prometheusrule.yaml")).unwrap();
    let groups = |text: &str, header: &str| -> String {
        let at = text.find(header).unwrap_or_else(|| panic!("no {header:?}"));
        text[at + header.len()..]
            .lines()
            .map(|l| l.strip_prefix("  ").unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let from_plain: String = plain[plain.find("groups:\n").unwrap() + "groups:\n".len()..]
        .lines()
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        groups(&operator, "  groups:\n"),
        from_plain,
        "regenerate prometheusrule.yaml from alerts.rules.yml"
    );
    assert!(operator.contains("kind: PrometheusRule"));
}

#[test]
fn every_service_has_a_service_monitor_on_its_metrics_port() {
    let monitors = std::fs::read_to_string(monitoring("servicemonitors.yaml")).unwrap();
    for service in ["keystore", "reset", "notifier", "portal"] {
        assert!(
            monitors.contains(&format!("app.kubernetes.io/name: kagi-{service} }}")),
            "{service}"
        );
    }
    assert_eq!(monitors.matches("kind: ServiceMonitor").count(), 4);
    // Kubernetes' service-link variables (KAGI_KEYSTORE_PORT=tcp://…) share the settings'
    // prefix, and settings refuse unknown keys: the pods must not get them.
    for (manifest, port) in [
        ("keystore.yaml", 9051),
        ("reset.yaml", 9052),
        ("notifier.yaml", 9053),
    ] {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/kubernetes")
                .join(manifest),
        )
        .unwrap();
        assert!(
            text.contains(&format!(
                "- {{ name: metrics, port: {port}, targetPort: metrics }}"
            )),
            "{manifest} exposes no metrics port on its Service"
        );
        assert!(text.contains("enableServiceLinks: false"), "{manifest}");
    }
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_per_panel() {
    let text = std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let titles: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for section in ["Login path", "Reset flow", "Mail queue"] {
        assert!(titles.iter().any(|t| t.starts_with(section)), "{titles:?}");
    }
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            targets
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| !e.is_empty())),
            "{}",
            panel["title"]
        );
    }
}
