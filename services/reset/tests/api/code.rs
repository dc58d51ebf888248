//! The code's rules with an injected clock: 30 minutes, resend after 3, at most 5 resends,
//! confirm only after a verify and within 10 minutes of it.

use std::time::Duration;

use kagi_proto::v1 as pb;

use crate::helpers::{Backend, EMAIL, Stack, wrong};
use kagi_testkit::both_backends;

both_backends!(
    a_code_expires_after_thirty_minutes,
    resend_is_refused_before_three_minutes_and_kills_the_old_code,
    the_replaced_code_is_refused_as_replaced_and_still_uses_up_a_try,
    at_most_five_resends,
    every_resend_the_policy_allows_arrives_and_so_do_those_after_starting_over,
    confirm_is_refused_before_the_code_is_verified,
    confirm_is_refused_ten_minutes_after_the_verify,
);

async fn a_code_expires_after_thirty_minutes(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a1").await;
    let (reset_id, code) = stack.start_and_read_code("a1").await;

    stack.clock.advance(Duration::from_secs(29 * 60 + 59));
    assert_eq!(stack.get(&reset_id).await.state(), pb::ResetState::CodeSent);
    stack.clock.advance(Duration::from_secs(1));
    assert_eq!(stack.get(&reset_id).await.state(), pb::ResetState::Expired);
    let late = stack.verify(&reset_id, &code).await.unwrap();
    assert_eq!(late.result(), pb::CodeCheck::Expired);
    let resend = stack.resend(&reset_id).await.unwrap_err();
    assert_eq!(resend.code(), tonic::Code::FailedPrecondition);
    assert!(resend.message().contains("expired"), "{}", resend.message());
    assert_eq!(
        stack.confirm(&reset_id).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
}

async fn resend_is_refused_before_three_minutes_and_kills_the_old_code(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a2").await;
    let (reset_id, old_code) = stack.start_and_read_code("a2").await;

    stack.clock.advance(Duration::from_secs(179));
    let early = stack.resend(&reset_id).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    assert!(early.message().contains("3 minutes"), "{}", early.message());

    stack.clock.advance(Duration::from_secs(1));
    let resent = stack.resend(&reset_id).await.unwrap();
    assert_eq!(resent.resends_remaining, 4);
    let new_code = stack.sink.code_in_mail(2).await;

    if new_code != old_code {
        let old = stack.verify(&reset_id, &old_code).await.unwrap();
        assert_eq!(
            old.result(),
            pb::CodeCheck::WrongCode,
            "the old code is dead"
        );
    }
    let new = stack.verify(&reset_id, &new_code).await.unwrap();
    assert_eq!(new.result(), pb::CodeCheck::Verified);
}

/// Issue 14, item 8b: the user who types the first mail's code after a resend is told it
/// was replaced (reason CODE_REPLACED on WRONG_CODE), not just "wrong"; it costs a try all
/// the same, so guessing with it cannot get past the 5-wrong-codes lock.
async fn the_replaced_code_is_refused_as_replaced_and_still_uses_up_a_try(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a7").await;
    let (reset_id, mut old_code) = stack.start_and_read_code("a7").await;
    let mut new_code = old_code.clone();
    let mut mails = 1;
    // Two codes drawn alike (one chance in a million): resend again for a distinct one.
    while new_code == old_code {
        old_code = new_code;
        stack.clock.advance(Duration::from_secs(180));
        stack.resend(&reset_id).await.unwrap();
        mails += 1;
        new_code = stack.sink.code_in_mail(mails).await;
    }
    let neither = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| *c != old_code && *c != new_code)
        .unwrap();

    let old = stack.verify(&reset_id, &old_code).await.unwrap();
    assert_eq!(
        old.result(),
        pb::CodeCheck::WrongCode,
        "the old code is dead"
    );
    assert_eq!(
        old.reason(),
        pb::ErrorReason::CodeReplaced,
        "and said to be replaced"
    );
    assert_eq!(old.attempts_remaining, 4, "it used up a try");
    let other = stack.verify(&reset_id, &neither).await.unwrap();
    assert_eq!(other.result(), pb::CodeCheck::WrongCode);
    assert_eq!(other.reason(), pb::ErrorReason::Unspecified, "merely wrong");
    assert_eq!(other.attempts_remaining, 3);
    for left in [2, 1] {
        let again = stack.verify(&reset_id, &old_code).await.unwrap();
        assert_eq!(again.reason(), pb::ErrorReason::CodeReplaced);
        assert_eq!(again.attempts_remaining, left);
    }
    let fifth = stack.verify(&reset_id, &old_code).await.unwrap();
    assert_eq!(
        fifth.result(),
        pb::CodeCheck::Locked,
        "the fifth wrong code locks"
    );
    assert_eq!(stack.get(&reset_id).await.state(), pb::ResetState::Locked);
    let late = stack.verify(&reset_id, &new_code).await.unwrap();
    assert_eq!(
        late.result(),
        pb::CodeCheck::Locked,
        "even the newest code is refused now"
    );
    assert_eq!(stack.rotations("a7").await, 0);
}

async fn at_most_five_resends(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a3").await;
    let (reset_id, _) = stack.start_and_read_code("a3").await;
    for (sent, left) in (0..5).rev().enumerate() {
        stack.clock.advance(Duration::from_secs(180));
        let resent = stack.resend(&reset_id).await.unwrap();
        assert_eq!(resent.resends_remaining, left);
        // As a user would, wait for the mail before asking again: mails sent at the same
        // moment may arrive in any order, and the last code is checked below.
        stack.sink.wait_for_mails(sent + 2).await;
    }
    stack.clock.advance(Duration::from_secs(180));
    let refused = stack.resend(&reset_id).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    let mails = stack.sink.wait_for_mails(6).await;
    assert_eq!(mails.len(), 6, "one mail per send, no more");
    // The last code still works.
    let last = stack.sink.code_in_mail(6).await;
    assert_eq!(
        stack.verify(&reset_id, &last).await.unwrap().result(),
        pb::CodeCheck::Verified
    );
}

/// "メールを再送信する" under the shipped limits of both services: the first code and every
/// resend the reset allows reach the recovery address, each code working in its turn; then
/// "最初からやり直す" and the same again, all within the notifier's hourly limit per recipient.
async fn every_resend_the_policy_allows_arrives_and_so_do_those_after_starting_over(
    backend: Backend,
) {
    let stack = Stack::start(backend).await;
    let max_resends = stack.settings.policy.max_resends;
    assert_eq!(max_resends, 5, "the shipped policy");
    stack.account("a6").await;

    let mut mails = 0;
    for round in 1..=2 {
        let (reset_id, first) = stack.start_and_read_code("a6").await;
        mails += 1;
        let mut codes = vec![first];
        for left in (0..max_resends).rev() {
            // "3分経ってもメールが来なければ": the injected clock passes the 3 minutes.
            stack.clock.advance(Duration::from_secs(3 * 60));
            let resent = stack
                .resend(&reset_id)
                .await
                .unwrap_or_else(|e| panic!("round {round}, {left} left: {e:?}"));
            assert_eq!(resent.resends_remaining, left);
            mails += 1;
            codes.push(stack.sink.code_in_mail(mails).await);
        }
        let all = stack.sink.mails();
        assert_eq!(all.len(), mails, "one mail per send, no more");
        assert!(
            all.iter().all(|m| m.to == [EMAIL]),
            "all to the recovery address"
        );
        // Only the last code works; an earlier one counts as a wrong guess.
        let last = codes.pop().unwrap();
        if let Some(earlier) = codes.iter().find(|c| **c != last) {
            assert_eq!(
                stack.verify(&reset_id, earlier).await.unwrap().result(),
                pb::CodeCheck::WrongCode
            );
        }
        assert_eq!(
            stack.verify(&reset_id, &last).await.unwrap().result(),
            pb::CodeCheck::Verified,
            "round {round}"
        );
        if round == 1 {
            // "最初からやり直す".
            assert_eq!(
                stack.cancel(&reset_id).await.unwrap(),
                pb::ResetState::Cancelled
            );
        } else {
            stack.confirm(&reset_id).await.unwrap();
        }
    }
    assert_eq!(stack.rotations("a6").await, 1);
}

async fn confirm_is_refused_before_the_code_is_verified(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a4").await;
    let (reset_id, code) = stack.start_and_read_code("a4").await;
    let early = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    assert!(
        early.message().contains("not been verified"),
        "{}",
        early.message()
    );
    stack.verify(&reset_id, &wrong(&code)).await.unwrap();
    assert_eq!(
        stack.confirm(&reset_id).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(stack.rotations("a4").await, 0);
}

async fn confirm_is_refused_ten_minutes_after_the_verify(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("a5").await;
    let (reset_id, code) = stack.start_and_read_code("a5").await;
    stack.verify(&reset_id, &code).await.unwrap();
    stack.clock.advance(Duration::from_secs(10 * 60));
    let late = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(late.code(), tonic::Code::FailedPrecondition);
    assert!(late.message().contains("10 minutes"), "{}", late.message());
    assert_eq!(stack.get(&reset_id).await.state(), pb::ResetState::Expired);
    assert_eq!(stack.rotations("a5").await, 0);
}
