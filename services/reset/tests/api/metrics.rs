//! `/metrics` after a reset walked from start to finish, linted by promtool.

use kagi_proto::v1 as pb;
use kagi_testkit::both_backends;
use kagi_testkit::metrics::{promtool_check, scrape, scrape_text, value, value_with};

use crate::helpers::{Backend, Stack};

both_backends!(a_finished_reset_shows_in_the_metrics_and_promtool_accepts_them);

/// A free port for `/metrics` (the reset test harness exposes only the gRPC address).
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

async fn a_finished_reset_shows_in_the_metrics_and_promtool_accepts_them(backend: Backend) {
    let metrics = free_addr();
    let stack = Stack::start_with(backend, |s| s.metrics.listen_addr = Some(metrics)).await;
    let before = scrape(metrics).await;
    let step = |text: &str, step: &str| value_with(text, "reset_sagas_total", &[("step", step)]);
    stack.account("a23b456c").await;

    let (reset_id, code) = stack.start_and_read_code("a23b456c").await;
    let verified = stack.verify(&reset_id, &code).await.unwrap();
    assert_eq!(verified.result(), pb::CodeCheck::Verified);
    stack.confirm(&reset_id).await.unwrap();

    let after = scrape(metrics).await;
    promtool_check(&scrape_text(metrics).await);
    // Domain counters are the process's (other resets run beside this one): at least ours.
    for s in ["started", "verified", "completed"] {
        assert!(step(&after, s) - step(&before, s) >= 1.0, "{s}: {after}");
    }
    assert!(value(&after, "reset_codes_mailed_total") >= 1.0);
    assert_eq!(value(&after, "reset_sagas_confirming"), 0.0);
    // This server's RED series are its own, exact; the calls it made go out by target.
    assert_eq!(
        value(
            &after,
            "grpc_server_handled_total{grpc_service=\"kagi.v1.Reset\",grpc_method=\"ConfirmReset\",grpc_code=\"OK\"}"
        ),
        1.0
    );
    assert!(
        value_with(
            &after,
            "grpc_client_handled_total",
            &[
                ("grpc_service", "kagi.v1.Keystore"),
                ("grpc_method", "RotateKey"),
                ("grpc_code", "OK")
            ]
        ) >= 1.0,
        "{after}"
    );
    assert!(!after.contains("a23b456c"), "no account in any label");
}
