//! Every service's TOML in the rendered manifests loads into its settings, together with
//! the overlay's site variables (`kagi-site`, from `site.env`), exactly as the pod loads it:
//! a child process of this test binary gets the variables in its environment (the parent
//! cannot set its own without `unsafe`) and reports what it loaded as JSON. Every file the
//! settings name must be mounted into the container that reads it.

use std::path::Path;
use std::process::Command;

use kagi_runtime::cli::ServiceSettings as _;
use serde_json::{Value, json};

use crate::manifests::{OVERLAYS, objects, pod_spec};

const CHILD: &str = "KAGI_DEPLOY_TEST_CHILD";
const CONFIG: &str = "KAGI_DEPLOY_TEST_CONFIG";
/// Where the child finds the overlay's `kagi-institution` file (the pod mounts it elsewhere).
const INSTITUTION: &str = "KAGI_DEPLOY_TEST_INSTITUTION";

/// What `service` loaded in `overlay` (see [`facts`]).
pub fn loaded(overlay: &str, service: &str) -> Value {
    let objects = objects(overlay);
    let config_map = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"][format!("{service}.toml")].is_string())
        .unwrap_or_else(|| panic!("{overlay}: no ConfigMap holds {service}.toml"));
    let site = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("kagi-site-")
        })
        .unwrap_or_else(|| panic!("{overlay}: no kagi-site ConfigMap"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("{service}.toml"));
    std::fs::write(
        &file,
        config_map["data"][format!("{service}.toml")]
            .as_str()
            .unwrap(),
    )
    .unwrap();

    let institution = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("kagi-institution-")
        })
        .unwrap_or_else(|| panic!("{overlay}: no kagi-institution ConfigMap"));
    let institution_file = dir.path().join("institution.toml");
    std::fs::write(
        &institution_file,
        institution["data"]["institution.toml"].as_str().unwrap(),
    )
    .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap());
    child
        .args([
            "settings::a_child_loads_one_services_settings",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(CHILD, service)
        .env(CONFIG, &file)
        .env(INSTITUTION, &institution_file);
    for (key, value) in site["data"].as_object().unwrap() {
        child.env(key, value.as_str().unwrap());
    }
    let out = crate::manifests::run(&mut child);
    let line = out
        .lines()
        .find_map(|l| l.split_once("KAGI_FACTS ").map(|(_, facts)| facts))
        .unwrap_or_else(|| panic!("{overlay} {service}: the child reported nothing:\n{out}"));
    serde_json::from_str(line).unwrap()
}

/// The child's half: a no-op in a normal test run.
#[test]
#[allow(clippy::print_stdout)]
fn a_child_loads_one_services_settings() {
    let Ok(service) = std::env::var(CHILD) else {
        return;
    };
    let config = std::env::var(CONFIG).unwrap();
    println!("KAGI_FACTS {}", facts(&service, Path::new(&config)));
}

/// The TLS files a gRPC server reads (certificate, key, client CA), after checking it
/// will start: without TLS it refuses a non-loopback address unless `allow_plaintext`.
fn tls(server: &kagi_runtime::server::ServerSettings) -> Value {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    assert!(
        server.listen_addr.ip().is_loopback()
            || server.allow_plaintext
            || (server.tls_cert.is_some() && server.tls_key.is_some()),
        "{} would refuse to start: plaintext on a non-loopback address",
        server.listen_addr
    );
    json!([
        path(&server.tls_cert),
        path(&server.tls_key),
        path(&server.tls_client_ca)
    ])
}

/// The files a client reads to call over mTLS, and its endpoint.
fn client(c: &kagi_runtime::client::ClientSettings) -> Value {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    json!({
        "endpoint": c.endpoint,
        "files": [path(&c.ca_file), path(&c.cert_file), path(&c.key_file), path(&c.token_file)],
    })
}

/// The institution `section` names, read from the overlay's file (at [`INSTITUTION`]) in
/// place of the pod's mount path, which stays among the `files` the pod must mount.
fn institution(section: &kagi_runtime::Institution) -> (Option<String>, String) {
    let mounted = section.file.as_ref().map(|p| p.display().to_string());
    let mut here = section.clone();
    if here.file.is_some() {
        here.file = Some(std::env::var(INSTITUTION).unwrap().into());
    }
    let mut resolved = here.resolve().unwrap();
    resolved.file = None;
    (mounted, format!("{resolved:?}"))
}

/// Loads `service`'s settings from `config` and the environment, runs the checks the
/// service makes at start, and returns what the parent asserts: port, pool size, the files
/// it will read, and the site values.
fn facts(service: &str, config: &Path) -> Value {
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    match service {
        "keystore" => {
            let s = kagi_keystore::Settings::load(Some(config)).unwrap();
            s.totp.params().unwrap();
            s.lockout.policy().unwrap();
            s.check.policy(&s.totp.verifier().unwrap()).unwrap();
            let (file, institution) = institution(&s.institution);
            json!({
                "tls": tls(&s.server),
                "metrics": s.metrics.listen_addr.map(|a| a.to_string()),
                "port": s.server.listen_addr.port(),
                "max_connections": s.database.max_connections,
                "migrate_on_start": s.database.migrate_on_start,
                "files": [path(&s.database.url_file), path(&s.auth.tokens_dir), path(&s.kek.keys_dir), file],
                "certificate_callers": s.auth.certificate_callers,
                "allow": s.auth.allow,
                "campus_networks": s.campus_networks.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "institution": institution,
            })
        }
        "reset" => {
            let s = kagi_reset::Settings::load(Some(config)).unwrap();
            json!({
                "tls": tls(&s.server),
                "metrics": s.metrics.listen_addr.map(|a| a.to_string()),
                "port": s.server.listen_addr.port(),
                "max_connections": s.database.max_connections,
                "migrate_on_start": s.database.migrate_on_start,
                "files": [path(&s.database.url_file), path(&s.auth.tokens_dir), path(&s.code_hmac_key_file)],
                "clients": [client(&s.keystore), client(&s.notifier)],
                "certificate_callers": s.auth.certificate_callers,
                "allow": s.auth.allow,
            })
        }
        "notifier" => {
            let s = kagi_notifier::Settings::load(Some(config)).unwrap();
            let (file, institution) = institution(&s.institution);
            json!({
                "tls": tls(&s.server),
                "metrics": s.metrics.listen_addr.map(|a| a.to_string()),
                "port": s.server.listen_addr.port(),
                "max_connections": s.database.max_connections,
                "migrate_on_start": s.database.migrate_on_start,
                "files": [path(&s.database.url_file), path(&s.auth.tokens_dir),
                          Some(s.sealing.key_file.display().to_string()),
                          path(&s.transport.smtp.password_file), path(&s.mail.templates_dir), file],
                "certificate_callers": s.auth.certificate_callers,
                "allow": s.auth.allow,
                "smtp": format!("{:?} {}:{}", s.transport.kind, s.transport.smtp.host, s.transport.smtp.port),
                "institution": institution,
            })
        }
        _ => {
            let s = kagi_portal::Settings::load(Some(config)).unwrap();
            let (file, institution) = institution(&s.institution);
            json!({
                "metrics": s.metrics.listen_addr.map(|a| a.to_string()),
                "port": s.server.listen_addr.port(),
                "max_connections": s.database.max_connections,
                "migrate_on_start": s.database.migrate_on_start,
                "files": [path(&s.database.url_file), file],
                "clients": [client(&s.keystore), client(&s.reset)],
                "public_url": s.server.public_url,
                "institution": institution,
            })
        }
    }
}

#[test]
fn every_services_settings_load_with_the_site_values_and_every_file_is_mounted() {
    for overlay in OVERLAYS {
        for (service, port) in [
            ("keystore", 50051),
            ("reset", 50052),
            ("notifier", 50053),
            ("portal", 8080),
        ] {
            let facts = loaded(overlay, service);
            let what = format!("{overlay} {service}");
            assert_eq!(facts["port"], port, "{what}");
            assert_eq!(
                facts["migrate_on_start"], false,
                "{what}: the init container migrates"
            );
            // The container listens where its Service sends traffic.
            let deployment = objects(overlay)
                .iter()
                .find(|o| {
                    o["kind"] == "Deployment" && o["metadata"]["name"] == format!("kagi-{service}")
                })
                .unwrap();
            let container = &pod_spec(deployment)["containers"][0];
            assert_eq!(container["ports"][0]["containerPort"], port, "{what}");
            let mounts: Vec<&str> = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["mountPath"].as_str().unwrap())
                .collect();
            let mut files: Vec<&Value> = facts["files"].as_array().unwrap().iter().collect();
            files.extend(facts["tls"].as_array().into_iter().flatten());
            for client in facts["clients"].as_array().into_iter().flatten() {
                files.extend(client["files"].as_array().unwrap());
            }
            for file in files.into_iter().filter_map(Value::as_str) {
                assert!(
                    mounts
                        .iter()
                        .any(|m| file == *m || file.starts_with(&format!("{m}/"))),
                    "{what}: {file} is in none of {mounts:?}"
                );
            }
        }
        let keystore = loaded(overlay, "keystore");
        assert!(
            !keystore["campus_networks"].as_array().unwrap().is_empty(),
            "{overlay}"
        );
        // Callers reach the gRPC services over mTLS: an https endpoint, the CA, their own
        // certificate and key (all mounted, above), and no bearer token.
        let tls = json!([
            "/etc/kagi/tls/tls.crt",
            "/etc/kagi/tls/tls.key",
            "/etc/kagi/tls/ca.crt"
        ]);
        for service in ["keystore", "reset", "notifier"] {
            assert_eq!(loaded(overlay, service)["tls"], tls, "{overlay} {service}");
        }
        let client = |endpoint: &str| {
            json!({"endpoint": endpoint, "files": [
                "/etc/kagi/tls/ca.crt", "/etc/kagi/tls/tls.crt", "/etc/kagi/tls/tls.key", null]})
        };
        let reset = loaded(overlay, "reset");
        assert_eq!(
            reset["clients"],
            json!([
                client("https://kagi-keystore:50051"),
                client("https://kagi-notifier:50053")
            ])
        );
        let portal = loaded(overlay, "portal");
        assert_eq!(
            portal["clients"],
            json!([
                client("https://kagi-keystore:50051"),
                client("https://kagi-reset:50052")
            ])
        );
        // No allow list is overridden: the services' own defaults hold, which admit the
        // portal's VerifyCode (keystore) and NotifyKeyDisplayed (reset) and the reset
        // service's SendKeyDisplayedNotice (notifier), the flows the NetworkPolicies admit.
        for service in ["keystore", "reset", "notifier"] {
            assert_eq!(
                loaded(overlay, service)["allow"],
                json!({}),
                "{overlay} {service}"
            );
        }
        // Each callee knows exactly its in-cluster callers by certificate.
        assert_eq!(
            loaded(overlay, "keystore")["certificate_callers"],
            json!({"kagi-portal": "portal", "kagi-reset": "reset"})
        );
        assert_eq!(
            reset["certificate_callers"],
            json!({"kagi-portal": "portal"})
        );
        assert_eq!(
            loaded(overlay, "notifier")["certificate_callers"],
            json!({"kagi-reset": "reset"})
        );
        assert!(
            portal["public_url"]
                .as_str()
                .unwrap()
                .starts_with("https://"),
            "{overlay}: secure cookies"
        );
        let notifier = loaded(overlay, "notifier");
        assert!(
            notifier["smtp"]
                .as_str()
                .unwrap()
                .starts_with("Smtp smtp-relay."),
            "{notifier}"
        );
    }
    // The site's own words reach the services, the same in each: one institution per overlay.
    for overlay in OVERLAYS {
        let portal = loaded(overlay, "portal")["institution"].clone();
        for service in ["keystore", "notifier"] {
            assert_eq!(
                loaded(overlay, service)["institution"],
                portal,
                "{overlay} {service}"
            );
        }
    }
    let production = loaded("production", "portal")["institution"].clone();
    let production = production.as_str().unwrap();
    assert!(production.contains(r#"ja: "サンプル大学""#), "{production}");
    assert!(
        production.contains(r#"otpauth_issuer: "OMU""#),
        "{production}"
    );
    assert_ne!(loaded("dev", "portal")["institution"], production);
    assert_eq!(
        loaded("production", "keystore")["campus_networks"],
        json!(["10.0.0.0/8", "2001:db8:10::/48"])
    );
}
