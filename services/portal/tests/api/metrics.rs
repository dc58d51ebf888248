//! The portal's `/metrics` after real page views: requests by route template (never the
//! raw path) and status, linted by promtool.

use kagi_testkit::metrics::{probe, promtool_check, scrape, scrape_text, value, value_with};

use crate::common::Stack;
use crate::common::http::Client;

/// A free port for `/metrics` (the harness exposes only the portal's page address).
fn free_addr() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_views_are_counted_by_route_template_and_promtool_accepts_them() {
    let metrics = free_addr();
    let stack = Stack::start_with(|s| s.metrics.listen_addr = Some(metrics)).await;
    let mut client = Client::new(stack.portal);

    assert_eq!(client.get("/").await.status, 200);
    assert_eq!(client.get("/").await.status, 200);
    client.get("/reset").await;
    let missing = client.get("/users/taro-secret-path").await;
    assert_eq!(missing.status, 404);

    let text = scrape(metrics).await;
    promtool_check(&scrape_text(metrics).await);
    assert_eq!(
        value(
            &text,
            "http_server_requests_total{method=\"GET\",route=\"/\",status=\"200\"}"
        ),
        2.0,
        "{text}"
    );
    assert!(value_with(&text, "http_server_requests_total", &[("route", "/reset")]) >= 1.0);
    assert_eq!(
        value_with(
            &text,
            "http_server_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        1.0
    );
    assert!(
        !text.contains("taro-secret-path"),
        "raw paths never become labels"
    );
    assert!(value(&text, "db_pool_connections_max") >= 1.0);
    // The kubelet's probes on the same port: alive, and ready while the database answers.
    assert_eq!(probe(metrics, "/livez").await, 200);
    assert_eq!(probe(metrics, "/readyz").await, 200);
}
