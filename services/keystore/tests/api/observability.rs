//! What an on-call engineer sees: `/metrics` after real traffic (linted by promtool),
//! health that follows the database, reflection listing only the keystore.

use std::sync::Arc;
use std::time::SystemTime;

use kagi_runtime::ManualClock;
use kagi_testkit::both_backends;
use kagi_testkit::metrics::{probe, promtool_check, scrape, scrape_text, value, value_with};

use kagi_proto::v1 as pb;
use sqlx::Connection as _;
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::{Backend, TestApp, TestDatabase, channel, test_settings, wrong_code};

both_backends!(verify_code_traffic_moves_the_metrics_and_promtool_accepts_them);

async fn verify_code_traffic_moves_the_metrics_and_promtool_accepts_them(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let metrics = app.metrics_addr.expect("metrics are on");
    let before = scrape(metrics).await;
    let accepted = |text: &str| {
        value_with(
            text,
            "keystore_verify_results_total",
            &[("result", "ACCEPTED")],
        )
    };

    let key = app.enroll("taro").await;
    app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    app.verify("taro", &wrong_code(&app, &key)).await.unwrap();
    let refused = TestApp::as_caller(
        "onboarding",
        kagi_proto::v1::VerifyCodeRequest {
            account_id: "taro".into(),
            code: "123456".into(),
        },
    );
    let denied = app.client.clone().verify_code(refused).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    let after = scrape(metrics).await;
    promtool_check(&scrape_text(metrics).await);
    let rpc = |code: &str| {
        format!(
            "grpc_server_handled_total{{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\",grpc_code=\"{code}\"}}"
        )
    };
    // This server's own RED series move exactly; the domain counters are the process's
    // (other tests run beside this one), so they moved at least this much.
    assert_eq!(value(&after, &rpc("OK")) - value(&before, &rpc("OK")), 2.0);
    assert_eq!(value(&after, &rpc("PermissionDenied")), 1.0);
    assert_eq!(
        value(
            &after,
            "grpc_server_started_total{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\"}"
        ),
        3.0
    );
    assert_eq!(
        value(
            &after,
            "grpc_server_in_flight{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\"}"
        ),
        0.0
    );
    assert!(accepted(&after) - accepted(&before) >= 1.0, "{after}");
    assert!(
        value_with(
            &after,
            "keystore_verify_results_total",
            &[("result", "REJECTED")]
        ) >= 1.0
    );
    assert!(
        value_with(
            &after,
            "grpc_server_handling_seconds_count",
            &[("grpc_method", "VerifyCode")]
        ) == 3.0
    );
    assert!(value(&after, "db_pool_connections_max") >= 1.0);
    // The waits for a connection are measured at every acquisition: none waiting now, and
    // each of the three calls took at least one connection (the refused one none).
    assert!(
        after.contains("# TYPE db_pool_acquire_waiting gauge"),
        "{after}"
    );
    assert_eq!(value(&after, "db_pool_acquire_waiting"), 0.0);
    assert!(
        value(&after, "db_pool_acquire_seconds_count")
            - value(&before, "db_pool_acquire_seconds_count")
            >= 2.0,
        "{after}"
    );
    assert_eq!(value(&after, "db_pool_acquire_timeouts_total"), 0.0);
    // No series names the account or the code.
    assert!(!after.contains("taro"), "{after}");
    app.stop().await;
}

both_backends!(a_call_finding_every_connection_lent_out_shows_as_waiting);

/// Pool exhaustion as an on-call engineer sees it: with both connections of a two-connection
/// pool held, a VerifyCode waits for one, `db_pool_acquire_waiting` reads 1 while it does, and
/// it completes once a connection comes back.
async fn a_call_finding_every_connection_lent_out_shows_as_waiting(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.database.max_connections = 2;
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let metrics = app.metrics_addr.expect("metrics are on");
    let key = app.enroll("taro").await;
    let waiting = |text: &str| value(text, "db_pool_acquire_waiting");
    let waits = |text: &str| value(text, "db_pool_acquire_seconds_count");
    let before = scrape(metrics).await;
    assert_eq!(waiting(&before), 0.0);

    let pool = app.keystore.db().pool();
    let held = [pool.acquire().await.unwrap(), pool.acquire().await.unwrap()];
    let code = app.code_for(&key, 0);
    let call = tokio::spawn({
        let client = app.client.clone();
        async move {
            let mut client = client;
            client
                .verify_code(TestApp::as_caller(
                    "login",
                    kagi_proto::v1::VerifyCodeRequest {
                        account_id: "taro".into(),
                        code,
                    },
                ))
                .await
        }
    });
    // The readiness probe may be waiting beside it for a moment (it gives up after 2 s):
    // read until the call alone is waiting.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(8), async {
        loop {
            let text = scrape(metrics).await;
            if waiting(&text) == 1.0 {
                break text;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the call waits for a connection and the gauge shows it");
    assert!(!call.is_finished(), "the call did not wait: {seen}");
    assert_eq!(
        value(
            &seen,
            "grpc_server_in_flight{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\"}"
        ),
        1.0
    );
    assert_eq!(value(&seen, "db_pool_connections_in_use"), 2.0);
    // The bucket KagiDatabasePoolExhausted (deploy/monitoring) divides by.
    assert!(
        seen.contains("db_pool_acquire_seconds_bucket{le=\"0.0256\"}"),
        "{seen}"
    );

    drop(held);
    let answer = call
        .await
        .unwrap()
        .expect("the call completes once a connection is free");
    assert_eq!(
        answer.into_inner().result(),
        kagi_proto::v1::VerifyResult::Accepted
    );
    let after = scrape(metrics).await;
    assert_eq!(waiting(&after), 0.0, "{after}");
    assert!(waits(&after) > waits(&before), "{after}");
    assert_eq!(value(&after, "db_pool_acquire_timeouts_total"), 0.0);
    promtool_check(&scrape_text(metrics).await);
    app.stop().await;
}

#[tokio::test]
async fn a_scanner_inventing_methods_mints_no_series() {
    let db = TestDatabase::new(Backend::Sqlite, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let channel = crate::helpers::channel(app.addr).await;
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..3 {
        grpc.ready().await.unwrap();
        let path = format!("/kagi.v1.Keystore/Made{i}Up").parse().unwrap();
        let status = grpc
            .unary::<(), (), _>(
                tonic::Request::new(()),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_ne!(status.code(), tonic::Code::Ok);
    }
    let text = scrape(app.metrics_addr.unwrap()).await;
    assert!(!text.contains("Made0Up"), "{text}");
    assert_eq!(
        value_with(
            &text,
            "grpc_server_started_total",
            &[("grpc_method", "unknown")]
        ),
        3.0
    );
    app.stop().await;
}

async fn status_of(health: &mut HealthClient<tonic::transport::Channel>, service: &str) -> i32 {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
}

/// Polls readiness for up to 20 s (the watcher pings every 2 s).
async fn wait_for_readiness(
    health: &mut HealthClient<tonic::transport::Channel>,
    wanted: ServingStatus,
) {
    for _ in 0..80 {
        if status_of(health, "kagi.v1.Keystore").await == wanted as i32 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("readiness never became {wanted:?}");
}

/// Polls `/readyz` for up to 20 s, as the kubelet's readiness probe would.
async fn wait_for_readyz(metrics: std::net::SocketAddr, wanted: u16) {
    for _ in 0..80 {
        if probe(metrics, "/readyz").await == wanted {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("/readyz never answered {wanted}");
}

/// The database is cut off for real: PostgreSQL refuses new connections to it and ends the
/// open ones; then it is let back in. gRPC health and the kubelet's `/readyz` and `/livez`
/// on the plain-HTTP metrics port tell the same story.
#[tokio::test]
async fn readiness_follows_the_database_and_liveness_does_not() {
    let db = TestDatabase::new(Backend::Postgres, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let metrics = app.metrics_addr.expect("metrics are on");
    let name = db
        .postgres_name()
        .expect("a PostgreSQL database")
        .to_owned();
    let mut admin = sqlx::PgConnection::connect(&kagi_testkit::database::postgres_url())
        .await
        .unwrap();
    let mut health = HealthClient::new(channel(app.addr).await);
    assert_eq!(
        status_of(&mut health, "kagi.v1.Keystore").await,
        ServingStatus::Serving as i32
    );
    assert_eq!(probe(metrics, "/readyz").await, 200);
    assert_eq!(probe(metrics, "/livez").await, 200);

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}';"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    wait_for_readiness(&mut health, ServingStatus::NotServing).await;
    wait_for_readyz(metrics, 503).await;
    assert_eq!(
        status_of(&mut health, "").await,
        ServingStatus::Serving as i32,
        "liveness stays up: restarting the pod would not bring the database back"
    );
    assert_eq!(probe(metrics, "/livez").await, 200, "nor over HTTP");

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS true"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    wait_for_readiness(&mut health, ServingStatus::Serving).await;
    wait_for_readyz(metrics, 200).await;
    let key = app.enroll("taro").await;
    assert!(!key.key_id.is_empty(), "serving again once ready");
    app.stop().await;
}

/// PostgreSQL ends every connection of the keystore's (a restart, a failover, an operator's
/// `pg_terminate_backend`) while they sit idle. Connections are handed out without a ping
/// while recently used (`PING_WHEN_IDLE_FOR`), but one idle longer is pinged first and
/// replaced: the next logins never see the loss.
#[tokio::test]
async fn connections_the_database_ended_while_idle_are_replaced_unseen() {
    let (app, db) = crate::helpers::spawn_app(Backend::Postgres).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);
    assert_eq!(
        app.verify("taro", &code).await.unwrap().result(),
        pb::VerifyResult::Accepted
    );
    let name = db.postgres_name().expect("a PostgreSQL database");
    let mut admin = sqlx::PgConnection::connect(&kagi_testkit::database::postgres_url())
        .await
        .unwrap();
    let ended: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(name)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ended.is_empty(), "the keystore had connections to end");

    tokio::time::sleep(
        kagi_runtime::db::PING_WHEN_IDLE_FOR + std::time::Duration::from_millis(300),
    )
    .await;
    let second = app.enroll("hanako").await;
    assert_eq!(
        app.verify("hanako", &app.code_for(&second, 0))
            .await
            .expect("a login after the connections ended")
            .result(),
        pb::VerifyResult::Accepted
    );
    let _ = admin.close().await;
    app.stop().await;
}

/// A login system that sends a W3C `traceparent` finds every line of its call under that
/// trace id, ending with one access line naming it as the caller.
#[tokio::test]
async fn every_log_line_of_a_call_carries_its_trace_and_one_access_line_ends_it() {
    let db = TestDatabase::new(Backend::Sqlite, "keystore.db").await;
    let app = TestApp::start(
        &test_settings(&db),
        Arc::new(ManualClock::new(SystemTime::now())),
    )
    .await;
    let key = app.enroll("hanako").await;
    let trace_id = format!("{:032x}", rand_trace());
    let mut request = TestApp::as_caller(
        "login",
        kagi_proto::v1::VerifyCodeRequest {
            account_id: "hanako".into(),
            code: app.code_for(&key, 0),
        },
    );
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    app.client.clone().verify_code(request).await.unwrap();
    app.stop().await;

    let logs = crate::helpers::captured_logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.contains(&trace_id))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    for line in &lines {
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["span_id"].as_str().map(str::len), Some(16), "{line}");
    }
    let access: Vec<_> = lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(access.len(), 1, "{lines:#?}");
    let fields = &access[0]["fields"];
    assert_eq!(fields["caller"], "login");
    assert_eq!(fields["grpc_code"], "OK");
    assert_eq!(fields["method"], "/kagi.v1.Keystore/VerifyCode");
    assert!(fields["duration_ms"].as_f64().is_some(), "{fields}");
}

/// A trace id no other test uses.
fn rand_trace() -> u128 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    nanos | (1 << 100)
}
