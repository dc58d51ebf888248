//! `kagi.v1.NotifierAdmin` (issue 15): the help desk reads an account's recent mails with
//! the SMTP server's last reply and the address masked (FAQ 3, "the mail does not arrive"),
//! and the reset service queues the notice of an operator's action, mailed like any other.
//! From the attacker's side: each RPC admits only its caller, and bad input queues nothing.

use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_admin_client::NotifierAdminClient;
use secrecy::SecretString;
use tonic::Code;
use tonic::transport::Channel;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(
    the_help_desk_sees_each_mail_with_the_smtp_reply_and_a_masked_address,
    each_admin_rpc_admits_only_its_caller_and_bad_input_queues_nothing,
);

const HELPDESK: &str = "helpdesk-test-token-0123456789";

async fn spawn(backend: Backend, sink: &SmtpSink) -> (TestApp, TestDatabase) {
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings
        .auth
        .tokens
        .insert("helpdesk".into(), SecretString::from(HELPDESK));
    (TestApp::spawn(settings).await, db)
}

async fn admin(app: &TestApp) -> NotifierAdminClient<Channel> {
    NotifierAdminClient::connect(format!("http://{}", app.addr))
        .await
        .unwrap()
}

fn with_token<T>(token: &str, message: T) -> tonic::Request<T> {
    kagi_testkit::bearer(token, message)
}

fn notice(message_id: &str, action: pb::OperatorAction) -> pb::SendOperatorActionNoticeRequest {
    pb::SendOperatorActionNoticeRequest {
        message_id: message_id.into(),
        recipient: "taro@example.ac.jp".into(),
        account_id: "a23b456c".into(),
        action: action.into(),
        acted_at: Some(timestamp(chrono::Utc::now())),
        locale: String::new(),
    }
}

fn list(operator: &str) -> pb::ListRecentMailsRequest {
    pb::ListRecentMailsRequest {
        account_id: "a23b456c".into(),
        operator: operator.into(),
        page_size: 0,
    }
}

async fn the_help_desk_sees_each_mail_with_the_smtp_reply_and_a_masked_address(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let (app, _db) = spawn(backend, &sink).await;
    let code_mail = app
        .send_reset_code(&unique("code"), "taro@example.ac.jp", "123456")
        .await
        .unwrap();
    app.wait_handled(&code_mail).await;
    let queued = admin(&app)
        .await
        .send_operator_action_notice(with_token(
            TOKEN,
            notice(&unique("op"), pb::OperatorAction::RevokeKey),
        ))
        .await
        .unwrap()
        .into_inner()
        .delivery_id;
    app.wait_handled(&queued).await;

    let mails = admin(&app)
        .await
        .list_recent_mails(with_token(HELPDESK, list("ops1")))
        .await
        .unwrap()
        .into_inner()
        .mails;

    assert_eq!(mails.len(), 2);
    let kinds: Vec<pb::MessageKind> = mails
        .iter()
        .map(|m| m.delivery.as_ref().unwrap().kind())
        .collect();
    assert_eq!(
        kinds,
        [
            pb::MessageKind::OperatorActionNotice,
            pb::MessageKind::ResetCode
        ],
        "newest first"
    );
    for mail in &mails {
        let delivery = mail.delivery.as_ref().unwrap();
        assert_eq!(delivery.state(), pb::DeliveryState::Sent);
        assert_eq!(delivery.attempts, 1);
        assert!(
            delivery.last_reply.starts_with("250"),
            "{}",
            delivery.last_reply
        );
        assert_eq!(mail.masked_recipient, "t****@e*****.ac.jp");
    }
    assert!(
        !format!("{mails:?}").contains("taro@"),
        "the address is never shown whole"
    );
    let raw = sink.wait_for_mails(2).await;
    let notice = String::from_utf8_lossy(&raw[1]).into_owned();
    let parsed = mail_parser::MessageParser::default()
        .parse(notice.as_bytes())
        .unwrap();
    assert!(
        parsed
            .subject()
            .unwrap()
            .contains("ヘルプデスクによるアカウント操作のお知らせ")
    );
    assert!(
        parsed
            .body_text(0)
            .unwrap()
            .contains("セットアップキーの無効化")
    );
}

async fn each_admin_rpc_admits_only_its_caller_and_bad_input_queues_nothing(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let (app, _db) = spawn(backend, &sink).await;

    let as_reset = admin(&app)
        .await
        .list_recent_mails(with_token(TOKEN, list("ops1")))
        .await
        .unwrap_err();
    assert_eq!(
        as_reset.code(),
        Code::PermissionDenied,
        "reset may not list"
    );
    let as_helpdesk = admin(&app)
        .await
        .send_operator_action_notice(with_token(
            HELPDESK,
            notice("m-1", pb::OperatorAction::Unlock),
        ))
        .await
        .unwrap_err();
    assert_eq!(
        as_helpdesk.code(),
        Code::PermissionDenied,
        "the help desk has no address to mail: it asks the reset service"
    );
    let anonymous = admin(&app)
        .await
        .list_recent_mails(list("ops1"))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let no_operator = admin(&app)
        .await
        .list_recent_mails(with_token(HELPDESK, list("")))
        .await
        .unwrap_err();
    assert_eq!(no_operator.code(), Code::InvalidArgument);
    let no_action = admin(&app)
        .await
        .send_operator_action_notice(with_token(
            TOKEN,
            notice("m-2", pb::OperatorAction::Unspecified),
        ))
        .await
        .unwrap_err();
    assert_eq!(no_action.code(), Code::InvalidArgument);

    let mails = admin(&app)
        .await
        .list_recent_mails(with_token(HELPDESK, list("ops1")))
        .await
        .unwrap()
        .into_inner()
        .mails;
    assert!(mails.is_empty(), "nothing was queued: {mails:?}");
}
