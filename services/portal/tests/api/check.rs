//! Issue 15, part 1, from the user's side: "check my authenticator" under the key on
//! menu 1 and on 「4. リセット完了」. The user types the code the device shows now and reads,
//! in the manual's words, that it is ready, that its clock is N minutes fast or slow
//! (FAQ 10), or that it holds another key and the QR code above must be registered again
//! (FAQ 7); a sixth check in an hour says when to come back. Only a session that may see
//! the key can ask, and a check never logs in or spends the code.

use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_runtime::Clock as _;
use kagi_testkit::Backend;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{self, ACCOUNT, PASSWORD, Stack, token_of};

kagi_testkit::both_backends!(
    a_device_with_the_current_key_is_told_it_is_ready,
    a_clock_minutes_off_is_told_in_minutes_with_faq_10_in_japanese_and_english,
    a_device_with_another_key_sees_the_qr_code_above_the_answer_to_register_it_again,
    the_sixth_check_in_an_hour_says_when_to_try_again,
    right_after_a_reissue_the_done_page_checks_the_new_key,
    only_a_session_that_may_see_the_key_can_check,
);

async fn log_in(client: &mut Client) {
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
    assert_eq!(reply.header("location"), Some("/key"), "{}", reply.text());
}

/// The code `secret` shows on a device whose clock is `offset_secs` from the keystore's.
fn device_code(stack: &Stack, secret: &str, offset_secs: i64) -> String {
    let now = stack.keystore_clock.now_ms() / 1000 + offset_secs;
    common::totp(secret, u64::try_from(now).unwrap())
}

/// Types `code` into the check form of `page` (whose CSRF token it carries) and presses
/// 「確認する」; returns the POST's reply.
async fn press_check(client: &mut Client, page: &str, code: &str) -> Reply {
    assert!(page.contains("action=\"/key/check\""), "a check form");
    let csrf = csrf_in(page);
    client
        .post("/key/check", &[("csrf", &csrf), ("code", code)])
        .await
}

/// Checks `code` from menu 1 and reads the answer page (POST/redirect/GET).
async fn check_from_menu_1(client: &mut Client, code: &str) -> Reply {
    let page = client.get("/key").await.text();
    let posted = press_check(client, &page, code).await;
    assert_eq!(posted.status, 303);
    assert_eq!(posted.header("location"), Some("/key/check"));
    client.follow(posted).await
}

/// The `check` events the keystore audited for the account.
async fn audited_checks(stack: &Stack) -> Vec<String> {
    let request = pb::ListAuditEventsRequest {
        account_id: ACCOUNT.into(),
        page_size: 1000,
        before: 0,
    };
    common::keystore_client(stack.keystore)
        .await
        .list_audit_events(kagi_testkit::bearer(&token_of("admin"), request))
        .await
        .unwrap()
        .into_inner()
        .events
        .into_iter()
        .filter(|e| e.action == "check")
        .map(|e| e.detail)
        .collect()
}

async fn a_device_with_the_current_key_is_told_it_is_ready(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    log_in(&mut user).await;
    let key_page = user.get("/key").await.text();
    assert!(
        key_page.contains("認証アプリの設定を確認する"),
        "the form under the key"
    );
    let code = device_code(&stack, &stack.first_key.secret_base32, 0);

    let answer = check_from_menu_1(&mut user, &code).await;

    assert_eq!(answer.status, 200);
    let text = answer.text();
    assert!(text.contains("data-answer=\"ready\""), "{text}");
    assert!(
        text.contains("この端末は正しく設定されています。"),
        "{text}"
    );
    assert!(
        !text.contains("id=\"secret\""),
        "no need to show the key again"
    );
    // The check was no login: the same code still logs in.
    assert_eq!(
        stack
            .login_with_secret(&stack.first_key.secret_base32)
            .await,
        pb::VerifyResult::Accepted
    );
    assert_eq!(audited_checks(&stack).await, ["ready drift=0"]);
    // The answer is shown once: a reload goes back to menu 1 and asks nothing again.
    let reloaded = user.get("/key/check").await;
    assert_eq!(reloaded.header("location"), Some("/key"));
    assert_eq!(audited_checks(&stack).await.len(), 1);
}

async fn a_clock_minutes_off_is_told_in_minutes_with_faq_10_in_japanese_and_english(
    backend: Backend,
) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    log_in(&mut user).await;
    let secret = stack.first_key.secret_base32.clone();

    // A Japanese IME's full-width digits, grouped, are read as the digits meant.
    let fast: String = device_code(&stack, &secret, 120)
        .chars()
        .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap())
        .collect();
    let typed = format!("{}\u{3000}{}", &fast[..9], &fast[9..]);
    let ja = check_from_menu_1(&mut user, &typed).await.text();
    assert!(ja.contains("data-answer=\"clock\""), "{ja}");
    assert!(ja.contains("時計が約2分進んでいます。"), "{ja}");
    assert!(ja.contains("「自動設定」"), "{ja}");
    assert!(ja.contains("よくある質問 10"), "{ja}");

    user.cookies.insert("lang".into(), "en".into());
    let en = check_from_menu_1(&mut user, &device_code(&stack, &secret, -600))
        .await
        .text();
    assert!(en.contains("its clock is about 10 minutes slow."), "{en}");
    assert!(en.contains("(FAQ 10)"), "{en}");
    assert_eq!(
        audited_checks(&stack).await,
        [
            "clock_skewed drift=-20 offset_secs=-600",
            "clock_skewed drift=4 offset_secs=120"
        ]
    );
}

async fn a_device_with_another_key_sees_the_qr_code_above_the_answer_to_register_it_again(
    backend: Backend,
) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    log_in(&mut user).await;
    // An authenticator entry left from another (here: made-up) key.
    let other = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
    let page = user.get("/key").await.text();
    assert_eq!(
        stack.sink.wait_for_mails(1).await.len(),
        1,
        "menu 1's notice"
    );

    let posted = press_check(&mut user, &page, &device_code(&stack, other, 0)).await;
    let answer = user.follow(posted).await;

    let text = answer.text();
    assert!(text.contains("data-answer=\"no-match\""), "{text}");
    assert!(
        text.contains("上に表示されているQRコードを登録し直してください"),
        "{text}"
    );
    assert!(text.contains("よくある質問 7"), "{text}");
    let grouped = common::ShownSecret(&stack.first_key.secret_base32).grouped();
    let (qr, answer_at) = (
        text.find("id=\"qr\"").expect("the QR code"),
        text.find("id=\"check-answer\"").unwrap(),
    );
    assert!(qr < answer_at, "the QR code is above the answer");
    assert!(text.contains(&grouped));
    // Shown again, so mailed like every display.
    assert_eq!(stack.sink.wait_for_mails(2).await.len(), 2);
    assert_eq!(audited_checks(&stack).await, ["no_match"]);
}

async fn the_sixth_check_in_an_hour_says_when_to_try_again(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    log_in(&mut user).await;
    let code = device_code(&stack, &stack.first_key.secret_base32, 0);
    for _ in 0..5 {
        let answer = check_from_menu_1(&mut user, &code).await;
        assert!(answer.text().contains("data-answer=\"ready\""));
    }

    let sixth = check_from_menu_1(&mut user, &code).await;

    assert_eq!(sixth.status, 429);
    let text = sixth.text();
    assert!(
        text.contains("確認できる回数の上限に達しました。"),
        "{text}"
    );
    assert!(text.contains("以降にもう一度お試しください。"), "{text}");
    assert!(
        text.contains(" JST"),
        "the time, in the institution's zone: {text}"
    );
    assert!(
        !text.contains("action=\"/key/check\""),
        "no form to press again"
    );
    assert_eq!(
        audited_checks(&stack).await.len(),
        5,
        "the refused one asked nothing"
    );
    // The keystore's login is untouched by all this.
    assert_eq!(
        stack
            .login_with_secret(&stack.first_key.secret_base32)
            .await,
        pb::VerifyResult::Accepted
    );
}

async fn right_after_a_reissue_the_done_page_checks_the_new_key(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    let form = user.get("/reset").await;
    let started = user
        .post(
            "/reset/start",
            &[
                ("csrf", &csrf_in(&form.text())),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(started.header("location"), Some("/reset/code"));
    let code = stack.code_in_mail(1).await;
    let csrf = csrf_in(&user.get("/reset/code").await.text());
    user.post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    let csrf = csrf_in(&user.get("/reset/confirm").await.text());
    let confirmed = user.post("/reset/confirm", &[("csrf", &csrf)]).await;
    let done = user.follow(confirmed).await.text();
    assert!(done.contains("4. リセット完了"), "{done}");
    let new_key = stack.current_key().await;

    // The phone still shows the old key's entry: another key.
    let old = device_code(&stack, &stack.first_key.secret_base32, 0);
    let posted = press_check(&mut user, &done, &old).await;
    let answer = user.follow(posted).await.text();
    assert!(answer.contains("data-answer=\"no-match\""), "{answer}");
    assert!(
        answer.contains(&common::ShownSecret(&new_key.secret_base32).grouped()),
        "the new key to register again"
    );
    // Registered again: ready.
    let new = device_code(&stack, &new_key.secret_base32, 0);
    let posted = press_check(&mut user, &answer, &new).await;
    let answer = user.follow(posted).await.text();
    assert!(answer.contains("data-answer=\"ready\""), "{answer}");

    // As long as a login would show the key (5 minutes), not longer.
    stack.clock.advance(Duration::from_secs(301));
    let late = press_check(&mut user, &answer, &new).await;
    assert_eq!(late.header("location"), Some("/key"));
    assert_eq!(audited_checks(&stack).await.len(), 2);
}

async fn only_a_session_that_may_see_the_key_can_check(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let code = device_code(&stack, &stack.first_key.secret_base32, 0);

    // No session, or a forged token: refused as every POST is.
    let mut stranger = Client::new(stack.portal);
    let forged = stranger
        .post("/key/check", &[("csrf", "x"), ("code", &code)])
        .await;
    assert_eq!(forged.status, 403);
    // A session that is not logged in: sent to menu 1's login prompt, nothing asked.
    let csrf = csrf_in(&stranger.get("/reset").await.text());
    let anonymous = stranger
        .post("/key/check", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(anonymous.header("location"), Some("/key"));
    assert_eq!(
        stranger.get("/key/check").await.header("location"),
        Some("/key")
    );

    // A login older than 5 minutes: log in again first, like seeing the key.
    let mut user = Client::new(stack.portal);
    log_in(&mut user).await;
    let page = user.get("/key").await.text();
    stack.clock.advance(Duration::from_secs(301));
    let stale = press_check(&mut user, &page, &code).await;
    assert_eq!(stale.header("location"), Some("/key"));
    assert!(
        audited_checks(&stack).await.is_empty(),
        "the keystore was never asked"
    );
}
