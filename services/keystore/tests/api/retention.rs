//! The audit trail's retention: events older than `[audit] retention_days` are deleted (at
//! start-up and hourly), recent ones stay, and 0 keeps everything.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kagi_keystore::store::NewAuditEvent;
use kagi_runtime::ManualClock;
use kagi_testkit::both_backends;
use kagi_testkit::metrics::{scrape, value};

use crate::helpers::{Backend, TestApp, TestDatabase, test_settings};

const DAY: Duration = Duration::from_secs(86_400);

both_backends!(
    events_past_the_retention_are_purged_and_recent_ones_kept,
    a_retention_of_zero_keeps_every_event,
    a_purge_larger_than_a_batch_deletes_every_expired_event_and_nothing_newer,
    the_service_purges_at_start_up_what_aged_while_it_was_down
);

async fn events_past_the_retention_are_purged_and_recent_ones_kept(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    assert_eq!(settings.audit.retention_days, 400, "the documented default");
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let metrics = app.metrics_addr.unwrap();
    let purged = |text: &str| value(text, "keystore_audit_events_purged_total");
    app.enroll("old").await;
    app.clock.advance(399 * DAY);
    app.enroll("recent").await;

    assert_eq!(app.audit_retention.purge().await.unwrap(), 0);
    assert_eq!(app.audit("old").await.len(), 1, "399 days old: kept");

    let before = scrape(metrics).await;
    app.clock.advance(2 * DAY);
    assert_eq!(app.audit_retention.purge().await.unwrap(), 1);
    assert!(app.audit("old").await.is_empty(), "401 days old: deleted");
    let recent = app.audit("recent").await;
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0].action, "enroll");
    // The account itself is untouched: only its trail ages out.
    app.current_key("old").await.unwrap();
    let after = scrape(metrics).await;
    assert!(purged(&after) - purged(&before) >= 1.0, "{after}");
    app.stop().await;
}

async fn a_retention_of_zero_keeps_every_event(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.audit.retention_days = 0;
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    app.enroll("taro").await;
    app.clock.advance(10 * 366 * DAY);

    assert_eq!(app.audit_retention.purge().await.unwrap(), 0);

    let events = app.audit("taro").await;
    assert_eq!(events.len(), 1, "ten years on, still there");
    app.stop().await;
}

/// A million expired rows are deleted a batch at a time; here 250 in batches of 100, behind
/// a recent row whose `seq` is older (a clock that went back): it and the newer rows stay.
async fn a_purge_larger_than_a_batch_deletes_every_expired_event_and_nothing_newer(
    backend: Backend,
) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    // The store's purge alone, driven here: no background round beside it.
    settings.audit.retention_days = 0;
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let store = app.keystore.db();
    let now = app.clock_unix() * 1000;
    let day_ms = 86_400_000;
    let event = |at_ms: i64, account_id: &'static str| NewAuditEvent {
        at_ms,
        caller: "login",
        action: "verify",
        account_id,
        key_id: "k",
        detail: String::new(),
        trace_id: String::new(),
    };
    store.audit(&event(now, "skewed")).await.unwrap();
    for _ in 0..250 {
        store
            .audit(&event(now - 500 * day_ms, "expired"))
            .await
            .unwrap();
    }
    for _ in 0..100 {
        store.audit(&event(now - day_ms, "recent")).await.unwrap();
    }

    let purged = store
        .purge_audit_before(now - 400 * day_ms, 100)
        .await
        .unwrap();

    assert_eq!(purged, 250);
    let left = store.audit_events(None, 0, 10_000).await.unwrap();
    assert_eq!(left.len(), 101);
    assert!(left.iter().all(|e| e.account_id != "expired"));
    assert_eq!(left.iter().filter(|e| e.account_id == "skewed").count(), 1);
    app.stop().await;
}

async fn the_service_purges_at_start_up_what_aged_while_it_was_down(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let settings = test_settings(&db);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let first = TestApp::start(&settings, Arc::clone(&clock)).await;
    first.enroll("taro").await;
    first.stop().await;
    clock.advance(401 * DAY);

    let again = TestApp::start(&settings, clock).await;

    // The hourly purge's first round runs as the service starts.
    tokio::time::timeout(Duration::from_secs(10), async {
        while !again.audit("taro").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the expired enrollment event is purged at start-up");
    again.current_key("taro").await.unwrap();
    assert_eq!(again.audit("taro").await.len(), 1, "only today's view");
    again.stop().await;
}
