//! `NotifyKeyDisplayed` (issue 9): every display of a setup key is mailed to the account's
//! current recovery address, once per display, unless the operator switched it off; the
//! notices have their own allowance at the notifier, so an intruder viewing the key in a
//! loop never uses up the reset codes the user needs. And every refusal names its
//! machine-readable reason (`kagi.v1.ErrorReason`), whatever its English words.

use kagi_proto::v1 as pb;
use kagi_proto::v1::ErrorReason;
use tonic::Code;

use crate::helpers::{Backend, EMAIL, Stack, as_caller, portal, wrong};
use kagi_testkit::both_backends;

both_backends!(
    every_display_is_mailed_once_to_the_current_recovery_address,
    the_operator_can_switch_the_notice_off,
    twenty_notices_leave_the_reset_codes_allowance_untouched,
    every_refusal_names_its_reason,
);

fn display(account: &str, view_id: &str, locale: &str) -> pb::NotifyKeyDisplayedRequest {
    pb::NotifyKeyDisplayedRequest {
        account_id: account.into(),
        view_id: view_id.into(),
        displayed_at: Some(kagi_proto::timestamp(1_720_422_952_000)),
        client_ip: "198.51.100.7".into(),
        user_agent: "Mozilla/5.0 (Macintosh) KagiTest/2.0".into(),
        locale: locale.into(),
    }
}

async fn notify(
    stack: &Stack,
    request: pb::NotifyKeyDisplayedRequest,
) -> Result<bool, tonic::Status> {
    Ok(stack
        .client
        .clone()
        .notify_key_displayed(portal(request))
        .await?
        .into_inner()
        .queued)
}

async fn every_display_is_mailed_once_to_the_current_recovery_address(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("d1").await;

    assert!(notify(&stack, display("d1", "view-1", "")).await.unwrap());
    // The portal retrying the same display: no second mail.
    assert!(notify(&stack, display("d1", "view-1", "")).await.unwrap());
    stack.assert_exactly_mailed(1).await;
    let mail = &stack.sink.mails()[0];
    assert_eq!(mail.to, [EMAIL]);
    assert!(
        mail.subject.contains("セットアップキー表示のお知らせ"),
        "{}",
        mail.subject
    );
    for shown in [
        "d1",
        "表示日時: 2024/07/08 16:15:52（Asia/Tokyo）",
        "接続元IPアドレス: 198.51.100.7",
        "ブラウザ: Mozilla/5.0 (Macintosh) KagiTest/2.0",
    ] {
        assert!(
            mail.body.contains(shown),
            "{shown:?} not in:\n{}",
            mail.body
        );
    }

    // After the recovery address changed, the notice goes to the new one; in English.
    stack
        .accounts
        .set_recovery_email("d1", "d1.new@example.ac.jp", 0)
        .await
        .unwrap();
    assert!(notify(&stack, display("d1", "view-2", "en")).await.unwrap());
    stack.assert_exactly_mailed(2).await;
    let mail = &stack.sink.mails()[1];
    assert_eq!(mail.to, ["d1.new@example.ac.jp"]);
    assert!(mail.subject.contains("Your setup key was displayed"));
    assert!(
        mail.body
            .contains("Displayed at: 8 July 2024, 16:15:52 JST (Asia/Tokyo)"),
        "{}",
        mail.body
    );

    // Nobody to tell: an unknown or disabled account.
    assert!(
        !notify(&stack, display("nobody", "view-3", ""))
            .await
            .unwrap()
    );
    stack.accounts.set_enabled("d1", false, 0).await.unwrap();
    assert!(!notify(&stack, display("d1", "view-4", "")).await.unwrap());
    stack.assert_exactly_mailed(2).await;
}

async fn the_operator_can_switch_the_notice_off(backend: Backend) {
    let stack = Stack::start_with(backend, |s| s.policy.notify_key_display = false).await;
    stack.account("d2").await;
    assert!(!notify(&stack, display("d2", "view-1", "")).await.unwrap());
    stack.assert_exactly_mailed(0).await;
}

async fn twenty_notices_leave_the_reset_codes_allowance_untouched(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("d3").await;
    for view in 1..=20 {
        let queued = notify(&stack, display("d3", &format!("view-{view}"), "")).await;
        assert!(queued.unwrap(), "view {view}");
    }
    let flooded = notify(&stack, display("d3", "view-21", ""))
        .await
        .unwrap_err();
    assert_eq!(flooded.code(), Code::ResourceExhausted);
    assert_eq!(
        kagi_proto::reason::of(&flooded),
        ErrorReason::MailRateLimited
    );
    stack.assert_exactly_mailed(20).await;

    // The user who lost the phone still gets the code, and it works.
    let (reset_id, code) = stack.start_and_read_code("d3").await;
    let checked = stack.verify(&reset_id, &code).await.unwrap();
    assert_eq!(checked.result(), pb::CodeCheck::Verified);
}

async fn every_refusal_names_its_reason(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("d4").await;
    let reason = |status: &tonic::Status| kagi_proto::reason::of(status);

    let bad = stack
        .start_reset("d4", "not-the-password", "192.0.2.10")
        .await
        .unwrap_err();
    assert_eq!(reason(&bad), ErrorReason::BadCredentials);
    let (reset_id, code) = stack.start_and_read_code("d4").await;
    let early = stack.resend(&reset_id).await.unwrap_err();
    assert_eq!(reason(&early), ErrorReason::ResendTooSoon);
    let unverified = stack.confirm(&reset_id).await.unwrap_err();
    assert_eq!(reason(&unverified), ErrorReason::NotVerified);
    let malformed = stack.verify(&reset_id, "12ab56").await.unwrap_err();
    assert_eq!(reason(&malformed), ErrorReason::CodeFormat);
    stack.verify(&reset_id, &wrong(&code)).await.unwrap();
    stack.verify(&reset_id, &code).await.unwrap();
    let again = stack.verify(&reset_id, &code).await.unwrap_err();
    assert_eq!(reason(&again), ErrorReason::AlreadyVerified);
    let unknown = stack
        .resend("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
        .await
        .unwrap_err();
    assert!(
        matches!(reason(&unknown), ErrorReason::UnknownReset),
        "{unknown:?}"
    );

    // Nobody but the portal may ask for notices (a caller the service has no token for).
    let stranger = stack
        .client
        .clone()
        .notify_key_displayed(as_caller("login", display("d4", "v", "")))
        .await
        .unwrap_err();
    assert_eq!(stranger.code(), Code::Unauthenticated);
    let bad_view = notify(&stack, display("d4", "", "")).await.unwrap_err();
    assert_eq!(
        (bad_view.code(), reason(&bad_view)),
        (Code::InvalidArgument, ErrorReason::InvalidInput)
    );
}
