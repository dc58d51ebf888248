//! The audit trail: every enroll, view, rotation, failed verification and lockout, with the
//! caller and the trace of the request, readable over gRPC and by the CLI.

use kagi_proto::v1 as pb;

use kagi_proto::v1::keystore_admin_client::KeystoreAdminClient;

use crate::helpers::{Backend, TestApp, channel, spawn_app, wrong_code};
use kagi_testkit::both_backends;

both_backends!(
    every_sensitive_action_is_audited_with_caller_and_trace,
    a_view_names_the_key_shown_and_no_key_shown_is_no_view,
    fifty_views_at_once_are_each_shown_and_audited_once,
    views_of_many_accounts_at_once_each_show_their_own_key,
    one_commit_of_several_views_answers_and_records_each_in_its_place,
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

/// Views of many accounts arriving together share commits (`ViewQueue`): each caller is
/// still shown its own account's key, one without a key gets NOT_FOUND, and the trail
/// holds exactly the views that were shown.
async fn views_of_many_accounts_at_once_each_show_their_own_key(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let mut keys = std::collections::HashMap::new();
    for n in 0..8 {
        let account = format!("user{n}");
        keys.insert(account.clone(), app.enroll(&account).await);
    }

    let mut views = tokio::task::JoinSet::new();
    for _ in 0..4 {
        // user8 and user9 have no key.
        for n in 0..10 {
            let account = format!("user{n}");
            let mut client = app.client.clone();
            let request = TestApp::as_caller(
                "portal",
                pb::GetCurrentKeyRequest {
                    account_id: account.clone(),
                    forms: vec![pb::KeyForm::Text.into()],
                },
            );
            views.spawn(async move { (account, client.get_current_key(request).await) });
        }
    }

    for (account, reply) in views.join_all().await {
        match keys.get(&account) {
            Some(key) => {
                let shown = reply.unwrap().into_inner().key.unwrap();
                assert_eq!(shown.account_id, account);
                assert_eq!(shown.key_id, key.key_id);
                assert_eq!(shown.secret_base32, key.secret_base32);
            }
            None => assert_eq!(reply.unwrap_err().code(), tonic::Code::NotFound),
        }
    }
    for (account, key) in &keys {
        let views: Vec<_> = app
            .audit(account)
            .await
            .into_iter()
            .filter(|e| e.action == "view")
            .collect();
        assert_eq!(views.len(), 4, "{account}");
        assert!(views.iter().all(|e| e.key_id == key.key_id), "{views:?}");
    }
    assert!(app.audit("user8").await.is_empty());
    assert!(app.audit("user9").await.is_empty());
}

/// The store's side of a shared commit, driven directly with one group: the answer has an
/// entry per view in the order asked (the same account twice, one without a key, one
/// revoked between), and only the views answered with a key are recorded.
async fn one_commit_of_several_views_answers_and_records_each_in_its_place(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let taro = app.enroll("taro").await;
    let hanako = app.enroll("hanako").await;
    app.enroll("jiro").await;
    KeystoreAdminClient::new(channel(app.addr).await)
        .revoke_key(TestApp::as_caller(
            "helpdesk",
            pb::RevokeKeyRequest {
                account_id: "jiro".into(),
                context: Some(pb::OperatorContext {
                    operator: "ops1".into(),
                    reason: "phone lost".into(),
                }),
            },
        ))
        .await
        .unwrap();
    let store = kagi_keystore::store::Db::connect(&db.url, 2).await.unwrap();
    let event = |account: &'static str| kagi_keystore::store::NewAuditEvent {
        at_ms: 1,
        caller: "portal",
        action: "view",
        account_id: account,
        key_id: "",
        detail: String::new(),
        trace_id: String::new(),
    };
    let asked: Vec<_> = ["taro", "nobody", "hanako", "taro", "jiro"]
        .into_iter()
        .map(|account| {
            kagi_keystore::store::ViewRequest::new(
                kagi_keystore::domain::AccountId::parse(account).unwrap(),
                &event(account),
            )
        })
        .collect();

    let answered = store.view_current_keys(asked).await.unwrap();

    let shown: Vec<Option<&str>> = answered
        .iter()
        .map(|key| key.as_ref().map(|k| k.key_id.as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            Some(taro.key_id.as_str()),
            None,
            Some(hanako.key_id.as_str()),
            Some(taro.key_id.as_str()),
            None
        ]
    );
    let views_of =
        |events: Vec<pb::AuditEvent>| events.into_iter().filter(|e| e.action == "view").count();
    assert_eq!(views_of(app.audit("taro").await), 2);
    assert_eq!(views_of(app.audit("hanako").await), 1);
    assert_eq!(views_of(app.audit("jiro").await), 0);
    store.close().await;
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
