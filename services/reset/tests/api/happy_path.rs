//! The manual's menu 2 from start to finish, as the user walks it.

use std::time::Duration;

use kagi_proto::v1 as pb;

use crate::helpers::{Backend, EMAIL, PASSWORD, Stack, captured_logs};
use kagi_testkit::both_backends;

both_backends!(
    the_user_reissues_the_key_and_the_old_key_stops_working,
    a_retried_confirm_shows_the_same_key_again_within_ten_minutes,
    starting_over_cancels_the_reset,
    a_finished_reset_and_its_personal_data_are_deleted_after_thirty_days,
);

async fn the_user_reissues_the_key_and_the_old_key_stops_working(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old_key = stack.account("a23b456c").await;

    // 1. 二要素認証のリセット: ID and password.
    let started = stack
        .start_reset("a23b456c", PASSWORD, "192.0.2.10")
        .await
        .unwrap();
    assert_eq!(started.masked_recipient, "t****@e*****.ac.jp");
    assert!(started.reset_id.len() >= 43, "at least 256 bits, base64url");
    let expires = started.code_expires_at.unwrap().seconds;
    let resend = started.resend_after.unwrap().seconds;
    assert_eq!(expires - resend, 27 * 60, "30 min validity, 3 min resend");

    // 2. 再設定メールを送信: the code from the mail sent to the recovery address.
    let code = stack.sink.code_in_mail(1).await;
    assert_eq!(code.len(), 6);
    assert_eq!(
        stack.sink.mails()[0].to,
        [EMAIL],
        "the code goes to the recovery address"
    );
    let verified = stack.verify(&started.reset_id, &code).await.unwrap();
    assert_eq!(verified.result(), pb::CodeCheck::Verified);
    assert!(verified.confirm_by.is_some());
    assert_eq!(
        stack.get(&started.reset_id).await.state(),
        pb::ResetState::Verified
    );

    // 3. 最終確認 → 4. リセット完了.
    let new_key = stack.confirm(&started.reset_id).await.unwrap();
    assert_eq!(new_key.account_id, "a23b456c");
    assert_ne!(new_key.key_id, old_key.key_id);
    assert_ne!(new_key.secret_base32, old_key.secret_base32);
    assert!(new_key.otpauth_uri.starts_with("otpauth://totp/"));
    assert!(!new_key.qr_png.is_empty());
    assert_eq!(
        stack.get(&started.reset_id).await.state(),
        pb::ResetState::Completed
    );

    // The new key logs in; the old one does not.
    assert_eq!(
        stack.login_with("a23b456c", &new_key).await,
        pb::VerifyResult::Accepted
    );
    assert_eq!(
        stack.login_with("a23b456c", &old_key).await,
        pb::VerifyResult::Rejected
    );
    assert_eq!(stack.rotations("a23b456c").await, 1);

    // The "key reissued" notice goes to the recovery address.
    let mails = stack.sink.wait_for_mails(2).await;
    assert!(
        mails[1]
            .subject
            .contains("セットアップキー再発行のお知らせ"),
        "{}",
        mails[1].subject
    );
    assert!(mails[1].body.contains("192.0.2.10"), "{}", mails[1].body);
    assert_eq!(
        mails[1].to,
        [EMAIL],
        "the notice goes to the recovery address"
    );
    assert_eq!(stack.sink.mails().len(), 2, "one code mail, one notice");

    // Nothing secret reached a log line or span field.
    let logs = captured_logs();
    assert!(logs.contains("a23b456c"), "logs were captured");
    // The saga ID is the keystore's idempotency key: a copy could replay the rotation.
    let saga_id: String = sqlx::Row::get(
        &crate::helpers::sql(&stack.reset_db, "SELECT saga_id FROM resets").await[0],
        "saga_id",
    );
    for secret in [
        PASSWORD,
        code.as_str(),
        started.reset_id.as_str(),
        new_key.secret_base32.as_str(),
        saga_id.as_str(),
    ] {
        assert!(
            !kagi_testkit::logs::mentions(logs.as_bytes(), secret),
            "a secret leaked into the logs"
        );
    }
}

async fn a_retried_confirm_shows_the_same_key_again_within_ten_minutes(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("hanako").await;
    let (reset_id, code) = stack.start_and_read_code("hanako").await;
    stack.verify(&reset_id, &code).await.unwrap();

    let first = stack.confirm(&reset_id).await.unwrap();
    stack.clock.advance(Duration::from_secs(9 * 60));
    let again = stack.confirm(&reset_id).await.unwrap();
    assert_eq!(again.key_id, first.key_id);
    assert_eq!(again.secret_base32, first.secret_base32);
    assert_eq!(stack.rotations("hanako").await, 1, "exactly one rotation");

    stack.clock.advance(Duration::from_secs(60));
    let late = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert!(
        late.message().contains("can no longer be shown"),
        "{}",
        late.message()
    );
    // One code mail and one notice, however many confirms.
    stack.assert_exactly_mailed(2).await;
}

async fn starting_over_cancels_the_reset(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("jiro").await;
    let (reset_id, code) = stack.start_and_read_code("jiro").await;

    assert_eq!(
        stack.cancel(&reset_id).await.unwrap(),
        pb::ResetState::Cancelled
    );
    let refused = stack.verify(&reset_id, &code).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("cancelled"),
        "{}",
        refused.message()
    );
    assert_eq!(
        stack.cancel(&reset_id).await.unwrap(),
        pb::ResetState::Cancelled
    );

    // Starting again works as the first time.
    let (again, code) = stack.start_and_read_code("jiro").await;
    assert_eq!(
        stack.verify(&again, &code).await.unwrap().result(),
        pb::CodeCheck::Verified
    );
    assert_eq!(stack.rotations("jiro").await, 0);
}

/// Resets stored for `account` (their rows hold the recovery address, IP and user agent).
async fn stored_resets(stack: &Stack, account: &str) -> i64 {
    let (pool, _) = kagi_runtime::db::connect(&stack.reset_db.url, 1)
        .await
        .unwrap();
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM resets WHERE account_id = $1")
        .bind(account)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn a_finished_reset_and_its_personal_data_are_deleted_after_thirty_days(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("saburo").await;
    let (reset_id, _code) = stack.start_and_read_code("saburo").await;
    stack.cancel(&reset_id).await.unwrap();
    assert_eq!(stored_resets(&stack, "saburo").await, 1);

    stack.clock.advance(Duration::from_secs(29 * 24 * 3600));
    stack.saga.sweep().await.unwrap();
    assert_eq!(stored_resets(&stack, "saburo").await, 1, "kept for 30 days");

    stack.clock.advance(Duration::from_secs(2 * 24 * 3600));
    stack.saga.sweep().await.unwrap();
    assert_eq!(
        stored_resets(&stack, "saburo").await,
        0,
        "gone after 30 days"
    );
}
