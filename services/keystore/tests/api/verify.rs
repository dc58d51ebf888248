//! `VerifyCode`, what the university's login calls on every off-campus login: clock skew,
//! replay and brute force, seen from the user's and the attacker's side.

use std::sync::Arc;
use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::VerifyResult;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::ManualClock;
use tonic::transport::Channel;

use crate::helpers::{
    Backend, TestApp, TestDatabase, advance, spawn_app, test_settings, wrong_code,
};
use kagi_testkit::both_backends;

both_backends!(
    a_phone_slightly_off_utc_is_accepted_and_its_drift_reported,
    a_phone_two_steps_off_is_rejected,
    a_code_is_accepted_once_and_then_reported_as_replayed,
    concurrent_logins_with_one_code_yield_exactly_one_acceptance,
    replicas_sharing_the_database_accept_a_code_once,
    five_wrong_codes_lock_verification_for_five_minutes,
    the_lock_survives_a_restart_and_binds_every_replica,
    repeat_offenders_are_locked_longer,
    concurrent_guesses_cannot_exceed_the_failure_limit,
    an_account_without_a_key_gets_no_key,
    every_accepted_login_is_audited_once_with_its_drift,
    a_code_typed_in_full_width_digits_with_a_space_is_accepted,
);

/// Issue 14, item 3: a Japanese IME types 「３６６　２６２」; the login passes it on as typed
/// and the keystore reads the digits meant.
async fn a_code_typed_in_full_width_digits_with_a_space_is_accepted(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);
    let full_width: String = code
        .chars()
        .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap())
        .collect();
    let typed = format!("{}\u{3000}{}", &full_width[..9], &full_width[9..]);

    let reply = app.verify("taro", &typed).await.unwrap();

    assert_eq!(reply.result(), VerifyResult::Accepted, "{typed}");
    let replayed = app.verify("taro", &code).await.unwrap();
    assert_eq!(
        replayed.result(),
        VerifyResult::Replayed,
        "the same code as the ASCII one"
    );
}

async fn a_phone_slightly_off_utc_is_accepted_and_its_drift_reported(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let behind = app.verify("taro", &app.code_for(&key, -30)).await.unwrap();
    assert_eq!(
        (behind.result(), behind.drift_steps),
        (VerifyResult::Accepted, -1)
    );

    advance(&app, Duration::from_secs(30));
    let ahead = app.verify("taro", &app.code_for(&key, 30)).await.unwrap();
    assert_eq!(
        (ahead.result(), ahead.drift_steps),
        (VerifyResult::Accepted, 1)
    );
}

async fn a_phone_two_steps_off_is_rejected(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    let reply = app.verify("taro", &app.code_for(&key, -60)).await.unwrap();

    assert_eq!(reply.result(), VerifyResult::Rejected);
    assert_eq!(reply.attempts_remaining, 4);
}

async fn a_code_is_accepted_once_and_then_reported_as_replayed(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);

    assert_eq!(
        app.verify("taro", &code).await.unwrap().result(),
        VerifyResult::Accepted
    );
    assert_eq!(
        app.verify("taro", &code).await.unwrap().result(),
        VerifyResult::Replayed
    );
    // An older step is a replay too, even though it was never used itself.
    assert_eq!(
        app.verify("taro", &app.code_for(&key, -30))
            .await
            .unwrap()
            .result(),
        VerifyResult::Replayed
    );
    // The next step's code is fresh.
    advance(&app, Duration::from_secs(30));
    assert_eq!(
        app.verify("taro", &app.code_for(&key, 0))
            .await
            .unwrap()
            .result(),
        VerifyResult::Accepted
    );
}

fn count(results: &[VerifyResult], wanted: VerifyResult) -> usize {
    results.iter().filter(|r| **r == wanted).count()
}

/// `n` simultaneous logins of `account` with `code`, spread over `clients` (one per replica).
async fn verify_all(
    clients: &[KeystoreClient<Channel>],
    account: &str,
    code: &str,
    n: usize,
) -> Vec<VerifyResult> {
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let mut client = clients[i % clients.len()].clone();
            let request = pb::VerifyCodeRequest {
                account_id: account.into(),
                code: code.into(),
            };
            tokio::spawn(async move {
                client
                    .verify_code(TestApp::as_caller("login", request))
                    .await
                    .unwrap()
                    .into_inner()
                    .result()
            })
        })
        .collect();
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    results
}

async fn concurrent_logins_with_one_code_yield_exactly_one_acceptance(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let code = app.code_for(&key, 0);

    let clients = [app.client.clone()];
    let results = verify_all(&clients, "taro", &code, 32).await;

    assert_eq!(count(&results, VerifyResult::Accepted), 1, "{results:?}");
    assert_eq!(count(&results, VerifyResult::Replayed), 31);
}

async fn replicas_sharing_the_database_accept_a_code_once(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let replicas = [
        TestApp::start(&test_settings(&db), clock.clone()).await,
        TestApp::start(&test_settings(&db), clock.clone()).await,
        TestApp::start(&test_settings(&db), clock).await,
    ];
    let key = replicas[0].enroll("taro").await;
    let code = replicas[0].code_for(&key, 0);

    let clients: Vec<_> = replicas.iter().map(|r| r.client.clone()).collect();
    let results = verify_all(&clients, "taro", &code, 24).await;

    assert_eq!(count(&results, VerifyResult::Accepted), 1, "{results:?}");
}

async fn five_wrong_codes_lock_verification_for_five_minutes(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let wrong = wrong_code(&app, &key);

    for remaining in (1..=4).rev() {
        let reply = app.verify("taro", &wrong).await.unwrap();
        assert_eq!(
            (reply.result(), reply.attempts_remaining),
            (VerifyResult::Rejected, remaining)
        );
    }
    let fifth = app.verify("taro", &wrong).await.unwrap();
    assert_eq!(fifth.result(), VerifyResult::Rejected);
    let until = fifth.locked_until.unwrap().seconds;
    assert!(
        (until - app.clock_unix() - 300).abs() <= 1,
        "locked for 5 minutes"
    );

    // Even the right code is refused while locked.
    let locked = app.verify("taro", &app.code_for(&key, 0)).await.unwrap();
    assert_eq!(locked.result(), VerifyResult::LockedOut);
    assert_eq!(locked.locked_until.unwrap().seconds, until);

    advance(&app, Duration::from_secs(301));
    assert_eq!(
        app.verify("taro", &app.code_for(&key, 0))
            .await
            .unwrap()
            .result(),
        VerifyResult::Accepted
    );
    let events: Vec<String> = app
        .audit("taro")
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert_eq!(events.iter().filter(|a| *a == "verify_failed").count(), 5);
    assert_eq!(events.iter().filter(|a| *a == "lockout").count(), 1);
}

async fn lock(app: &TestApp, key: &pb::SetupKey) {
    let wrong = wrong_code(app, key);
    for _ in 0..5 {
        app.verify("taro", &wrong).await.unwrap();
    }
}

async fn the_lock_survives_a_restart_and_binds_every_replica(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let first = TestApp::start(&test_settings(&db), clock.clone()).await;
    let key = first.enroll("taro").await;
    lock(&first, &key).await;
    let other = TestApp::start(&test_settings(&db), clock.clone()).await;
    first.stop().await;

    let restarted = TestApp::start(&test_settings(&db), clock).await;

    let code = restarted.code_for(&key, 0);
    assert_eq!(
        restarted.verify("taro", &code).await.unwrap().result(),
        VerifyResult::LockedOut
    );
    assert_eq!(
        other.verify("taro", &code).await.unwrap().result(),
        VerifyResult::LockedOut
    );
}

async fn repeat_offenders_are_locked_longer(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    lock(&app, &key).await;
    advance(&app, Duration::from_secs(301));

    let wrong = wrong_code(&app, &key);
    let mut last = None;
    for _ in 0..5 {
        last = Some(app.verify("taro", &wrong).await.unwrap());
    }

    let until = last.unwrap().locked_until.unwrap().seconds;
    assert!(
        (until - app.clock_unix() - 600).abs() <= 1,
        "second lockout lasts 10 minutes"
    );
}

async fn concurrent_guesses_cannot_exceed_the_failure_limit(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let wrong = wrong_code(&app, &key);

    let clients = [app.client.clone()];
    let results = verify_all(&clients, "taro", &wrong, 40).await;

    assert_eq!(count(&results, VerifyResult::Rejected), 5, "{results:?}");
    assert_eq!(count(&results, VerifyResult::LockedOut), 35);
    let failures = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "verify_failed")
        .count();
    assert_eq!(failures, 5, "every counted failure audited once");
}

async fn an_account_without_a_key_gets_no_key(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    assert_eq!(
        app.verify("nobody", "123456").await.unwrap().result(),
        VerifyResult::NoKey
    );
}

/// The audit trail shows each successful login (who asked, which key, the phone's drift),
/// exactly once even when a stolen code races the user's: one acceptance, one row.
async fn every_accepted_login_is_audited_once_with_its_drift(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;
    let behind = app.code_for(&key, -30);
    assert_eq!(
        app.verify("taro", &behind).await.unwrap().drift_steps,
        -1,
        "a phone 30 s behind"
    );
    advance(&app, Duration::from_secs(60));
    let code = app.code_for(&key, 0);
    let results = verify_all(std::slice::from_ref(&app.client), "taro", &code, 16).await;
    assert_eq!(count(&results, VerifyResult::Accepted), 1, "{results:?}");

    let accepted: Vec<pb::AuditEvent> = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "verify")
        .collect();
    let details: Vec<&str> = accepted.iter().map(|e| e.detail.as_str()).collect();
    assert_eq!(
        details,
        ["accepted drift=0", "accepted drift=-1"],
        "newest first, one row per acceptance"
    );
    assert!(
        accepted
            .iter()
            .all(|e| e.caller == "login" && e.key_id == key.key_id && e.trace_id.len() == 32)
    );
    assert!(
        accepted.iter().all(|e| !e.detail.contains(&code)),
        "no code in the trail"
    );
}
