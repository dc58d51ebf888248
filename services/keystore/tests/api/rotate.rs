//! `RotateKey`, the end of the reissue saga: the old key stops working, the new one works,
//! and a retried call rotates nothing.

use std::time::Duration;

use kagi_proto::v1::VerifyResult;
use tonic::Code;

use crate::helpers::{Backend, advance, captured_logs, dump_database, spawn_app};
use kagi_testkit::both_backends;

both_backends!(
    after_reissue_the_old_key_stops_working_and_the_new_one_works,
    a_retried_rotation_returns_the_same_key_and_rotates_nothing,
    concurrent_retries_of_one_rotation_agree,
    the_old_secret_is_wiped_but_its_metadata_kept,
    rotating_an_account_without_a_key_is_not_found,
    a_replay_within_ten_minutes_shows_the_same_key_and_is_audited_as_a_view,
    a_replay_after_ten_minutes_is_refused_without_the_secret,
    the_idempotency_key_never_reaches_a_log_line,
);

async fn after_reissue_the_old_key_stops_working_and_the_new_one_works(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let old = app.enroll("taro").await;

    let rotated = app.rotate("taro", "reset-1").await.unwrap();
    let new = rotated.key.unwrap();

    assert_eq!(rotated.previous_key_id, old.key_id);
    assert!(!rotated.replayed);
    assert_ne!(new.secret_base32, old.secret_base32);
    assert_eq!(app.current_key("taro").await.unwrap().key_id, new.key_id);
    let old_code = app.code_for(&old, 0);
    let new_code = app.code_for(&new, 0);
    assert_ne!(old_code, new_code);
    assert_eq!(
        app.verify("taro", &old_code).await.unwrap().result(),
        VerifyResult::Rejected
    );
    assert_eq!(
        app.verify("taro", &new_code).await.unwrap().result(),
        VerifyResult::Accepted
    );
}

async fn a_retried_rotation_returns_the_same_key_and_rotates_nothing(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("taro").await;

    let first = app.rotate("taro", "reset-1").await.unwrap();
    let retry = app.rotate("taro", "reset-1").await.unwrap();

    assert!(retry.replayed);
    assert_eq!(
        retry.key.as_ref().unwrap().key_id,
        first.key.as_ref().unwrap().key_id
    );
    assert_eq!(
        retry.key.unwrap().secret_base32,
        first.key.unwrap().secret_base32
    );
    let rotations = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "rotate")
        .count();
    assert_eq!(rotations, 1);

    // A later reissue under a new key supersedes it; replaying the first is then refused.
    app.rotate("taro", "reset-2").await.unwrap();
    let stale = app.rotate("taro", "reset-1").await.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition);
}

async fn concurrent_retries_of_one_rotation_agree(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("taro").await;

    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                let request = crate::helpers::TestApp::as_caller(
                    "reset",
                    kagi_proto::v1::RotateKeyRequest {
                        account_id: "taro".into(),
                        idempotency_key: "reset-1".into(),
                    },
                );
                client
                    .rotate_key(request)
                    .await
                    .unwrap()
                    .into_inner()
                    .key
                    .unwrap()
                    .key_id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for call in calls {
        ids.push(call.await.unwrap());
    }

    ids.dedup();
    assert_eq!(ids.len(), 1, "one new key for one idempotency key");
    assert_eq!(app.current_key("taro").await.unwrap().key_id, ids[0]);
    assert_eq!(
        app.audit("taro")
            .await
            .into_iter()
            .filter(|e| e.action == "rotate")
            .count(),
        1
    );
}

async fn the_old_secret_is_wiped_but_its_metadata_kept(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let old = app.enroll("taro").await;
    let old_sealed = {
        let pool = kagi_keystore::store::Db::connect(&db.url, 1).await.unwrap();
        let current = pool
            .current_key(&kagi_keystore::domain::AccountId::parse("taro").unwrap())
            .await
            .unwrap()
            .unwrap();
        pool.close().await;
        current.ciphertext
    };
    app.rotate("taro", "reset-1").await.unwrap();

    let pool = kagi_keystore::store::Db::connect(&db.url, 1).await.unwrap();
    let record = pool
        .key_record(&old.key_id)
        .await
        .unwrap()
        .expect("metadata kept for audit");
    assert!(record.destroyed_at.is_some());
    assert_eq!(
        (record.account_id.as_str(), record.digits, record.period),
        ("taro", 6, 30)
    );
    pool.close().await;
    let hex: String = old_sealed.iter().map(|b| format!("{b:02x}")).collect();
    for (table, content) in dump_database(&db).await {
        assert!(
            !content
                .windows(old_sealed.len())
                .any(|w| w == old_sealed.as_slice()),
            "old ciphertext left in {table}"
        );
        assert!(
            !String::from_utf8_lossy(&content).contains(&hex),
            "old ciphertext left in {table}"
        );
    }
}

async fn rotating_an_account_without_a_key_is_not_found(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    assert_eq!(
        app.rotate("nobody", "reset-1").await.unwrap_err().code(),
        Code::NotFound
    );
}

/// The reset page reloaded within its 10 minutes: the same new key, and the audit trail
/// shows every time it was handed out again.
async fn a_replay_within_ten_minutes_shows_the_same_key_and_is_audited_as_a_view(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("taro").await;
    let first = app.rotate("taro", "saga-within").await.unwrap();
    let views_before = views(&app, "taro").await;

    advance(&app, Duration::from_secs(9 * 60 + 59));
    let retry = app.rotate("taro", "saga-within").await.unwrap();

    assert!(retry.replayed);
    let (first, retry) = (first.key.unwrap(), retry.key.unwrap());
    assert_eq!(retry.key_id, first.key_id);
    assert_eq!(retry.secret_base32, first.secret_base32);
    let views_after = views(&app, "taro").await;
    assert_eq!(views_after.len(), views_before.len() + 1, "{views_after:?}");
    let (key_id, caller, detail) = &views_after[0];
    assert_eq!(key_id, &first.key_id);
    assert_eq!(caller, "reset");
    assert_eq!(detail, "rotation_replay");
}

/// Whoever learns a saga ID later cannot read the current secret with it: after the
/// 10 minutes a replay is refused, the secret absent, nothing audited as a view and nothing
/// rotated; the key itself still works.
async fn a_replay_after_ten_minutes_is_refused_without_the_secret(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("taro").await;
    let first = app.rotate("taro", "saga-late").await.unwrap().key.unwrap();
    let views_before = views(&app, "taro").await;

    advance(&app, Duration::from_secs(10 * 60));
    let late = app.rotate("taro", "saga-late").await.unwrap_err();

    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        late.message(),
        "the key issued under this idempotency key can no longer be shown by a retry; view the current key instead"
    );
    assert!(!late.message().contains(&first.secret_base32));
    assert_eq!(views(&app, "taro").await, views_before);
    let rotations = app
        .audit("taro")
        .await
        .into_iter()
        .filter(|e| e.action == "rotate")
        .count();
    assert_eq!(rotations, 1);
    assert_eq!(app.current_key("taro").await.unwrap().key_id, first.key_id);
    assert_eq!(
        app.verify("taro", &app.code_for(&first, 0))
            .await
            .unwrap()
            .result(),
        VerifyResult::Accepted
    );
}

/// The idempotency key (the reset's saga ID) is what a replay needs: it appears in no log
/// line or span field, whether the call rotates, replays or is refused.
async fn the_idempotency_key_never_reaches_a_log_line(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    app.enroll("hanako").await;
    let saga_id = format!("saga-{}", uuid_like(backend));
    app.rotate("hanako", &saga_id).await.unwrap();
    app.rotate("hanako", &saga_id).await.unwrap();
    advance(&app, Duration::from_secs(10 * 60));
    app.rotate("hanako", &saga_id).await.unwrap_err();

    let logs = captured_logs();
    assert!(
        logs.contains("rotation replay refused"),
        "the capture holds this test's lines"
    );
    assert!(!logs.contains(&saga_id), "the saga ID was logged");
}

/// A saga ID no other test uses (the log capture is shared by the whole binary).
fn uuid_like(backend: Backend) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{backend:?}-{nanos:x}-4e1d")
}

/// The account's "view" audit events, newest first: (key_id, caller, detail).
async fn views(app: &crate::helpers::TestApp, account: &str) -> Vec<(String, String, String)> {
    app.audit(account)
        .await
        .into_iter()
        .filter(|e| e.action == "view")
        .map(|e| (e.key_id, e.caller, e.detail))
        .collect()
}
