//! The kustomize overlays as a platform team meets them: each renders, validates strictly
//! against the Kubernetes 1.30 schemas, keeps pods "restricted", fits its connection budget,
//! names custom resources the way their documentation requires, and passes checkov.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

pub const OVERLAYS: [&str; 2] = ["dev", "production"];

/// The Kubernetes version the manifests must validate against (the oldest supported).
const KUBERNETES: &str = "1.30.0";

pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `kubectl kustomize` of `overlay`, once per test binary; panics with kubectl's message.
pub fn rendered(overlay: &str) -> &'static str {
    static RENDERED: OnceLock<BTreeMap<&'static str, String>> = OnceLock::new();
    let all = RENDERED.get_or_init(|| {
        OVERLAYS
            .iter()
            .map(|o| {
                let dir = deploy_dir().join("kubernetes/overlays").join(o);
                (*o, run(Command::new("kubectl").arg("kustomize").arg(dir)))
            })
            .collect()
    });
    &all[overlay]
}

/// The rendered objects of `overlay`, parsed (PyYAML from the test environment; the
/// workspace has no YAML crate).
pub fn objects(overlay: &str) -> &'static [Value] {
    static PARSED: OnceLock<BTreeMap<&'static str, Vec<Value>>> = OnceLock::new();
    let all = PARSED.get_or_init(|| {
        OVERLAYS
            .iter()
            .map(|o| (*o, yaml_documents(rendered(o))))
            .collect()
    });
    &all[overlay]
}

/// Every document of a YAML stream as JSON.
pub fn yaml_documents(yaml: &str) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, yaml).unwrap();
    let json = run(Command::new(kagi_testkit::peers::python())
        .arg("-c")
        .arg(
            "import sys, json, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1], encoding='utf-8')) if d]\n\
         json.dump(docs, sys.stdout)",
        )
        .arg(&file));
    serde_json::from_str(&json).unwrap()
}

/// Runs `command`, returning stdout; panics with both streams when it fails.
pub fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn kind<'a>(objects: &'a [Value], kind: &str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn named<'a>(objects: &'a [Value], kind_: &str, name: &str) -> &'a Value {
    kind(objects, kind_)
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind_} {name}"))
}

/// The pod template of a workload (Deployment, StatefulSet, CronJob).
pub fn pod_spec(workload: &Value) -> &Value {
    if workload["kind"] == "CronJob" {
        &workload["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    } else {
        &workload["spec"]["template"]["spec"]
    }
}

fn workloads(objects: &[Value]) -> impl Iterator<Item = &Value> {
    objects.iter().filter(|o| {
        ["Deployment", "StatefulSet", "CronJob", "Job", "DaemonSet"]
            .contains(&o["kind"].as_str().unwrap_or(""))
    })
}

fn name(o: &Value) -> String {
    format!(
        "{} {}",
        o["kind"].as_str().unwrap_or("?"),
        o["metadata"]["name"].as_str().unwrap_or("?")
    )
}

#[test]
fn every_overlay_renders_into_one_namespace_with_the_overlays_image() {
    for (overlay, namespace) in [("dev", "kagi-dev"), ("production", "kagi")] {
        let objects = objects(overlay);
        assert!(objects.len() > 30, "{overlay}: {} objects", objects.len());
        for o in objects {
            assert_eq!(
                o["metadata"]["namespace"],
                namespace,
                "{overlay}: {}",
                name(o)
            );
        }
        for w in workloads(objects) {
            let spec = pod_spec(w);
            for c in spec["containers"]
                .as_array()
                .unwrap()
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten())
            {
                let image = c["image"].as_str().unwrap();
                assert_ne!(
                    image,
                    "kagi",
                    "{overlay}: {} keeps the placeholder image",
                    name(w)
                );
                assert!(
                    image.contains(':'),
                    "{overlay}: {} image {image} has no tag",
                    name(w)
                );
            }
        }
    }
}

#[test]
fn every_overlay_validates_strictly_against_kubernetes_1_30() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = OVERLAYS
        .iter()
        .map(|o| {
            let file = dir.path().join(format!("{o}.yaml"));
            std::fs::write(&file, rendered(o)).unwrap();
            file
        })
        .collect();
    let out = Command::new(kagi_testkit::peers::venv_program("kubernetes-validate"))
        .args(["--kubernetes-version", KUBERNETES, "--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    // Only custom resources may go unvalidated, and those this file checks itself.
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.contains("Couldn't find schema")
                && (line.contains("postgresql.cnpg.io/v1")
                    || line.contains("monitoring.coreos.com/v1")
                    || line.contains("cert-manager.io/v1")),
            "{line}"
        );
    }
}

#[test]
fn pods_are_restricted_and_drain_before_they_stop() {
    for overlay in OVERLAYS {
        for w in workloads(objects(overlay)) {
            let what = format!("{overlay}: {}", name(w));
            let spec = pod_spec(w);
            assert_eq!(spec["automountServiceAccountToken"], false, "{what}");
            let pod = &spec["securityContext"];
            assert_eq!(pod["runAsNonRoot"], true, "{what}");
            assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            let kagi = w["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kagi";
            if kagi {
                assert_eq!(pod["runAsUser"], 10001, "{what}");
            }
            let containers = spec["containers"].as_array().unwrap();
            for c in containers
                .iter()
                .chain(spec["initContainers"].as_array().into_iter().flatten())
            {
                let sc = &c["securityContext"];
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{what} {}", c["name"]);
                assert_eq!(
                    sc["allowPrivilegeEscalation"], false,
                    "{what} {}",
                    c["name"]
                );
                assert_eq!(
                    sc["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{what} {}",
                    c["name"]
                );
                assert!(
                    c["resources"]["limits"]["memory"].is_string(),
                    "{what} {}",
                    c["name"]
                );
            }
            if kagi && w["kind"] == "Deployment" {
                let c = &containers[0];
                assert!(c["startupProbe"].is_object(), "{what}");
                assert!(c["readinessProbe"].is_object(), "{what}");
                let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
                    .as_i64()
                    .unwrap();
                let grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
                assert!(
                    pause >= 3 && grace > pause + 20,
                    "{what}: preStop {pause}s, grace {grace}s"
                );
                assert_eq!(spec["initContainers"][0]["name"], "migrate", "{what}");
            }
        }
    }
}

#[test]
fn every_service_has_its_service_account_pdb_hpa_and_a_headless_service() {
    for overlay in OVERLAYS {
        let objects = objects(overlay);
        for service in ["keystore", "reset", "notifier", "portal"] {
            let n = format!("kagi-{service}");
            assert_eq!(
                named(objects, "ServiceAccount", &n)["automountServiceAccountToken"],
                false
            );
            named(objects, "PodDisruptionBudget", &n);
            named(objects, "HorizontalPodAutoscaler", &n);
            named(objects, "Service", &n);
            assert_eq!(
                named(objects, "Service", &format!("{n}-pods"))["spec"]["clusterIP"],
                "None"
            );
            let ports = &named(objects, "Service", &n)["spec"]["ports"];
            assert!(
                ports
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "metrics"),
                "{overlay} {n}"
            );
        }
        let rekey = named(objects, "CronJob", "kagi-rekey");
        assert_eq!(
            rekey["spec"]["suspend"], true,
            "rekey runs only when started by hand"
        );
    }
}

#[test]
fn production_runs_at_least_two_of_everything_on_three_database_instances() {
    let objects = objects("production");
    for d in kind(objects, "Deployment") {
        assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2, "{}", name(d));
    }
    for h in kind(objects, "HorizontalPodAutoscaler") {
        assert!(
            h["spec"]["minReplicas"].as_i64().unwrap() >= 2,
            "{}",
            name(h)
        );
    }
    assert_eq!(named(objects, "Cluster", "kagi-db")["spec"]["instances"], 3);
    let dev = objects_of_kind("dev", "Deployment");
    assert!(
        dev.iter().all(|d| d["spec"]["replicas"] == 1),
        "dev: single replicas"
    );
}

fn objects_of_kind(overlay: &str, k: &str) -> Vec<&'static Value> {
    kind(objects(overlay), k).collect()
}

#[test]
fn network_policies_deny_by_default_and_admit_only_the_architectures_flows() {
    for overlay in OVERLAYS {
        let objects = objects(overlay);
        let deny = named(objects, "NetworkPolicy", "kagi-default-deny");
        assert_eq!(deny["spec"]["podSelector"], serde_json::json!({}));
        assert_eq!(
            deny["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
        // Who may reach each service's port (pod names), from the policies themselves.
        let admitted = |target: &str, port: i64| -> Vec<String> {
            kind(objects, "NetworkPolicy")
                .filter(|p| p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == target)
                .flat_map(|p| p["spec"]["ingress"].as_array().cloned().unwrap_or_default())
                .filter(|rule| rule["ports"].as_array().unwrap().iter().any(|p| p["port"] == port))
                .flat_map(|rule| rule["from"].as_array().cloned().unwrap_or_default())
                .map(|peer| {
                    peer["podSelector"]["matchLabels"]
                        .as_object()
                        .map(|l| l.values().map(|v| v.as_str().unwrap().to_owned()).collect::<Vec<_>>().join(","))
                        .unwrap_or_else(|| format!("namespace {}", peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str().unwrap_or("*")))
                })
                .collect()
        };
        assert_eq!(
            admitted("kagi-keystore", 50051),
            ["kagi-portal", "kagi-reset", "true"],
            "{overlay}"
        );
        assert_eq!(admitted("kagi-reset", 50052), ["kagi-portal"], "{overlay}");
        assert_eq!(
            admitted("kagi-notifier", 50053),
            ["kagi-reset"],
            "{overlay}"
        );
        assert_eq!(
            admitted("kagi-portal", 8080),
            ["namespace ingress-nginx"],
            "{overlay}"
        );
    }
}

/// `max_connections` × the most pods a rollout can run, for every service, plus the rekey
/// Job, must fit what the database side admits: the pooler's server pool (production) or
/// PostgreSQL's default 100 connections (dev).
#[test]
fn the_connection_budget_fits_the_pooler_and_the_database() {
    for overlay in OVERLAYS {
        let objects = objects(overlay);
        let mut budget = 0;
        let mut lines = Vec::new();
        for service in ["keystore", "reset", "notifier", "portal"] {
            let n = format!("kagi-{service}");
            let max = crate::settings::loaded(overlay, service)["max_connections"]
                .as_i64()
                .unwrap();
            let hpa = named(objects, "HorizontalPodAutoscaler", &n)["spec"]["maxReplicas"]
                .as_i64()
                .unwrap();
            let surge =
                named(objects, "Deployment", &n)["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
                    .as_i64()
                    .unwrap();
            budget += max * (hpa + surge);
            lines.push(format!("{service}: {max} × ({hpa} + {surge})"));
        }
        let rekey = named(objects, "CronJob", "kagi-rekey");
        let rekey_max: i64 = pod_spec(rekey)["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "KAGI_KEYSTORE_DATABASE__MAX_CONNECTIONS")
            .map(|e| e["value"].as_str().unwrap().parse().unwrap())
            .expect("the rekey Job's pool is bounded");
        budget += rekey_max;
        let admitted = match kind(objects, "Pooler").next() {
            Some(pooler) => {
                let params = &pooler["spec"]["pgbouncer"]["parameters"];
                let pool: i64 = params["default_pool_size"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let clients: i64 = params["max_client_conn"].as_str().unwrap().parse().unwrap();
                assert!(
                    clients >= budget,
                    "{overlay}: max_client_conn {clients} < {budget}"
                );
                let cluster = named(
                    objects,
                    "Cluster",
                    pooler["spec"]["cluster"]["name"].as_str().unwrap(),
                );
                let pg = &cluster["spec"]["postgresql"]["parameters"];
                let max_conn: i64 = pg["max_connections"].as_str().unwrap().parse().unwrap();
                let reserved: i64 = pg["superuser_reserved_connections"]
                    .as_str()
                    .unwrap_or("3")
                    .parse()
                    .unwrap();
                // Every pooler instance may open its own pool; replication and the operator
                // need a few more.
                let instances = pooler["spec"]["instances"].as_i64().unwrap_or(1);
                assert!(
                    pool * instances <= max_conn - reserved - 10 || instances == 1,
                    "{overlay}: {instances} poolers × {pool} exceed max_connections {max_conn}"
                );
                pool
            }
            None => 100,
        };
        assert!(
            budget <= admitted,
            "{overlay}: {budget} > {admitted}: {lines:?}"
        );
    }
}

/// Fields the CloudNativePG and Prometheus Operator documentation requires (their API
/// references: `Cluster.spec.instances`, storage size, `Pooler.spec.cluster.name` and
/// `pgbouncer`, `ScheduledBackup.spec.schedule` with seconds, `ServiceMonitor.spec.selector`
/// and endpoints with a port), checked here as no offline schema covers them.
#[test]
fn custom_resources_carry_the_fields_their_documentation_requires() {
    let mut objects: Vec<Value> = objects("production").to_vec();
    objects.extend(objects_of_monitoring());
    let clusters: Vec<&Value> = kind(&objects, "Cluster").collect();
    assert!(!clusters.is_empty());
    for c in &clusters {
        assert_eq!(c["apiVersion"], "postgresql.cnpg.io/v1");
        let spec = &c["spec"];
        assert!(
            spec["instances"].as_i64().is_some_and(|n| n >= 1),
            "{}",
            name(c)
        );
        assert!(
            spec["storage"]["size"].is_string() || spec["storage"]["pvcTemplate"].is_object(),
            "{}",
            name(c)
        );
        if let Some(params) = spec["postgresql"]["parameters"].as_object() {
            assert!(
                params.values().all(Value::is_string),
                "PostgreSQL parameters are strings"
            );
        }
        if spec["backup"].is_object() {
            let store = &spec["backup"]["barmanObjectStore"];
            assert!(store["destinationPath"].is_string(), "{}", name(c));
            let creds = &store["s3Credentials"];
            for key in ["accessKeyId", "secretAccessKey"] {
                assert!(
                    creds[key]["name"].is_string() && creds[key]["key"].is_string(),
                    "{key}"
                );
            }
        }
    }
    let cluster_names: Vec<&str> = clusters
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    for p in kind(&objects, "Pooler") {
        assert_eq!(p["apiVersion"], "postgresql.cnpg.io/v1");
        let spec = &p["spec"];
        let cluster = spec["cluster"]["name"].as_str().expect("spec.cluster.name");
        assert!(
            cluster_names.contains(&cluster),
            "{} names cluster {cluster}",
            name(p)
        );
        assert_ne!(
            p["metadata"]["name"], cluster,
            "a Pooler may not share its Cluster's name"
        );
        assert!(["rw", "ro", "r"].contains(&spec["type"].as_str().unwrap_or("rw")));
        let pgbouncer = &spec["pgbouncer"];
        assert!(pgbouncer.is_object(), "spec.pgbouncer is required");
        // kagi needs session pooling: per-connection search_path and advisory locks.
        assert_eq!(pgbouncer["poolMode"], "session", "{}", name(p));
        assert!(
            pgbouncer["parameters"]
                .as_object()
                .unwrap()
                .values()
                .all(Value::is_string)
        );
        if spec["template"].is_object() {
            assert!(
                spec["template"]["spec"]["containers"].is_array(),
                "template.spec.containers"
            );
        }
    }
    for b in kind(&objects, "ScheduledBackup") {
        let schedule = b["spec"]["schedule"].as_str().unwrap();
        assert_eq!(
            schedule.split_whitespace().count(),
            6,
            "CloudNativePG's cron has seconds: {schedule}"
        );
        assert!(cluster_names.contains(&b["spec"]["cluster"]["name"].as_str().unwrap()));
    }
    for m in kind(&objects, "ServiceMonitor") {
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert!(
            m["spec"]["selector"].is_object(),
            "{}: spec.selector",
            name(m)
        );
        let endpoints = m["spec"]["endpoints"].as_array().expect("spec.endpoints");
        assert!(!endpoints.is_empty());
        for e in endpoints {
            assert!(
                e["port"].is_string() || !e["targetPort"].is_null(),
                "{}: endpoint port",
                name(m)
            );
        }
    }
}

/// cert-manager `Certificate`s: what cert-manager requires (secretName, issuerRef.name, a
/// name), and one for every Secret `kagi-*-tls` a pod mounts, valid for what the pod does
/// with it (a server's DNS name is its Service; a caller's is the name its callees map).
#[test]
fn production_certificates_issue_every_mounted_tls_secret() {
    let objects = objects("production");
    let certificates: Vec<&Value> = kind(objects, "Certificate").collect();
    for c in &certificates {
        assert_eq!(c["apiVersion"], "cert-manager.io/v1");
        let spec = &c["spec"];
        assert!(
            spec["secretName"].is_string(),
            "{}: spec.secretName",
            name(c)
        );
        assert!(
            spec["issuerRef"]["name"].is_string(),
            "{}: spec.issuerRef.name",
            name(c)
        );
        assert!(
            spec["dnsNames"].as_array().is_some_and(|d| !d.is_empty())
                || spec["commonName"].is_string(),
            "{}: a name",
            name(c)
        );
    }
    let issued = |secret: &str| {
        certificates
            .iter()
            .find(|c| c["spec"]["secretName"] == secret)
            .unwrap_or_else(|| panic!("no Certificate issues {secret}"))
    };
    let has = |c: &Value, field: &str, value: &str| {
        c["spec"][field]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v == value)
    };
    for (service, server, client) in [
        ("keystore", true, false),
        ("reset", true, true),
        ("notifier", true, false),
        ("portal", false, true),
    ] {
        let secret = if server {
            format!("kagi-{service}-tls")
        } else {
            format!("kagi-{service}-client-tls")
        };
        let deployment = named(objects, "Deployment", &format!("kagi-{service}"));
        assert!(
            pod_spec(deployment)["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["secret"]["secretName"] == secret),
            "{service} mounts no {secret}"
        );
        let c = issued(&secret);
        assert!(has(c, "dnsNames", &format!("kagi-{service}")), "{secret}");
        assert_eq!(has(c, "usages", "server auth"), server, "{secret}");
        assert_eq!(has(c, "usages", "client auth"), client, "{secret}");
    }
}

/// ServiceMonitors shipped beside the overlays (`deploy/monitoring`), when there are any.
fn objects_of_monitoring() -> Vec<Value> {
    let dir = deploy_dir().join("monitoring");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.extend(yaml_documents(&std::fs::read_to_string(&path).unwrap()));
        }
    }
    out
}

/// One checkov run over every rendered overlay: nothing fails but the suppressions listed,
/// each with its reason, in `deploy/kubernetes/checkov.yaml`.
#[test]
fn checkov_finds_nothing_beyond_the_listed_suppressions() {
    // Not tempdir()'s `.tmpXXXX`: checkov skips hidden directories.
    let dir = tempfile::Builder::new()
        .prefix("kagi-checkov-")
        .tempdir()
        .unwrap();
    for overlay in OVERLAYS {
        std::fs::write(
            dir.path().join(format!("{overlay}.yaml")),
            rendered(overlay),
        )
        .unwrap();
    }
    let out = Command::new(kagi_testkit::peers::venv_program("checkov"))
        .arg("--config-file")
        .arg(deploy_dir().join("kubernetes/checkov.yaml"))
        .arg("--directory")
        .arg(dir.path())
        .args([
            "--skip-download",
            "--compact",
            "--quiet",
            "--output",
            "json",
        ])
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "checkov: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let summary = &report["summary"];
    let failed: Vec<String> = report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| format!("{} {} {}", f["check_id"], f["check_name"], f["resource"]))
        .collect();
    assert_eq!(summary["failed"], 0, "{failed:#?}");
    assert!(summary["passed"].as_i64().unwrap() > 500, "{summary}");
    assert!(out.status.success());
}
