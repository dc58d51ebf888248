//! The `kagi-keystore` binary as operators run it: TLS, SIGTERM, `migrate` and `audit`.

use std::process::Stdio;
use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::helpers::{Backend, TestDatabase, token_of};
use kagi_testkit::both_backends;

both_backends!(
    the_binary_serves_tls_and_stops_cleanly_on_sigterm,
    migrate_and_audit_commands_work_on_the_database,
    spans_reach_an_otlp_collector_joined_to_the_callers_trace,
);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn keystore_command(db: &TestDatabase) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi-keystore"));
    command
        .env("KAGI_KEYSTORE_DATABASE__URL", &db.url)
        .env(
            "KAGI_KEYSTORE_KEK__KEYS__K1",
            data_encoding::BASE64.encode(&[11_u8; 32]),
        )
        .env(
            "KAGI_KEYSTORE_AUTH__TOKENS__ONBOARDING",
            token_of("onboarding"),
        )
        .env("KAGI_KEYSTORE_AUTH__TOKENS__ADMIN", token_of("admin"))
        .env("KAGI_KEYSTORE_TELEMETRY__LOG_FORMAT", "json")
        .kill_on_drop(true);
    command
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn tls_channel(port: u16) -> Channel {
    let ca = std::fs::read(format!("{FIXTURES}/ca.crt")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    let endpoint = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap();
    for _ in 0..100 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("keystore did not come up with TLS on {port}");
}

async fn the_binary_serves_tls_and_stops_cleanly_on_sigterm(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let port = free_port();
    let child = keystore_command(&db)
        .arg("serve")
        .env(
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env(
            "KAGI_KEYSTORE_SERVER__TLS_CERT",
            format!("{FIXTURES}/tls.crt"),
        )
        .env(
            "KAGI_KEYSTORE_SERVER__TLS_KEY",
            format!("{FIXTURES}/tls.key"),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut client = KeystoreClient::new(tls_channel(port).await);
    let mut request = tonic::Request::new(pb::EnrollRequest {
        account_id: "taro".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of("onboarding"))
            .parse()
            .unwrap(),
    );
    let key = client
        .enroll(request)
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.account_id, "taro");

    let pid = child.id().unwrap().to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within 10 s")
        .unwrap();

    assert!(
        output.status.success(),
        "clean exit after SIGTERM: {:?}",
        output.status
    );
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("received SIGTERM"), "{logs}");
    assert!(logs.contains("server stopped"), "{logs}");
    assert!(!logs.contains(&key.secret_base32));
}

async fn migrate_and_audit_commands_work_on_the_database(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let migrated = keystore_command(&db).arg("migrate").output().await.unwrap();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let settings = crate::helpers::test_settings(&db);
    let app = crate::helpers::TestApp::start(
        &settings,
        std::sync::Arc::new(kagi_runtime::ManualClock::new(std::time::SystemTime::now())),
    )
    .await;
    app.enroll("taro").await;
    app.stop().await;

    let audit = keystore_command(&db)
        .args(["audit", "--account", "taro"])
        .output()
        .await
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let stdout = String::from_utf8(audit.stdout).unwrap();
    let line = stdout.lines().next().expect("one audit line");
    assert!(
        line.contains(r#""action":"enroll""#) && line.contains(r#""caller":"onboarding""#),
        "{line}"
    );
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each RPC's spans are exported, continuing the
/// trace the caller sent in `traceparent`, and carry no secret.
async fn spans_reach_an_otlp_collector_joined_to_the_callers_trace(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let (collector, endpoint) = kagi_testkit::otlp::Collector::start().await;
    let port = free_port();
    let mut child = keystore_command(&db)
        .arg("serve")
        .env(
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let channel = loop {
        if let Ok(channel) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
        {
            break channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (trace_id, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let mut request = tonic::Request::new(pb::EnrollRequest {
        account_id: "taro".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of("onboarding"))
            .parse()
            .unwrap(),
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    let key = KeystoreClient::new(channel)
        .enroll(request)
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();

    // SIGTERM flushes the exporter on the way out.
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();

    let spans = collector.spans();
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let server = ours
        .iter()
        .find(|s| s.name == "kagi.v1.Keystore/Enroll")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(server.service, "kagi-keystore");
    assert_eq!(
        server.parent_span_id, parent,
        "the server span continues the caller's span"
    );
    let handler = ours
        .iter()
        .find(|s| s.name == "Keystore.Enroll")
        .expect("handler span");
    assert_eq!(handler.parent_span_id, server.span_id);
    assert!(
        handler.attributes.contains(&"account_id=taro".to_owned()),
        "{:?}",
        handler.attributes
    );
    let everything = format!("{spans:?}");
    assert!(
        !everything.contains(&key.secret_base32),
        "no secret in any span"
    );
}
