//! The attacker's side of account changes: an operator who changes the recovery address
//! or the password, or disables the account, ends every reset the old state let start. A
//! code mailed to the old address, or won with the old password, reissues nothing.

use std::time::Duration;

use kagi_proto::v1 as pb;
use secrecy::SecretString;
use sqlx::Row as _;

use crate::helpers::{Backend, EMAIL, Stack, sql};
use kagi_testkit::both_backends;

both_backends!(
    after_set_recovery_email_the_code_mailed_to_the_old_address_no_longer_verifies,
    after_a_password_change_a_verified_reset_cannot_be_confirmed,
    after_disable_confirm_is_refused_and_nothing_rotates,
    a_directory_change_the_saga_was_not_told_of_is_caught_at_confirm_and_resend,
    the_reissued_notice_also_goes_to_the_current_recovery_address,
);

const NEW_EMAIL: &str = "taro.new@example.ac.jp";
const CANCELLED: &str = "this reset was cancelled; start again";
const ACCOUNT_CHANGED: &str =
    "the account was changed or disabled since this reset began; start again";

async fn after_set_recovery_email_the_code_mailed_to_the_old_address_no_longer_verifies(
    backend: Backend,
) {
    let stack = Stack::start(backend).await;
    stack.account("m1").await;
    // The thief reads the old mailbox.
    let (reset_id, code) = stack.start_and_read_code("m1").await;
    stack
        .accounts
        .set_recovery_email("m1", NEW_EMAIL, 0)
        .await
        .unwrap();

    let refused = stack.verify(&reset_id, &code).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), CANCELLED);
    assert_eq!(
        stack.get(&reset_id).await.state(),
        pb::ResetState::Cancelled
    );
    // Past the 3 minutes, a resend still sends nothing to the old address.
    stack.clock.advance(Duration::from_secs(181));
    let resend = stack.resend(&reset_id).await.unwrap_err();
    assert_eq!(resend.code(), tonic::Code::FailedPrecondition);
    assert_eq!(resend.message(), CANCELLED);
    let confirm = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(confirm.code(), tonic::Code::FailedPrecondition);
    stack.assert_exactly_mailed(1).await;
    assert_eq!(stack.rotations("m1").await, 0);

    // The owner starts again: the code goes to the new address only.
    let (second, second_code) = stack.start_and_read_code("m1").await;
    assert_eq!(stack.sink.mails()[1].to, [NEW_EMAIL]);
    assert_eq!(
        stack.verify(&second, &second_code).await.unwrap().result(),
        pb::CodeCheck::Verified
    );
}

async fn after_a_password_change_a_verified_reset_cannot_be_confirmed(backend: Backend) {
    let stack = Stack::start(backend).await;
    let key = stack.account("m2").await;
    let (reset_id, code) = stack.start_and_read_code("m2").await;
    stack.verify(&reset_id, &code).await.unwrap();
    stack
        .accounts
        .set_password("m2", SecretString::from("a-brand-new-password"), 0)
        .await
        .unwrap();

    let refused = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), CANCELLED);
    assert_eq!(stack.rotations("m2").await, 0);
    assert_eq!(
        stack.login_with("m2", &key).await,
        pb::VerifyResult::Accepted,
        "the key in the owner's phone still works"
    );
}

async fn after_disable_confirm_is_refused_and_nothing_rotates(backend: Backend) {
    let stack = Stack::start(backend).await;
    let key = stack.account("m3").await;
    let (reset_id, code) = stack.start_and_read_code("m3").await;
    stack.verify(&reset_id, &code).await.unwrap();
    stack.accounts.set_enabled("m3", false, 0).await.unwrap();

    let refused = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), CANCELLED);
    assert_eq!(
        stack.get(&reset_id).await.state(),
        pb::ResetState::Cancelled
    );
    assert_eq!(stack.rotations("m3").await, 0);
    assert_eq!(
        stack.login_with("m3", &key).await,
        pb::VerifyResult::Accepted
    );
    stack.assert_exactly_mailed(1).await;
    // Enabling it again does not bring the old reset back.
    stack.accounts.set_enabled("m3", true, 0).await.unwrap();
    assert_eq!(
        stack.confirm(&reset_id).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(stack.rotations("m3").await, 0);
}

/// A directory changed behind the saga's back (here: the table edited by SQL, as an
/// LDAP directory would change): ConfirmReset and ResendCode look the account up again.
async fn a_directory_change_the_saga_was_not_told_of_is_caught_at_confirm_and_resend(
    backend: Backend,
) {
    let stack = Stack::start(backend).await;
    stack.account("m4").await;
    stack.account("m5").await;
    let (verified, code) = stack.start_and_read_code("m4").await;
    stack.verify(&verified, &code).await.unwrap();
    let (pending, _) = stack.start_and_read_code("m5").await;
    sql(
        &stack.reset_db,
        &format!(
            "UPDATE accounts SET recovery_email = '{NEW_EMAIL}' WHERE account_id IN ('m4', 'm5')"
        ),
    )
    .await;

    let refused = stack.confirm(&verified).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert_eq!(refused.message(), ACCOUNT_CHANGED);
    assert_eq!(
        stack.get(&verified).await.state(),
        pb::ResetState::Cancelled
    );
    assert_eq!(stack.rotations("m4").await, 0);

    stack.clock.advance(Duration::from_secs(181));
    let resend = stack.resend(&pending).await.unwrap_err();
    assert_eq!(resend.code(), tonic::Code::FailedPrecondition);
    assert_eq!(resend.message(), ACCOUNT_CHANGED);
    assert_eq!(stack.get(&pending).await.state(), pb::ResetState::Cancelled);
    stack.assert_exactly_mailed(2).await;
    assert!(stack.sink.mails().iter().all(|m| m.to == [EMAIL]));
}

/// A reissue already under way when the address changes finishes (the keystore may have
/// rotated), and its "key reissued" notice reaches the old and the current address.
async fn the_reissued_notice_also_goes_to_the_current_recovery_address(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    stack.account("m6").await;
    let (reset_id, code) = stack.start_and_read_code("m6").await;
    stack.verify(&reset_id, &code).await.unwrap();
    stack.stop_keystore().await;
    let down = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable);
    stack
        .accounts
        .set_recovery_email("m6", NEW_EMAIL, 0)
        .await
        .unwrap();
    assert_eq!(
        stack.get(&reset_id).await.state(),
        pb::ResetState::Confirming
    );

    stack.restart_keystore().await;
    assert_eq!(stack.saga.sweep().await.unwrap(), 1);
    assert_eq!(stack.rotations("m6").await, 1);
    stack.assert_exactly_mailed(3).await;
    let notices: Vec<Vec<String>> = stack
        .sink
        .mails()
        .into_iter()
        .filter(|m| m.subject.contains("セットアップキー再発行のお知らせ"))
        .map(|m| m.to)
        .collect();
    assert_eq!(notices.len(), 2, "{notices:?}");
    assert!(notices.contains(&vec![EMAIL.to_owned()]), "{notices:?}");
    assert!(notices.contains(&vec![NEW_EMAIL.to_owned()]), "{notices:?}");
    let rows = sql(&stack.reset_db, "SELECT notice_sent FROM resets").await;
    assert_eq!(rows[0].get::<i64, _>("notice_sent"), 1);
}
