//! The `kagi-keystore` binary as operators run it: TLS, SIGTERM, `migrate` and `audit`.

use std::process::{Output, Stdio};
use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use tokio::io::AsyncReadExt as _;
use tokio::process::Child;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::helpers::{Backend, TestDatabase, token_of, user_tables};
use kagi_testkit::both_backends;

both_backends!(
    the_binary_serves_tls_and_stops_cleanly_on_sigterm,
    migrate_and_audit_commands_work_on_the_database,
    spans_reach_an_otlp_collector_joined_to_the_callers_trace,
);

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// How long any one step of the binary may take (start, a command, a request) before the
/// test fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(30);

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

/// The keystore's address on `port`, with every connection attempt and request bounded.
fn endpoint(scheme: &str, port: u16) -> Endpoint {
    Channel::from_shared(format!("{scheme}://127.0.0.1:{port}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(PATIENCE)
}

fn tls_endpoint(port: u16) -> Endpoint {
    let ca = std::fs::read(format!("{FIXTURES}/ca.crt")).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    endpoint("https", port).tls_config(tls).unwrap()
}

/// Connects to the keystore `child` is starting. A keystore that exits, or does not answer
/// within [`PATIENCE`], fails the test with what it wrote to stderr.
async fn connect_to(child: &mut Child, endpoint: &Endpoint) -> Channel {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "kagi-keystore exited ({status}) instead of serving:\n{}",
                stderr_of(child).await
            );
        }
        if tokio::time::Instant::now() >= deadline {
            child.start_kill().unwrap();
            panic!(
                "kagi-keystore did not serve {} within {PATIENCE:?}:\n{}",
                endpoint.uri(),
                stderr_of(child).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What a finished (or killed) child wrote to its piped stderr.
async fn stderr_of(child: &mut Child) -> String {
    let mut bytes = Vec::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = tokio::time::timeout(Duration::from_secs(5), stderr.read_to_end(&mut bytes)).await;
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs a one-shot command (`migrate`, `audit`) to its end, within [`PATIENCE`].
async fn run(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(PATIENCE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {PATIENCE:?}"))
        .unwrap()
}

async fn the_binary_serves_tls_and_stops_cleanly_on_sigterm(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let port = free_port();
    let mut child = keystore_command(&db)
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

    let mut client = KeystoreClient::new(connect_to(&mut child, &tls_endpoint(port)).await);
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
    let killed = run(tokio::process::Command::new("kill").args(["-TERM", &pid])).await;
    assert!(killed.status.success());
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

/// `migrate` alone creates the schema: the tables are there right after it exits, every
/// migration is recorded as applied, and a keystore told not to migrate at start serves on
/// it. `audit` then prints what that keystore did.
async fn migrate_and_audit_commands_work_on_the_database(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let migrated = run(keystore_command(&db).arg("migrate")).await;
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    let tables: Vec<String> = user_tables(&db)
        .await
        .into_iter()
        // On PostgreSQL the keystore's tables live in its own schema.
        .map(|t| t.trim_start_matches("keystore.").to_owned())
        .collect();
    for table in [
        "accounts",
        "setup_keys",
        "rotations",
        "audit_events",
        "_sqlx_migrations",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "`migrate` created {table}: {tables:?}"
        );
    }
    assert_eq!(
        applied_migrations(&db).await,
        migration_files(backend),
        "every migration applied, successfully"
    );

    let mut settings = crate::helpers::test_settings(&db);
    settings.database.migrate_on_start = false;
    let app = crate::helpers::TestApp::start(
        &settings,
        std::sync::Arc::new(kagi_runtime::ManualClock::new(std::time::SystemTime::now())),
    )
    .await;
    app.enroll("taro").await;
    app.stop().await;

    let audit = run(keystore_command(&db).args(["audit", "--account", "taro"])).await;
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

/// The versions sqlx recorded as successfully applied, in order.
async fn applied_migrations(db: &TestDatabase) -> Vec<i64> {
    let sql = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
    match db.backend {
        Backend::Sqlite => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
        Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
                .await
                .unwrap();
            sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap()
        }
    }
}

/// The versions of the migration files shipped for `backend` (`0001_keystore.sql` is 1).
fn migration_files(backend: Backend) -> Vec<i64> {
    let folder = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/").to_owned() + folder;
    let mut versions: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .collect();
    versions.sort_unstable();
    assert!(!versions.is_empty(), "migrations found");
    versions
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, each RPC's spans are exported, continuing the
/// trace the caller sent in `traceparent`, and carry no secret.
async fn spans_reach_an_otlp_collector_joined_to_the_callers_trace(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let (collector, otlp_endpoint) = kagi_testkit::otlp::Collector::start().await;
    let port = free_port();
    let mut child = keystore_command(&db)
        .arg("serve")
        .env(
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp_endpoint)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let channel = connect_to(&mut child, &endpoint("http", port)).await;
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
    let killed = run(tokio::process::Command::new("kill").args(["-TERM", &pid])).await;
    assert!(killed.status.success());
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("stops within 10 s")
        .unwrap();
    assert!(
        output.status.success(),
        "clean exit after SIGTERM: {}",
        String::from_utf8_lossy(&output.stderr)
    );

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
