//! Bad input gets INVALID_ARGUMENT with a clear message and changes nothing.

use kagi_proto::v1 as pb;
use tonic::Code;

use crate::helpers::{Backend, TestApp, spawn_app};
use kagi_testkit::both_backends;

both_backends!(
    malformed_requests_are_invalid_argument_and_change_nothing,
    oversized_messages_are_refused
);

async fn malformed_requests_are_invalid_argument_and_change_nothing(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let audit_before = app.audit("taro").await.len();

    for account in ["", "taro yamada", "a:b", "../etc", "名前", &"a".repeat(65)] {
        let request = TestApp::as_caller(
            "onboarding",
            pb::EnrollRequest {
                account_id: account.into(),
            },
        );
        let err = app.client.clone().enroll(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{account:?}");
        assert!(
            err.message().starts_with("account_id must be"),
            "{}",
            err.message()
        );
    }
    for code in [
        "",
        "12345",
        "12345a",
        "1234567",
        "+12345",
        "12 345",
        "１２３４５",
    ] {
        let err = app.verify("taro", code).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{code:?}");
        assert_eq!(err.message(), "code must be exactly 6 ASCII digits");
    }
    let err = app.rotate("taro", "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for ip in ["", "10.0.0", "not-an-ip", "10.0.0.1/8"] {
        let request = TestApp::as_caller(
            "login",
            pb::CheckLoginPolicyRequest {
                client_ip: ip.into(),
            },
        );
        let err = app
            .client
            .clone()
            .check_login_policy(request)
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), err.message()),
            (
                Code::InvalidArgument,
                "client_ip must be an IPv4 or IPv6 address"
            )
        );
    }

    // Nothing changed: same key, no failure counted, nothing audited.
    assert_eq!(app.current_key("taro").await.unwrap().key_id, key.key_id);
    let code = app.code_for(&key, 0);
    let reply = app.verify("taro", &code).await.unwrap();
    assert_eq!(reply.result(), pb::VerifyResult::Accepted);
    let audit_after: Vec<_> = app
        .audit("taro")
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(
        audit_after.len(),
        audit_before + 2,
        "only the view and the accepted code were audited: {audit_after:?}"
    );
    assert_eq!(audit_after[..2], ["verify", "view"]);
}

async fn oversized_messages_are_refused(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("taro").await;

    let huge = "1".repeat(64 * 1024);
    let err = app.verify("taro", &huge).await.unwrap_err();

    // tonic refuses to decode it at all, before any handler runs.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let long_id = "a".repeat(4096);
    let request = TestApp::as_caller(
        "onboarding",
        pb::EnrollRequest {
            account_id: long_id,
        },
    );
    assert_eq!(
        app.client.clone().enroll(request).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}
