//! Downstream failures: the user gets UNAVAILABLE with a message the portal can show, the
//! saga stays where a retry (or a fresh start) picks it up, and nothing is done twice.

use kagi_proto::v1 as pb;
use sqlx::Row as _;

use crate::helpers::{Backend, PASSWORD, Stack, sql};
use kagi_testkit::both_backends;

both_backends!(
    keystore_down_during_confirm_is_unavailable_then_completes_with_one_rotation,
    notifier_down_at_start_is_unavailable_and_leaves_nothing_live,
    a_reissue_the_keystore_refuses_ends_and_the_user_can_start_over,
);

async fn keystore_down_during_confirm_is_unavailable_then_completes_with_one_rotation(
    backend: Backend,
) {
    let mut stack = Stack::start(backend).await;
    let old_key = stack.account("c1").await;
    let (reset_id, code) = stack.start_and_read_code("c1").await;
    stack.verify(&reset_id, &code).await.unwrap();

    stack.stop_keystore().await;
    let down = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable);
    assert!(down.message().contains("key service"), "{}", down.message());
    assert_eq!(
        stack.get(&reset_id).await.state(),
        pb::ResetState::Confirming,
        "left where a retry picks it up"
    );
    // Starting over is not possible while the reissue is half-way: it must finish first.
    let blocked = stack
        .start_reset("c1", PASSWORD, "192.0.2.1")
        .await
        .unwrap_err();
    assert_eq!(blocked.code(), tonic::Code::FailedPrecondition);

    stack.restart_keystore().await;
    let key = stack.confirm(&reset_id).await.unwrap();
    assert_ne!(key.key_id, old_key.key_id);
    assert_eq!(stack.rotations("c1").await, 1);
    assert_eq!(
        stack.login_with("c1", &key).await,
        pb::VerifyResult::Accepted
    );
    assert_eq!(
        stack.login_with("c1", &old_key).await,
        pb::VerifyResult::Rejected
    );
}

async fn notifier_down_at_start_is_unavailable_and_leaves_nothing_live(backend: Backend) {
    let stack = Stack::start_with(backend, |s| {
        s.notifier.endpoint = "http://127.0.0.1:1".into();
    })
    .await;
    stack.account("c2").await;
    let down = stack
        .start_reset("c2", PASSWORD, "192.0.2.1")
        .await
        .unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable);
    assert!(
        down.message().contains("mail service"),
        "{}",
        down.message()
    );
    let rows = sql(&stack.reset_db, "SELECT state FROM resets").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>("state"), "cancelled");
}

/// An account known to the directory but never enrolled at the keystore: the keystore
/// refuses the rotation for good, so the saga ends instead of blocking every fresh start.
async fn a_reissue_the_keystore_refuses_ends_and_the_user_can_start_over(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack
        .accounts
        .add(
            "c3",
            crate::helpers::EMAIL,
            secrecy::SecretString::from(PASSWORD),
            0,
        )
        .await
        .unwrap();
    let (reset_id, code) = stack.start_and_read_code("c3").await;
    stack.verify(&reset_id, &code).await.unwrap();

    let refused = stack.confirm(&reset_id).await.unwrap_err();

    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        "this account has no setup key to reissue"
    );
    assert_eq!(
        stack.get(&reset_id).await.state(),
        pb::ResetState::Cancelled
    );
    let live = sql(
        &stack.reset_db,
        "SELECT COUNT(*) AS n FROM resets WHERE state = 'confirming'",
    )
    .await;
    assert_eq!(live[0].get::<i64, _>("n"), 0);
    stack
        .start_reset("c3", PASSWORD, "192.0.2.30")
        .await
        .expect("starting over works");
}
