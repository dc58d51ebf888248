//! `/metrics` after real deliveries through a real SMTP server, linted by promtool.

use kagi_proto::v1 as pb;
use kagi_testkit::both_backends;
use kagi_testkit::metrics::{promtool_check, scrape, scrape_text, value, value_with};

use crate::helpers::*;

both_backends!(deliveries_and_the_queue_show_in_the_metrics_and_promtool_accepts_them);

async fn deliveries_and_the_queue_show_in_the_metrics_and_promtool_accepts_them(backend: Backend) {
    // Greylisted once, then accepted: one retry with a 4xx, then a 2xx.
    let sink = SmtpSink::start("451,250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    let app = TestApp::spawn(settings).await;
    let metrics = app.metrics_addr.expect("metrics are on");
    let before = scrape(metrics).await;
    let sent = |text: &str| {
        value_with(
            text,
            "notifier_deliveries_total",
            &[("outcome", "sent"), ("smtp_class", "2xx")],
        )
    };
    let deferred = |text: &str| {
        value_with(
            text,
            "notifier_deliveries_total",
            &[("outcome", "deferred"), ("smtp_class", "4xx")],
        )
    };

    let id = app
        .send_reset_code(&unique("metrics"), "taro@example.ac.jp", "246810")
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;
    assert_eq!(delivery.state(), pb::DeliveryState::Sent);

    let after = scrape(metrics).await;
    promtool_check(&scrape_text(metrics).await);
    // Counters are the process's (other tests deliver beside this one): at least ours.
    assert!(sent(&after) - sent(&before) >= 1.0, "{after}");
    assert!(deferred(&after) - deferred(&before) >= 1.0, "{after}");
    assert!(value(&after, "notifier_delivery_retries_total") >= 1.0);
    // This server's queue is its own database: empty again.
    assert_eq!(value(&after, "notifier_queue_depth"), 0.0);
    assert_eq!(value(&after, "notifier_queue_oldest_age_seconds"), 0.0);
    assert_eq!(
        value(
            &after,
            "grpc_server_handled_total{grpc_service=\"kagi.v1.Notifier\",grpc_method=\"SendResetCode\",grpc_code=\"OK\"}"
        ),
        1.0
    );
    assert!(!after.contains("taro"), "no address in any label: {after}");
    app.stop().await;
    sink.stop().await;
}
