//! `CheckAuthenticator`, "check my authenticator" behind the portal's menu 1 and
//! reset-complete page: the manual's three answers (ready, clock off by N, another key),
//! and that a check is never a login: it uses no step, counts no failure, leaves the
//! lockout alone, has its own limit, answers only the portal and is audited.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::{CheckAuthenticatorOutcome as Outcome, ErrorReason, VerifyResult};
use kagi_runtime::ManualClock;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{
    Backend, TestApp, TestDatabase, advance, spawn_app, test_settings, wrong_code,
};
use kagi_testkit::both_backends;
use kagi_testkit::metrics::{promtool_check, scrape, scrape_text, value_with};

both_backends!(
    a_device_with_the_current_key_and_a_right_clock_is_ready,
    a_clock_minutes_fast_or_slow_is_reported_with_its_offset,
    a_device_still_holding_the_old_key_matches_nothing,
    a_check_does_not_use_up_the_code_for_the_login,
    checks_never_count_as_failed_logins_nor_touch_the_lockout,
    the_sixth_check_in_an_hour_is_refused_with_when_to_retry,
    simultaneous_checks_over_two_replicas_pass_only_the_allowance,
    only_the_portal_may_check,
    every_check_is_audited_with_its_answer_and_no_code,
    a_malformed_code_is_refused_and_not_counted,
    an_account_without_a_key_gets_no_key,
    each_answer_and_refusal_is_counted_by_outcome,
);

async fn check_with(
    client: &KeystoreClient<Channel>,
    caller: &str,
    account: &str,
    code: &str,
) -> Result<pb::CheckAuthenticatorResponse, tonic::Status> {
    let request = TestApp::as_caller(
        caller,
        pb::CheckAuthenticatorRequest {
            account_id: account.into(),
            code: code.into(),
        },
    );
    Ok(client
        .clone()
        .check_authenticator(request)
        .await?
        .into_inner())
}

async fn check(
    app: &TestApp,
    account: &str,
    code: &str,
) -> Result<pb::CheckAuthenticatorResponse, tonic::Status> {
    check_with(&app.client, "portal", account, code).await
}

/// A code that is the key's at no step within ±31 of now: the diagnosis window and more.
fn far_wrong_code(app: &TestApp, key: &pb::SetupKey) -> String {
    let near: Vec<String> = (-31..=31).map(|d| app.code_for(key, d * 30)).collect();
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

async fn a_device_with_the_current_key_and_a_right_clock_is_ready(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let now = check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
    let a_step_behind = check(&app, "taro", &app.code_for(&key, -30)).await.unwrap();

    assert_eq!(
        (now.outcome(), now.drift_steps, now.offset_seconds),
        (Outcome::Ready, 0, 0)
    );
    assert_eq!(now.checks_remaining, 4, "5 an hour, one used");
    // Within the login's ±1 step the device is ready, as the login would accept it.
    assert_eq!(
        (a_step_behind.outcome(), a_step_behind.drift_steps),
        (Outcome::Ready, -1)
    );
}

async fn a_clock_minutes_fast_or_slow_is_reported_with_its_offset(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let fast = check(&app, "taro", &app.code_for(&key, 120)).await.unwrap();
    let slow = check(&app, "taro", &app.code_for(&key, -600))
        .await
        .unwrap();
    let edge = check(&app, "taro", &app.code_for(&key, -900))
        .await
        .unwrap();

    assert_eq!(
        (fast.outcome(), fast.drift_steps, fast.offset_seconds),
        (Outcome::ClockSkewed, 4, 120),
        "2 minutes fast"
    );
    assert_eq!(
        (slow.outcome(), slow.drift_steps, slow.offset_seconds),
        (Outcome::ClockSkewed, -20, -600),
        "10 minutes slow"
    );
    assert_eq!(
        (edge.outcome(), edge.offset_seconds),
        (Outcome::ClockSkewed, -900),
        "15 minutes is still inside the diagnosis window"
    );
    // The login itself still refuses such a device: the window is the check's only.
    let login = app.verify("taro", &app.code_for(&key, 120)).await.unwrap();
    assert_eq!(login.result(), VerifyResult::Rejected);
}

async fn a_device_still_holding_the_old_key_matches_nothing(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let old = app.enroll("taro").await;
    app.rotate("taro", "reissue-1").await.unwrap();

    let reply = check(&app, "taro", &app.code_for(&old, 0)).await.unwrap();

    assert_eq!(reply.outcome(), Outcome::NoMatch);
    assert_eq!((reply.drift_steps, reply.offset_seconds), (0, 0));
    // A clock off by more than the window cannot be told from another key.
    let key = app.current_key("taro").await.unwrap();
    let an_hour_off = check(&app, "taro", &app.code_for(&key, 3600))
        .await
        .unwrap();
    assert_eq!(an_hour_off.outcome(), Outcome::NoMatch);
}

async fn a_check_does_not_use_up_the_code_for_the_login(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);

    assert_eq!(
        check(&app, "taro", &code).await.unwrap().outcome(),
        Outcome::Ready
    );
    let login = app.verify("taro", &code).await.unwrap();

    assert_eq!(
        login.result(),
        VerifyResult::Accepted,
        "the same code logs in after the check"
    );
    // And a code the login used still checks as ready: the check only diagnoses.
    assert_eq!(
        check(&app, "taro", &code).await.unwrap().outcome(),
        Outcome::Ready
    );
}

async fn checks_never_count_as_failed_logins_nor_touch_the_lockout(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let wrong = far_wrong_code(&app, &key);

    // Four wrong logins leave one before the lock; no-match checks in between change nothing.
    for _ in 0..4 {
        app.verify("taro", &wrong_code(&app, &key)).await.unwrap();
    }
    for _ in 0..3 {
        let reply = check(&app, "taro", &wrong).await.unwrap();
        assert_eq!(reply.outcome(), Outcome::NoMatch);
    }
    let fifth_login = app.verify("taro", &wrong_code(&app, &key)).await.unwrap();
    assert_eq!(
        (fifth_login.result(), fifth_login.attempts_remaining),
        (VerifyResult::Rejected, 0),
        "the fifth wrong login locks, not a check before it"
    );
    let until = fifth_login.locked_until.unwrap();

    // Locked out, the user can still diagnose, and the check does not lift the lock.
    let reply = check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(reply.outcome(), Outcome::Ready);
    let during = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(
        (during.result(), during.locked_until),
        (VerifyResult::LockedOut, Some(until)),
        "the same lock, neither lifted nor extended"
    );
    // Once the 5 minutes are over, the code the check read logs in.
    advance(&app, Duration::from_secs(301));
    let after = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(after.result(), VerifyResult::Accepted);
}

async fn the_sixth_check_in_an_hour_is_refused_with_when_to_retry(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let first_at_ms = app.clock_unix() * 1000;
    for left in (0..5).rev() {
        let reply = check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
        assert_eq!(reply.checks_remaining, left);
        advance(&app, Duration::from_secs(60));
    }

    let refused = check(&app, "taro", &app.code_for(&key, 0))
        .await
        .unwrap_err();

    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(kagi_proto::reason::of(&refused), ErrorReason::RateLimited);
    let retry_at = kagi_proto::retry_at(&refused).expect("retry-at metadata");
    assert!(
        (retry_at - (first_at_ms + 3_600_000)).abs() < 1000,
        "an hour after the first check: {retry_at} vs {first_at_ms}"
    );
    // The refusal counted nothing: an hour after the first check, checks are back.
    advance(&app, Duration::from_secs(3600 - 5 * 60));
    let again = check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(
        (again.outcome(), again.checks_remaining),
        (Outcome::Ready, 4)
    );
    // Another account's allowance is its own.
    let hanako = app.enroll("hanako").await;
    let other = check(&app, "hanako", &app.code_for(&hanako, 0)).await;
    assert_eq!(other.unwrap().checks_remaining, 4);
}

async fn simultaneous_checks_over_two_replicas_pass_only_the_allowance(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let replicas = [
        TestApp::start(&test_settings(&db), clock.clone()).await,
        TestApp::start(&test_settings(&db), clock).await,
    ];
    let key = replicas[0].enroll("taro").await;
    let code = replicas[0].code_for(&key, 0);

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let client = replicas[i % 2].client.clone();
            let code = code.clone();
            tokio::spawn(async move { check_with(&client, "portal", "taro", &code).await })
        })
        .collect();
    let mut answered = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(reply) => {
                assert_eq!(reply.outcome(), Outcome::Ready);
                answered += 1;
            }
            Err(status) => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
    }

    assert_eq!((answered, refused), (5, 15));
}

async fn only_the_portal_may_check(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);

    for caller in ["login", "reset", "admin", "onboarding"] {
        let refused = check_with(&app.client, caller, "taro", &code)
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{caller}");
    }
    let bare = tonic::Request::new(pb::CheckAuthenticatorRequest {
        account_id: "taro".into(),
        code: code.clone(),
    });
    let anonymous = app.client.clone().check_authenticator(bare).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    // None of them used the allowance.
    assert_eq!(
        check(&app, "taro", &code).await.unwrap().checks_remaining,
        4
    );
}

async fn every_check_is_audited_with_its_answer_and_no_code(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let fast = app.code_for(&key, 120);
    let wrong = far_wrong_code(&app, &key);

    check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
    check(&app, "taro", &fast).await.unwrap();
    check(&app, "taro", &wrong).await.unwrap();

    let checks: Vec<_> = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "check")
        .collect();
    let details: Vec<&str> = checks.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        [
            "no_match",
            "clock_skewed drift=4 offset_secs=120",
            "ready drift=0"
        ],
        "newest first"
    );
    for event in &checks {
        assert_eq!(
            (event.caller.as_str(), event.key_id.as_str()),
            ("portal", key.key_id.as_str())
        );
        assert!(!event.detail.contains(&fast) && !event.detail.contains(&wrong));
    }
    // Not one of them is a login or a failed login.
    let logins = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action.starts_with("verify") || e.action == "lockout")
        .count();
    assert_eq!(logins, 0);
}

async fn a_malformed_code_is_refused_and_not_counted(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    for bad in ["", "12345", "12345a", "1234567", "123456789"] {
        let refused = check(&app, "taro", bad).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{bad:?}");
        assert_eq!(kagi_proto::reason::of(&refused), ErrorReason::CodeFormat);
    }
    let bad_account = check(&app, "taro\u{0}", &app.code_for(&key, 0)).await;
    assert_eq!(bad_account.unwrap_err().code(), Code::InvalidArgument);

    // Full-width digits with a space, as a Japanese IME types them, are the digits meant.
    let code = app.code_for(&key, 0);
    let full_width: String = code
        .chars()
        .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap())
        .collect();
    let typed = format!("{}\u{3000}{}", &full_width[..9], &full_width[9..]);
    let reply = check(&app, "taro", &typed).await.unwrap();
    assert_eq!(
        (reply.outcome(), reply.checks_remaining),
        (Outcome::Ready, 4),
        "the refused ones were not counted"
    );
}

async fn an_account_without_a_key_gets_no_key(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;

    let reply = check(&app, "nobody", "123456").await.unwrap();

    assert_eq!(reply.outcome(), Outcome::NoKey);
    let audited = app.audit("nobody").await;
    assert!(
        audited
            .iter()
            .any(|e| e.action == "check" && e.detail == "no_key"),
        "{audited:?}"
    );
}

async fn each_answer_and_refusal_is_counted_by_outcome(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let mut settings = test_settings(&db);
    settings.metrics.listen_addr = Some("127.0.0.1:0".parse().unwrap());
    settings.check.max_per_account = 2;
    let app = TestApp::start(&settings, Arc::new(ManualClock::new(SystemTime::now()))).await;
    let metrics = app.metrics_addr.expect("metrics are on");
    let key = app.enroll("taro").await;
    let count = |text: &str, outcome: &str| {
        value_with(
            text,
            "keystore_authenticator_checks_total",
            &[("outcome", outcome)],
        )
    };
    let before = scrape(metrics).await;

    check(&app, "taro", &app.code_for(&key, 0)).await.unwrap();
    check(&app, "taro", &app.code_for(&key, 300)).await.unwrap();
    let refused = check(&app, "taro", &app.code_for(&key, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);

    let after = scrape(metrics).await;
    promtool_check(&scrape_text(metrics).await);
    // Process-wide counters (other tests run beside this one): at least this much.
    for outcome in ["READY", "CLOCK_SKEWED", "RATE_LIMITED"] {
        assert!(
            count(&after, outcome) - count(&before, outcome) >= 1.0,
            "{outcome}: {after}"
        );
    }
    assert!(!after.contains("taro"), "no series names the account");
    app.stop().await;
}
