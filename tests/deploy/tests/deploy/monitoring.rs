//! `deploy/monitoring`: the alerts and their unit tests (promtool), the PrometheusRule kept
//! equal to the plain rules, the Grafana dashboard, and a ServiceMonitor per service that
//! finds a `metrics` port on the rendered base's Service, where the service really serves
//! `/metrics` (`[metrics] listen_addr` in its TOML), and the kubelet's probes on that port.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::manifests::{OVERLAYS, deploy_dir, objects, pod_spec, run, yaml_documents};

const SERVICES: [&str; 4] = ["keystore", "reset", "notifier", "portal"];

fn monitoring(file: &str) -> PathBuf {
    deploy_dir().join("monitoring").join(file)
}

fn promtool(args: &[&str]) {
    run(Command::new(kagi_testkit::metrics::promtool())
        .args(args)
        .current_dir(monitoring("")));
}

#[test]
fn the_alert_rules_are_valid_and_their_unit_tests_pass() {
    promtool(&["check", "rules", "alerts.rules.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The PrometheusRule is the plain rules file's groups under `spec:`.
#[test]
fn the_prometheus_rule_holds_exactly_the_plain_rules() {
    let plain =
        &yaml_documents(&std::fs::read_to_string(monitoring("alerts.rules.yml")).unwrap())[0];
    let operator =
        &yaml_documents(&std::fs::read_to_string(monitoring("prometheusrule.yaml")).unwrap())[0];
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(
        operator["spec"]["groups"], plain["groups"],
        "regenerate prometheusrule.yaml from alerts.rules.yml"
    );
}

#[test]
fn every_service_has_a_service_monitor_on_its_metrics_port() {
    let monitors =
        yaml_documents(&std::fs::read_to_string(monitoring("servicemonitors.yaml")).unwrap());
    assert_eq!(monitors.len(), SERVICES.len());
    for overlay in OVERLAYS {
        let objects = objects(overlay);
        for service in SERVICES {
            let what = format!("{overlay} {service}");
            let monitor = monitors
                .iter()
                .find(|m| m["metadata"]["name"] == format!("kagi-{service}"))
                .unwrap_or_else(|| panic!("{what}: no ServiceMonitor"));
            assert_eq!(monitor["kind"], "ServiceMonitor");
            let wanted = monitor["spec"]["selector"]["matchLabels"]
                .as_object()
                .unwrap();
            let port = monitor["spec"]["endpoints"][0]["port"].as_str().unwrap();
            // The Services it selects, and among them the one it scrapes: exactly one.
            let scraped: Vec<&Value> = objects
                .iter()
                .filter(|o| o["kind"] == "Service")
                .filter(|o| {
                    wanted
                        .iter()
                        .all(|(k, v)| &o["metadata"]["labels"][k.as_str()] == v)
                })
                .filter(|o| {
                    o["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == port)
                })
                .collect();
            assert_eq!(scraped.len(), 1, "{what}: {scraped:?}");
            let target = scraped[0]["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == port)
                .unwrap()["targetPort"]
                .clone();
            // The named target port is the container's, on the address the TOML serves.
            let deployment = objects
                .iter()
                .find(|o| {
                    o["kind"] == "Deployment" && o["metadata"]["name"] == format!("kagi-{service}")
                })
                .unwrap();
            let spec = pod_spec(deployment);
            let container_port = spec["containers"][0]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == target)
                .unwrap_or_else(|| panic!("{what}: no container port {target}"));
            let listen = crate::settings::loaded(overlay, service)["metrics"].clone();
            assert_eq!(
                listen,
                format!("0.0.0.0:{}", container_port["containerPort"]),
                "{what}"
            );
            // Kubernetes' service-link variables (KAGI_KEYSTORE_PORT=tcp://…) share the
            // settings' prefix, and settings refuse unknown keys: the pods must not get them.
            assert_eq!(spec["enableServiceLinks"], false, "{what}");
        }
        for workload in objects.iter().filter(|o| o["kind"] == "CronJob") {
            assert_eq!(pod_spec(workload)["enableServiceLinks"], false);
        }
    }
}

/// The kubelet cannot speak the gRPC ports' mTLS, so it asks the plain-HTTP metrics port:
/// readiness is `/readyz` there (503 while the database is down), and the port it names is
/// the container port the service's TOML really serves metrics on.
#[test]
fn the_kubelet_probes_readiness_on_the_metrics_port_the_service_serves() {
    for overlay in OVERLAYS {
        let objects = objects(overlay);
        for service in SERVICES {
            let what = format!("{overlay} {service}");
            let deployment = objects
                .iter()
                .find(|o| {
                    o["kind"] == "Deployment" && o["metadata"]["name"] == format!("kagi-{service}")
                })
                .unwrap();
            let container = &pod_spec(deployment)["containers"][0];
            let http_get = |probe: &str| container[probe]["httpGet"].clone();
            assert_eq!(
                http_get("readinessProbe"),
                serde_json::json!({ "path": "/readyz", "port": "metrics" }),
                "{what}"
            );
            let (live, live_port) = if service == "portal" {
                ("/healthz", "http") // the page server itself
            } else {
                ("/livez", "metrics")
            };
            for probe in ["startupProbe", "livenessProbe"] {
                assert_eq!(
                    http_get(probe),
                    serde_json::json!({ "path": live, "port": live_port }),
                    "{what} {probe}"
                );
            }
            let metrics_port = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == "metrics")
                .unwrap_or_else(|| panic!("{what}: no metrics port"));
            assert_eq!(
                crate::settings::loaded(overlay, service)["metrics"],
                format!("0.0.0.0:{}", metrics_port["containerPort"]),
                "{what}: /readyz is served where the TOML puts the metrics listener"
            );
        }
    }
}

#[test]
fn the_dashboard_is_grafana_json_with_a_query_per_panel() {
    let text = std::fs::read_to_string(monitoring("grafana-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
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
