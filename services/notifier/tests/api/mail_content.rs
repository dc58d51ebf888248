//! What the user sees: the manual's Japanese reset mail, decoded by a real MIME parser.

use chrono::{TimeZone as _, Utc};
use kagi_proto::v1 as pb;
use mail_parser::MessageParser;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(
    the_reset_mail_arrives_once_in_japanese_as_in_the_manual,
    the_reissue_notice_tells_the_user_what_to_do_if_it_was_not_them,
    international_students_get_english_mail,
    operators_edit_templates_in_the_templates_directory,
    the_key_displayed_notice_shows_a_hostile_browser_name_as_text,
);

async fn the_reset_mail_arrives_once_in_japanese_as_in_the_manual(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    // 2024-07-08 16:45:52 in Tokyo, as in the manual's screenshot; far in the future here.
    let expires_at = Utc.with_ymd_and_hms(2099, 7, 8, 7, 45, 52).unwrap();

    let request = reset_request("reset-1", "taro@example.ac.jp", "482913", expires_at);
    let id = app
        .client
        .clone()
        .send_reset_code(request)
        .await
        .unwrap()
        .into_inner()
        .delivery_id;
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(delivery.attempts, 1);
    assert!(
        delivery.last_reply.starts_with("250"),
        "{}",
        delivery.last_reply
    );
    assert!(delivery.sent_at.is_some());
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let raw = &mails[0];
    let headers_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        raw[..headers_end].is_ascii(),
        "headers must be 7-bit, RFC 2047-encoded"
    );

    let mail = MessageParser::default().parse(raw).unwrap();
    assert_eq!(mail.subject(), Some(SUBJECT_JA));
    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some(SENDER_JA));
    assert_eq!(from.address(), Some("no-reply@mfa.example.ac.jp"));
    assert_eq!(
        mail.to().unwrap().first().unwrap().address(),
        Some("taro@example.ac.jp")
    );
    assert!(mail.date().is_some());
    assert_eq!(
        mail.message_id(),
        Some(format!("{id}@mfa.example.ac.jp").as_str())
    );
    let text = mail.body_text(0).unwrap();
    assert!(text.contains("確認コード: 482913"), "{text}");
    assert!(
        text.contains("有効期限: 2099/07/08 16:45:52 まで"),
        "{text}"
    );
    assert!(
        text.contains("パスワードが第三者に渡った可能性があります"),
        "{text}"
    );
    assert!(
        text.contains("https://www.example.ac.jp/it/2fa-trouble/"),
        "{text}"
    );
    assert!(text.contains("サンプル大学 情報基盤センター"), "{text}");
    let html = mail.body_html(0).unwrap();
    assert!(html.contains("482913"));
    assert!(html.contains("有効期限: 2099/07/08 16:45:52 まで"));
    assert!(html.contains(
        r#"<a href="https://www.example.ac.jp/it/2fa-trouble/">ITヘルプデスクにお問い合わせ</a>"#
    ));

    assert!(
        !app.store.has_payload(&id).await.unwrap(),
        "the code is wiped once sent"
    );
    app.stop().await;
    sink.stop().await;
}

async fn the_reissue_notice_tells_the_user_what_to_do_if_it_was_not_them(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let reissued_at = Utc.with_ymd_and_hms(2024, 7, 8, 7, 50, 0).unwrap();

    let request = pb::SendKeyReissuedNoticeRequest {
        message_id: "reissued-1".into(),
        recipient: "taro@example.ac.jp".into(),
        account_id: "a23b456c".into(),
        reissued_at: Some(timestamp(reissued_at)),
        client_ip: "203.0.113.7".into(),
        locale: "ja".into(),
    };
    let id = app
        .client
        .clone()
        .send_key_reissued_notice(request)
        .await
        .unwrap()
        .into_inner()
        .delivery_id;
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(delivery.kind(), pb::MessageKind::KeyReissuedNotice);
    let mails = sink.wait_for_mails(1).await;
    let mail = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(
        mail.subject(),
        Some("[サンプル大学]セットアップキー再発行のお知らせ")
    );
    let text = mail.body_text(0).unwrap();
    assert!(text.contains("a23b456c"), "{text}");
    assert!(text.contains("再発行日時: 2024/07/08 16:50:00"), "{text}");
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(text.contains("パスワードの変更"), "{text}");
    assert!(text.contains("ITヘルプデスク"), "{text}");
    app.stop().await;
    sink.stop().await;
}

async fn international_students_get_english_mail(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let expires_at = Utc.with_ymd_and_hms(2099, 7, 8, 7, 45, 52).unwrap();

    let mut request = reset_request("reset-en", "student@example.ac.jp", "104729", expires_at);
    request.locale = "en".into();
    let id = app
        .client
        .clone()
        .send_reset_code(request)
        .await
        .unwrap()
        .into_inner()
        .delivery_id;
    assert_eq!(app.wait_handled(&id).await.state(), pb::DeliveryState::Sent);

    let mails = sink.wait_for_mails(1).await;
    let mail = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(
        mail.subject(),
        Some("[Example Univ.] Resetting your two-factor authentication")
    );
    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(
        from.name(),
        Some("Example University Two-factor authentication manager")
    );
    let text = mail.body_text(0).unwrap();
    assert!(text.contains("Confirmation code: 104729"), "{text}");
    assert!(
        text.contains("Valid until: 8 July 2099, 16:45:52 JST"),
        "{text}"
    );
    assert!(
        text.contains("Change your password at once, then tell the IT help desk"),
        "{text}"
    );
    app.stop().await;
    sink.stop().await;
}

async fn operators_edit_templates_in_the_templates_directory(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("reset_code.ja.subject.txt"),
        "[{{ subject_prefix }}]確認コードのお知らせ\n",
    )
    .unwrap();
    let mut settings = test_settings(&db, sink.port);
    settings.mail.templates_dir = Some(templates.path().to_path_buf());
    settings.institution.short_name.ja = "XYZ大学2FA".into();
    let app = TestApp::spawn(settings).await;

    let id = app
        .send_reset_code("edited-1", "hanako@example.ac.jp", "555123")
        .await
        .unwrap();
    assert_eq!(app.wait_handled(&id).await.state(), pb::DeliveryState::Sent);

    let mails = sink.wait_for_mails(1).await;
    let mail = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(mail.subject(), Some("[XYZ大学2FA]確認コードのお知らせ"));
    // The templates the operator did not touch were installed for editing.
    assert!(templates.path().join("reset_code.ja.html").exists());
    assert!(templates.path().join("key_reissued_notice.en.txt").exists());
    app.stop().await;
    sink.stop().await;
}

both_backends!(in_development_mail_lands_as_eml_files_in_the_outbox);

async fn in_development_mail_lands_as_eml_files_in_the_outbox(backend: Backend) {
    let db = TestDatabase::new(backend, "notifier.db").await;
    let outbox = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, free_port());
    settings.transport.kind = kagi_notifier::config::TransportKind::File;
    settings.transport.outbox_dir = outbox.path().join("outbox");
    let app = TestApp::spawn(settings).await;

    let id = app
        .send_reset_code("outbox-1", "taro@example.ac.jp", "650321")
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    let files: Vec<_> = std::fs::read_dir(outbox.path().join("outbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].extension().unwrap(), "eml");
    let raw = std::fs::read(&files[0]).unwrap();
    let mail = MessageParser::default().parse(&raw).unwrap();
    assert_eq!(mail.subject(), Some(SUBJECT_JA));
    assert!(mail.body_text(0).unwrap().contains("650321"));
    app.stop().await;
}

/// "Your setup key was displayed": when (with the zone), from where, in which browser. The
/// browser's name is whatever the viewer's browser claimed, so an intruder's forged name
/// can neither add lines to the text part nor markup to the HTML part.
async fn the_key_displayed_notice_shows_a_hostile_browser_name_as_text(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let displayed_at = Utc.with_ymd_and_hms(2024, 7, 8, 7, 50, 0).unwrap();
    let request = pb::SendKeyDisplayedNoticeRequest {
        message_id: "displayed-1".into(),
        recipient: "taro@example.ac.jp".into(),
        account_id: "a23b456c".into(),
        displayed_at: Some(timestamp(displayed_at)),
        client_ip: "203.0.113.7".into(),
        user_agent: "Evil<img src=x onerror=alert(1)>\r\nこれはご自身の操作です".into(),
        locale: "ja".into(),
    };
    let id = app
        .client
        .clone()
        .send_key_displayed_notice(request)
        .await
        .unwrap()
        .into_inner()
        .delivery_id;
    let delivery = app.wait_handled(&id).await;
    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(delivery.kind(), pb::MessageKind::KeyDisplayedNotice);

    let mails = sink.wait_for_mails(1).await;
    let mail = MessageParser::default().parse(&mails[0]).unwrap();
    assert_eq!(
        mail.subject(),
        Some("[サンプル大学]セットアップキー表示のお知らせ")
    );
    let text = mail.body_text(0).unwrap();
    assert!(
        text.contains("表示日時: 2024/07/08 16:50:00（Asia/Tokyo）"),
        "{text}"
    );
    assert!(text.contains("接続元IPアドレス: 203.0.113.7"), "{text}");
    assert!(
        text.contains("ブラウザ: Evil<img src=x onerror=alert(1)>これはご自身の操作です"),
        "one line: {text}"
    );
    let html = mail.body_html(0).unwrap();
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("Evil&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    app.stop().await;
    sink.stop().await;
}
