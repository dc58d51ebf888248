//! `kagi.v1.ResetAdmin` (issue 15): the help desk sees the reset in progress with its masked
//! address, cancels it with a reason (the user's code stops working and the user is told by
//! mail), and mails the user about the keystore's actions, since the address lives here.
//! From the attacker's side: nobody but the help desk gets in, and an action without a
//! reason changes nothing and mails nothing.

use kagi_proto::v1 as pb;
use kagi_proto::v1::ErrorReason;
use kagi_proto::v1::reset_admin_client::ResetAdminClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::{Backend, EMAIL, Stack, as_caller, channel};
use kagi_testkit::both_backends;

both_backends!(
    the_help_desk_sees_the_reset_and_cancels_it_and_the_user_is_mailed,
    the_user_is_mailed_once_about_an_unlock_in_their_language,
    only_the_help_desk_may_look_or_act,
    an_action_without_a_reason_changes_nothing_and_mails_nothing,
    operators_looking_at_once_are_each_on_the_trail_and_the_page_shows_the_newest_twenty,
);

fn context(reason: &str) -> Option<pb::OperatorContext> {
    Some(pb::OperatorContext {
        operator: "ops1".into(),
        reason: reason.into(),
    })
}

async fn admin(stack: &Stack) -> ResetAdminClient<Channel> {
    ResetAdminClient::new(channel(stack.reset.as_ref().unwrap().addr).await)
}

async fn look(stack: &Stack, caller: &str) -> Result<pb::GetAccountResetResponse, tonic::Status> {
    let request = pb::GetAccountResetRequest {
        account_id: "taro".into(),
        operator: "ops1".into(),
    };
    Ok(admin(stack)
        .await
        .get_account_reset(as_caller(caller, request))
        .await?
        .into_inner())
}

async fn cancel(
    stack: &Stack,
    caller: &str,
    reason: &str,
) -> Result<pb::CancelAccountResetResponse, tonic::Status> {
    let request = pb::CancelAccountResetRequest {
        account_id: "taro".into(),
        context: context(reason),
        locale: String::new(),
    };
    Ok(admin(stack)
        .await
        .cancel_account_reset(as_caller(caller, request))
        .await?
        .into_inner())
}

fn unlock_notice(reason: &str, locale: &str) -> pb::NotifyOperatorActionRequest {
    pb::NotifyOperatorActionRequest {
        account_id: "taro".into(),
        action: pb::OperatorAction::Unlock.into(),
        context: context(reason),
        notice_id: "unlock-1".into(),
        acted_at: Some(kagi_proto::timestamp(1_720_422_952_000)),
        locale: locale.into(),
    }
}

async fn notify(
    stack: &Stack,
    caller: &str,
    request: pb::NotifyOperatorActionRequest,
) -> Result<bool, tonic::Status> {
    Ok(admin(stack)
        .await
        .notify_operator_action(as_caller(caller, request))
        .await?
        .into_inner()
        .queued)
}

async fn the_help_desk_sees_the_reset_and_cancels_it_and_the_user_is_mailed(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("taro").await;
    let (reset_id, code) = stack.start_and_read_code("taro").await;

    let seen = look(&stack, "helpdesk").await.unwrap();

    assert!(seen.in_progress);
    assert_eq!(seen.masked_recipient, "t****@e*****.ac.jp");
    let latest = seen.latest.unwrap();
    assert_eq!(latest.state(), pb::ResetState::CodeSent);
    assert!(latest.code_sent_at.is_some() && latest.code_expires_at.is_some());
    assert_eq!((latest.attempts_remaining, latest.resends), (5, 0));
    assert_eq!(latest.resends_remaining, 5);

    let cancelled = cancel(&stack, "helpdesk", "本人から依頼（電話）")
        .await
        .unwrap();

    assert_eq!(cancelled.previous_state(), pb::ResetState::CodeSent);
    assert!(cancelled.notified);
    let refused = stack.verify(&reset_id, &code).await;
    let still_usable = matches!(&refused, Ok(r) if r.result() == pb::CodeCheck::Verified);
    assert!(!still_usable, "the mailed code stops working: {refused:?}");
    stack.assert_exactly_mailed(2).await;
    let notice = &stack.sink.mails()[1];
    assert_eq!(notice.to, [EMAIL]);
    assert!(
        notice
            .subject
            .contains("ヘルプデスクによるアカウント操作のお知らせ"),
        "{}",
        notice.subject
    );
    assert!(
        notice.body.contains("再発行手続きの取り消し"),
        "{}",
        notice.body
    );
    assert!(
        !notice.body.contains("本人から依頼"),
        "the operator's reason stays in the trail, not in the mail"
    );
    let after = look(&stack, "helpdesk").await.unwrap();
    assert!(!after.in_progress);
    assert_eq!(after.latest.unwrap().state(), pb::ResetState::Cancelled);
    let trail = after
        .recent_events
        .iter()
        .find(|e| e.action == "admin_cancel_reset")
        .unwrap();
    assert_eq!(trail.caller, "helpdesk");
    assert_eq!(trail.detail, "operator=ops1 reason=本人から依頼（電話）");
    let again = cancel(&stack, "helpdesk", "twice").await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);
    assert_eq!(kagi_proto::reason::of(&again), ErrorReason::UnknownReset);
}

async fn the_user_is_mailed_once_about_an_unlock_in_their_language(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("taro").await;

    assert!(
        notify(
            &stack,
            "helpdesk",
            unlock_notice("locked at the exam", "en")
        )
        .await
        .unwrap()
    );
    // The console retrying the same action: no second mail.
    assert!(
        notify(
            &stack,
            "helpdesk",
            unlock_notice("locked at the exam", "en")
        )
        .await
        .unwrap()
    );

    stack.assert_exactly_mailed(1).await;
    let mail = &stack.sink.mails()[0];
    assert_eq!(mail.to, [EMAIL]);
    assert!(
        mail.subject.contains("The IT help desk changed"),
        "{}",
        mail.subject
    );
    assert!(mail.body.contains("Action: unlocked"), "{}", mail.body);
    let seen = look(&stack, "helpdesk").await.unwrap();
    assert!(seen.latest.is_none(), "no reset was ever started");
    let trail = seen
        .recent_events
        .iter()
        .find(|e| e.action == "admin_notify")
        .unwrap();
    assert!(
        trail
            .detail
            .starts_with("operator=ops1 reason=locked at the exam action=OPERATOR_ACTION_UNLOCK"),
        "{}",
        trail.detail
    );
}

async fn only_the_help_desk_may_look_or_act(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("taro").await;
    stack.start_and_read_code("taro").await;

    for caller in ["portal", "reset", "login"] {
        let looked = look(&stack, caller).await.unwrap_err();
        assert!(
            matches!(
                looked.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ),
            "{caller}: {looked:?}"
        );
        let cancelled = cancel(&stack, caller, "because").await.unwrap_err();
        assert!(
            matches!(
                cancelled.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ),
            "{caller}: {cancelled:?}"
        );
        let notified = notify(&stack, caller, unlock_notice("because", ""))
            .await
            .unwrap_err();
        assert!(
            matches!(
                notified.code(),
                Code::PermissionDenied | Code::Unauthenticated
            ),
            "{caller}: {notified:?}"
        );
    }
    let portal = look(&stack, "portal").await.unwrap_err();
    assert_eq!(
        portal.code(),
        Code::PermissionDenied,
        "the user-facing portal caller"
    );

    assert!(
        look(&stack, "helpdesk").await.unwrap().in_progress,
        "nothing cancelled"
    );
    stack.assert_exactly_mailed(1).await;
}

async fn an_action_without_a_reason_changes_nothing_and_mails_nothing(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("taro").await;
    stack.start_and_read_code("taro").await;

    for reason in ["", " \t ", "two\nlines"] {
        let refused = cancel(&stack, "helpdesk", reason).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{reason:?}");
        assert!(refused.message().contains("reason is required"));
        let refused = notify(&stack, "helpdesk", unlock_notice(reason, ""))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{reason:?}");
    }
    let mut no_action = unlock_notice("because", "");
    no_action.action = pb::OperatorAction::Unspecified.into();
    let refused = notify(&stack, "helpdesk", no_action).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);

    let seen = look(&stack, "helpdesk").await.unwrap();
    assert!(seen.in_progress, "the reset goes on");
    assert!(
        !seen.recent_events.iter().any(|e| e.action != "admin_view"),
        "no action on the trail"
    );
    // "No mail" without waiting for one that must not come: an action with its reason
    // (and a notice ID of its own, so a refused notice queued by mistake could not stand
    // in for it), sent after the refused ones, mails; the mailbox then holds the code and
    // that notice only.
    let mut with_reason = unlock_notice("locked at the exam", "en");
    with_reason.notice_id = "unlock-2".into();
    assert!(notify(&stack, "helpdesk", with_reason).await.unwrap());
    stack.assert_exactly_mailed(2).await;
    let mails = stack.sink.mails();
    assert!(mails[0].reset_code().is_some(), "{}", mails[0].body);
    assert!(
        mails[1].body.contains("Action: unlocked"),
        "{}",
        mails[1].body
    );
}

async fn operators_looking_at_once_are_each_on_the_trail_and_the_page_shows_the_newest_twenty(
    backend: Backend,
) {
    let stack = Stack::start(backend).await;
    stack.account("taro").await;

    // Twenty-five looks at once, as twenty operators' consoles make them.
    let mut looks = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let client = admin(&stack).await;
        looks.spawn(async move {
            let request = pb::GetAccountResetRequest {
                account_id: "taro".into(),
                operator: "ops1".into(),
            };
            client
                .clone()
                .get_account_reset(as_caller("helpdesk", request))
                .await
                .map(|reply| reply.into_inner().recent_events.len())
        });
    }
    while let Some(seen) = looks.join_next().await {
        let seen = seen.unwrap().expect("every look is answered");
        assert!(seen >= 1, "each look is recorded before it is answered");
    }

    let trail = look(&stack, "helpdesk").await.unwrap().recent_events;
    assert_eq!(
        trail.len(),
        20,
        "the page shows the newest twenty of 26 looks"
    );
    assert!(
        trail
            .iter()
            .all(|e| e.action == "admin_view" && e.detail == "operator=ops1"),
        "every look names its operator"
    );
    assert!(
        trail.windows(2).all(|w| w[0].sequence > w[1].sequence),
        "newest first"
    );
}
