//! `kagi.v1.KeystoreAdmin`, the help desk's view and actions (issue 15): what an operator
//! sees of a locked account, the unlock and the revocation, each audited with the operator
//! and the reason; and from the attacker's side, that nobody but the help desk gets in and
//! that an action without a reason changes nothing.

use kagi_proto::v1 as pb;
use kagi_proto::v1::VerifyResult;
use kagi_proto::v1::keystore_admin_client::KeystoreAdminClient;
use tonic::Code;

use crate::helpers::{Backend, TestApp, channel, spawn_app, wrong_code};
use kagi_testkit::both_backends;

both_backends!(
    an_operator_sees_the_lockout_and_unlocks_the_account,
    a_revoked_key_answers_no_key_until_the_user_reissues,
    only_the_help_desk_may_look_or_act,
    an_action_without_a_reason_is_refused_and_changes_nothing,
    the_last_login_is_shown_behind_a_long_trail_of_views,
);

fn context(reason: &str) -> Option<pb::OperatorContext> {
    Some(pb::OperatorContext {
        operator: "ops1".into(),
        reason: reason.into(),
    })
}

async fn admin(app: &TestApp) -> KeystoreAdminClient<tonic::transport::Channel> {
    KeystoreAdminClient::new(channel(app.addr).await)
}

async fn get_account(app: &TestApp, caller: &str) -> Result<pb::GetAccountResponse, tonic::Status> {
    let request = TestApp::as_caller(
        caller,
        pb::GetAccountRequest {
            account_id: "taro".into(),
            operator: "ops1".into(),
        },
    );
    Ok(admin(app).await.get_account(request).await?.into_inner())
}

async fn unlock(app: &TestApp, caller: &str, reason: &str) -> Result<bool, tonic::Status> {
    let request = TestApp::as_caller(
        caller,
        pb::UnlockAccountRequest {
            account_id: "taro".into(),
            context: context(reason),
        },
    );
    Ok(admin(app)
        .await
        .unlock_account(request)
        .await?
        .into_inner()
        .was_locked)
}

async fn revoke(app: &TestApp, caller: &str, reason: &str) -> Result<String, tonic::Status> {
    let request = TestApp::as_caller(
        caller,
        pb::RevokeKeyRequest {
            account_id: "taro".into(),
            context: context(reason),
        },
    );
    Ok(admin(app)
        .await
        .revoke_key(request)
        .await?
        .into_inner()
        .revoked_key_id)
}

async fn lock_out(app: &TestApp, key: &pb::SetupKey) {
    let wrong = wrong_code(app, key);
    for _ in 0..5 {
        app.verify("taro", &wrong).await.unwrap();
    }
    let locked = app.verify("taro", &app.code_for(key, 0)).await.unwrap();
    assert_eq!(locked.result(), VerifyResult::LockedOut);
}

async fn an_operator_sees_the_lockout_and_unlocks_the_account(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let first = app.verify("taro", &app.code_for(&key, -30)).await.unwrap();
    assert_eq!(first.result(), VerifyResult::Accepted);
    app.clock.advance(std::time::Duration::from_secs(60));
    let wrong = wrong_code(&app, &key);
    for _ in 0..2 {
        app.verify("taro", &wrong).await.unwrap();
    }
    let before = get_account(&app, "helpdesk").await.unwrap();
    assert_eq!(
        before.lockout.unwrap().failures,
        2,
        "two wrong codes so far"
    );
    lock_out(&app, &key).await;

    let seen = get_account(&app, "helpdesk").await.unwrap();

    assert!(seen.enrolled);
    assert_eq!(seen.key_id, key.key_id);
    assert!(!seen.reissued);
    assert_eq!(seen.algorithm(), pb::HashAlgorithm::Sha1);
    assert_eq!((seen.digits, seen.period_seconds), (6, 30));
    let lockout = seen.lockout.unwrap();
    assert_eq!(lockout.times_locked, 1);
    assert!(lockout.locked_until.is_some(), "locked until is shown");
    assert!(seen.last_login_at.is_some());
    assert_eq!(seen.last_login_drift_steps, -1, "the phone ran 30 s behind");
    let newest: Vec<&str> = seen
        .recent_events
        .iter()
        .take(2)
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(newest, ["admin_view", "lockout"]);

    let was_locked = unlock(&app, "helpdesk", "本人から電話、学生証で確認")
        .await
        .unwrap();

    assert!(was_locked);
    let reply = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(
        reply.result(),
        VerifyResult::Accepted,
        "the user logs in again"
    );
    let events = app.audit("taro").await;
    let unlocked = events.iter().find(|e| e.action == "admin_unlock").unwrap();
    assert_eq!(unlocked.caller, "helpdesk");
    assert_eq!(
        unlocked.detail,
        "operator=ops1 reason=本人から電話、学生証で確認"
    );
    let viewed = events.iter().find(|e| e.action == "admin_view").unwrap();
    assert_eq!(
        viewed.detail, "operator=ops1",
        "who looked is on the trail too"
    );
}

/// The page's last login is the newest accepted code however many views and looks came
/// after it, and its recent events are the account's own, not another's.
async fn the_last_login_is_shown_behind_a_long_trail_of_views(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    app.enroll("jiro").await;
    let login = app.verify("taro", &app.code_for(&key, 30)).await.unwrap();
    assert_eq!(login.result(), VerifyResult::Accepted);
    for _ in 0..15 {
        app.current_key("taro").await.unwrap();
        app.current_key("jiro").await.unwrap();
        get_account(&app, "helpdesk").await.unwrap();
    }

    let seen = get_account(&app, "helpdesk").await.unwrap();

    assert!(
        seen.last_login_at.is_some(),
        "the login behind 31 newer events of the account"
    );
    assert_eq!(seen.last_login_drift_steps, 1, "the phone ran 30 s ahead");
    assert_eq!(seen.recent_events.len(), 20);
    assert!(seen.recent_events.iter().all(|e| e.account_id == "taro"));
    assert_eq!(
        seen.recent_events[0].action, "admin_view",
        "this look first"
    );
    assert!(seen.recent_events.iter().all(|e| e.action != "verify"));
}

async fn a_revoked_key_answers_no_key_until_the_user_reissues(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let revoked = revoke(&app, "helpdesk", "phone stolen, reported by the user")
        .await
        .unwrap();

    assert_eq!(revoked, key.key_id);
    let login = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(
        login.result(),
        VerifyResult::NoKey,
        "the old key opens nothing"
    );
    let menu1 = app.current_key("taro").await.unwrap_err();
    assert_eq!(menu1.code(), Code::NotFound, "menu 1 shows nothing");
    let checked = app
        .client
        .clone()
        .check_authenticator(TestApp::as_caller(
            "portal",
            pb::CheckAuthenticatorRequest {
                account_id: "taro".into(),
                code: app.code_for(&key, 0),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        checked.outcome(),
        pb::CheckAuthenticatorOutcome::NoKey,
        "\"check my authenticator\" finds no key either"
    );
    let seen = get_account(&app, "helpdesk").await.unwrap();
    assert!(!seen.enrolled);
    assert!(seen.revoked_at.is_some());
    let again = revoke(&app, "helpdesk", "twice").await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    app.clock.advance(std::time::Duration::from_secs(60));
    let reissued = app.rotate("taro", "reset-1").await.unwrap().key.unwrap();

    let login = app
        .verify("taro", &app.code_for(&reissued, 0))
        .await
        .unwrap();
    assert_eq!(
        login.result(),
        VerifyResult::Accepted,
        "menu 2 brings it back"
    );
    let seen = get_account(&app, "helpdesk").await.unwrap();
    assert!(seen.enrolled && seen.reissued && seen.revoked_at.is_none());
    let events = app.audit("taro").await;
    let audited = events.iter().find(|e| e.action == "admin_revoke").unwrap();
    assert_eq!(audited.key_id, key.key_id);
    assert!(audited.detail.contains("operator=ops1 reason=phone stolen"));
}

async fn only_the_help_desk_may_look_or_act(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    lock_out(&app, &key).await;

    for caller in ["portal", "login", "reset", "admin"] {
        assert_eq!(
            get_account(&app, caller).await.unwrap_err().code(),
            Code::PermissionDenied,
            "{caller} may not look"
        );
        assert_eq!(
            unlock(&app, caller, "because").await.unwrap_err().code(),
            Code::PermissionDenied,
            "{caller} may not unlock"
        );
        assert_eq!(
            revoke(&app, caller, "because").await.unwrap_err().code(),
            Code::PermissionDenied,
            "{caller} may not revoke"
        );
    }
    let anonymous = admin(&app)
        .await
        .unlock_account(pb::UnlockAccountRequest {
            account_id: "taro".into(),
            context: context("because"),
        })
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let still = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(
        still.result(),
        VerifyResult::LockedOut,
        "nothing was unlocked"
    );
    assert!(app.current_key("taro").await.is_ok(), "nothing was revoked");
    assert!(
        !app.audit("taro")
            .await
            .iter()
            .any(|e| e.action.starts_with("admin_")),
        "refused calls leave no admin event"
    );
}

async fn an_action_without_a_reason_is_refused_and_changes_nothing(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    lock_out(&app, &key).await;

    for reason in ["", "   ", "line one\nforged=line"] {
        let refused = unlock(&app, "helpdesk", reason).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{reason:?}");
        assert!(refused.message().contains("reason is required"));
        let refused = revoke(&app, "helpdesk", reason).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{reason:?}");
    }
    let no_context = admin(&app)
        .await
        .revoke_key(TestApp::as_caller(
            "helpdesk",
            pb::RevokeKeyRequest {
                account_id: "taro".into(),
                context: None,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(no_context.code(), Code::InvalidArgument);

    let still = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(still.result(), VerifyResult::LockedOut, "still locked");
    assert_eq!(app.current_key("taro").await.unwrap().key_id, key.key_id);
}
