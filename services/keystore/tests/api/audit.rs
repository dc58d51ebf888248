//! The audit trail: every enroll, view, rotation, failed verification and lockout, with the
//! caller and the trace of the request, readable over gRPC and by the CLI.

use kagi_proto::v1 as pb;

use crate::helpers::{Backend, TestApp, spawn_app, wrong_code};
use kagi_testkit::both_backends;

both_backends!(
    every_sensitive_action_is_audited_with_caller_and_trace,
    a_view_names_the_key_shown_and_no_key_shown_is_no_view,
    fifty_views_at_once_are_each_shown_and_audited_once,
    the_trail_pages_newest_first
);

/// Fifty users opening menu 1 at the same moment: every one is shown the key and every
/// view is recorded, none lost to the writes' contention and none twice.
async fn fifty_views_at_once_are_each_shown_and_audited_once(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let mut views = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let mut client = app.client.clone();
        let request = TestApp::as_caller(
            "portal",
            pb::GetCurrentKeyRequest {
                account_id: "taro".into(),
                forms: vec![pb::KeyForm::QrPng.into()],
            },
        );
        views.spawn(async move { client.get_current_key(request).await });
    }
    let shown = views.join_all().await;

    assert_eq!(shown.len(), 50);
    for reply in shown {
        let key_shown = reply.unwrap().into_inner().key.unwrap();
        assert_eq!(key_shown.key_id, key.key_id);
        assert!(!key_shown.qr_png.is_empty());
    }
    let audited = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "view" && e.key_id == key.key_id)
        .count();
    assert_eq!(audited, 50);
}

/// Menu 1's view is read and audited in one command: the row names the key that was
/// shown, and an account without a key (nothing shown) leaves no view in the trail.
async fn a_view_names_the_key_shown_and_no_key_shown_is_no_view(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let shown = app.current_key("taro").await.unwrap();
    let refused = app.current_key("nobody").await.unwrap_err();

    assert_eq!(shown.key_id, key.key_id);
    assert_eq!(refused.code(), tonic::Code::NotFound);
    let views: Vec<_> = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "view")
        .collect();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].key_id, key.key_id);
    assert_eq!(views[0].caller, "portal");
    assert!(app.audit("nobody").await.is_empty());
}

async fn every_sensitive_action_is_audited_with_caller_and_trace(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    app.current_key("taro").await.unwrap();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut traced = TestApp::as_caller(
        "reset",
        pb::RotateKeyRequest {
            account_id: "taro".into(),
            idempotency_key: "r1".into(),
        },
    );
    traced.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    app.client.clone().rotate_key(traced).await.unwrap();
    let wrong = wrong_code(&app, &key);
    for _ in 0..5 {
        app.verify("taro", &wrong).await.unwrap();
    }

    let events = app.audit("taro").await;

    let actions: Vec<(&str, &str)> = events
        .iter()
        .rev()
        .map(|e| (e.action.as_str(), e.caller.as_str()))
        .collect();
    let mut expected = vec![
        ("enroll", "onboarding"),
        ("view", "portal"),
        ("rotate", "reset"),
    ];
    expected.extend(std::iter::repeat_n(("verify_failed", "login"), 5));
    expected.push(("lockout", "login"));
    assert_eq!(actions, expected);
    let rotation = events.iter().find(|e| e.action == "rotate").unwrap();
    assert_eq!(
        rotation.trace_id, trace_id,
        "the caller's W3C trace is recorded"
    );
    assert!(
        rotation.detail.contains(&key.key_id),
        "the destroyed key is named"
    );
    assert!(
        events.iter().all(|e| e.trace_id.len() == 32),
        "every event has a trace id"
    );
    assert!(
        events
            .iter()
            .all(|e| e.at.is_some() && e.account_id == "taro")
    );
}

async fn the_trail_pages_newest_first(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    for account in ["a1", "a2", "a3"] {
        app.enroll(account).await;
    }
    let page = |before| {
        let mut client = app.client.clone();
        let request = TestApp::as_caller(
            "admin",
            pb::ListAuditEventsRequest {
                account_id: String::new(),
                page_size: 2,
                before,
            },
        );
        async move {
            client
                .list_audit_events(request)
                .await
                .unwrap()
                .into_inner()
        }
    };

    let first = page(0).await;
    let second = page(first.next_before).await;

    let accounts: Vec<String> = first
        .events
        .iter()
        .chain(&second.events)
        .map(|e| e.account_id.clone())
        .collect();
    assert_eq!(accounts, ["a3", "a2", "a1"]);
    assert_eq!(second.next_before, 0, "no third page");
}
