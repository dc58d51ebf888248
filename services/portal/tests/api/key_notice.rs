//! Issue 9, item 1's notice, from the user's side: every display of the setup key is mailed
//! to the user ("your setup key was displayed": when, in which time zone, from where, with
//! which browser; Japanese or English), and audited by the keystore. The notices have an
//! allowance of their own at the notifier: an intruder viewing the key in a loop causes a
//! bounded number of mails and never uses up the reset codes the user needs after losing
//! the phone. And refusals the reset service gives by reason (item 8) read as their own
//! page text.

use kagi_proto::v1 as pb;
use kagi_testkit::Backend;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{self, ACCOUNT, PASSWORD, Stack, token_of};

async fn log_in(client: &mut Client) -> Reply {
    let form = client.get("/login?next=/key").await;
    let csrf = csrf_in(&form.text());
    let reply = client
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
                ("next", "/key"),
            ],
        )
        .await;
    assert_eq!(reply.status, 303, "{}", reply.text());
    reply
}

/// Subject and text body of mail number `n` (1-based).
async fn mail(stack: &Stack, n: usize) -> (String, String) {
    let mails = stack.sink.wait_for_raw(n).await;
    let parsed = mail_parser::MessageParser::default()
        .parse(&mails[n - 1])
        .expect("a mail");
    (
        parsed.subject().unwrap_or_default().to_owned(),
        parsed.body_text(0).unwrap_or_default().into_owned(),
    )
}

/// The keystore's audit trail of the account: (action, caller), oldest first.
async fn audit_trail(stack: &Stack) -> Vec<(String, String)> {
    let request = pb::ListAuditEventsRequest {
        account_id: ACCOUNT.into(),
        page_size: 1000,
        before: 0,
    };
    let events = common::keystore_client(stack.keystore)
        .await
        .list_audit_events(kagi_testkit::bearer(&token_of("admin"), request))
        .await
        .unwrap()
        .into_inner()
        .events;
    events
        .into_iter()
        .rev()
        .map(|e| (e.action, e.caller))
        .collect()
}

async fn every_display_of_the_key_is_mailed_and_audited(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    user.user_agent = "Mozilla/5.0 (X11; Linux x86_64) KagiTest/1.0".into();
    log_in(&mut user).await;
    assert!(user.get("/key").await.text().contains("id=\"secret\""));

    let (subject, body) = mail(&stack, 1).await;
    assert!(
        subject.contains("セットアップキー表示のお知らせ"),
        "{subject}"
    );
    for shown in [
        ACCOUNT,
        "表示日時: ",
        "（Asia/Tokyo）",
        "接続元IPアドレス: 127.0.0.1",
        "ブラウザ: Mozilla/5.0 (X11; Linux x86_64) KagiTest/1.0",
        "セットアップキーを再発行する",
    ] {
        assert!(body.contains(shown), "{shown:?} not in:\n{body}");
    }
    assert!(
        !body.contains(&stack.first_key.secret_base32),
        "the key itself is never mailed"
    );

    // In English for a user reading the portal in English.
    user.cookies.insert("lang".into(), "en".into());
    assert!(user.get("/key").await.text().contains("id=\"secret\""));
    let (subject, body) = mail(&stack, 2).await;
    assert!(
        subject.contains("Your setup key was displayed"),
        "{subject}"
    );
    assert!(body.contains("Displayed at: "), "{body}");
    assert!(body.contains("JST (Asia/Tokyo)"), "{body}");
    assert!(body.contains("From IP address: 127.0.0.1"), "{body}");

    // One keystore "view" per display, by the portal.
    let views = audit_trail(&stack)
        .await
        .into_iter()
        .filter(|(action, caller)| action == "view" && caller == "portal")
        .count();
    assert_eq!(views, 2);
    assert_eq!(stack.sink.mails().len(), 2, "one mail per display");
}

/// Twenty views in an hour are all shown and mailed; the 21st is not shown (no notice, no
/// key); and the reset codes' allowance is untouched: the user who then loses the phone
/// still gets the code mail of menu 2.
async fn twenty_views_do_not_stop_a_reset(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut intruder = Client::new(stack.portal);
    log_in(&mut intruder).await;
    for view in 1..=20 {
        let page = intruder.get("/key").await;
        assert!(page.text().contains("id=\"secret\""), "view {view}");
    }
    stack.sink.wait_for_mails(20).await;
    let refused = intruder.get("/key").await;
    assert_eq!(refused.status, 429);
    assert!(!refused.text().contains("id=\"secret\""), "the 21st view");
    assert!(
        refused
            .text()
            .contains("このメールアドレスへの送信回数が上限に達しました")
    );

    let mut user = Client::new(stack.portal);
    let csrf = csrf_in(&user.get("/reset").await.text());
    let started = user
        .post(
            "/reset/start",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(
        started.header("location"),
        Some("/reset/code"),
        "{}",
        started.text()
    );
    let code = stack.code_in_mail(21).await;
    let csrf = csrf_in(&user.get("/reset/code").await.text());
    let verified = user
        .post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(verified.header("location"), Some("/reset/confirm"));
}

/// A directory that changed the account's recovery address behind the reset's back (an
/// LDAP change, say): the confirmation is refused, and the page says why in its own words.
async fn a_reset_outlived_by_an_account_change_says_so(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    let csrf = csrf_in(&user.get("/reset").await.text());
    user.post(
        "/reset/start",
        &[
            ("csrf", &csrf),
            ("account_id", ACCOUNT),
            ("password", PASSWORD),
        ],
    )
    .await;
    let code = stack.code_in_mail(1).await;
    let csrf = csrf_in(&user.get("/reset/code").await.text());
    let verified = user
        .post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(verified.header("location"), Some("/reset/confirm"));

    let (pool, _) = kagi_runtime::db::connect(&stack.reset_db, 1).await.unwrap();
    sqlx::query("UPDATE accounts SET recovery_email = $1 WHERE account_id = $2")
        .bind("someone-else@example.org")
        .bind(ACCOUNT)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let csrf = csrf_in(&user.get("/reset/confirm").await.text());
    let refused = user.post("/reset/confirm", &[("csrf", &csrf)]).await;
    let page = user.follow(refused).await.text();
    assert!(
        page.contains("アカウントの情報（パスワードや連絡先メールアドレス）が変更された"),
        "{page}"
    );
    assert_eq!(stack.current_key().await.key_id, stack.first_key.key_id);
}

kagi_testkit::both_backends!(
    every_display_of_the_key_is_mailed_and_audited,
    twenty_views_do_not_stop_a_reset,
    a_reset_outlived_by_an_account_change_says_so,
);
