//! The portal in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`) drives the real pages against the real keystore, notifier (delivering
//! to a real SMTP server) and reset service. Each screen is saved to `docs/screenshots/`.
//! The journey through menus 1, 2 and 3 runs with all four services on SQLite and again
//! with all four on PostgreSQL.
//!
//! Browsers are heavy on a 2-core machine: the scenarios take turns.

use std::time::Duration;

use kagi_proto::v1::VerifyResult;
use kagi_runtime::Clock as _;
use kagi_testkit::Backend;

use crate::common::{self, ACCOUNT, PASSWORD, Stack};
use crate::helpdesk;
use crate::webdriver::Browser;

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const WINDOWS_CHROME: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36";

static ONE_BROWSER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn log_in(browser: &Browser, stack: &Stack) {
    browser.find("#account_id").await.type_text(ACCOUNT).await;
    browser.find("#password").await.type_text(PASSWORD).await;
    browser.find("#submit").await.click().await;
    let _ = stack;
}

/// `code` as a Japanese IME types it: full-width digits, a space after the third.
fn full_width_grouped(code: &str) -> String {
    code.chars()
        .enumerate()
        .flat_map(|(i, c)| {
            let wide = char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap();
            if i == 3 { vec![' ', wide] } else { vec![wide] }
        })
        .collect()
}

/// The QR image on the page, decoded.
async fn qr_on_page(browser: &Browser) -> String {
    let src = browser.find("#qr").await.attribute("src").await.unwrap();
    common::decode_qr(&common::png_of_data_uri(&src))
}

async fn menu_1_shows_the_current_key_after_login_and_its_qr_code_works(backend: Backend) {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = Box::pin(Stack::start_on(backend)).await;
    let browser = Browser::start(WINDOWS_CHROME).await;

    browser.goto(&stack.url("/")).await;
    browser.expect_page("二要素認証管理システム").await;
    browser.screenshot("01-top").await;
    browser.find("#menu1").await.click().await;

    // "システムにログインしていない場合はログインボタンが表示されます"
    browser.find("#login").await;
    browser.screenshot("02-login-needed").await;
    browser.find("#login").await.click().await;
    browser.screenshot("03-login").await;
    log_in(&browser, &stack).await;

    browser.expect_path("/key").await;
    assert_eq!(browser.text_of("#account").await, ACCOUNT);
    browser.screenshot("04-current-key").await;

    let key = stack.current_key().await;
    let uri = qr_on_page(&browser).await;
    assert_eq!(uri, key.otpauth_uri, "the QR code is the otpauth URI");
    assert_eq!(
        browser.text_of("#secret").await.replace(' ', ""),
        key.secret_base32
    );
    // Issue 14, item 9: a desktop cannot open an otpauth link; the button is for phones.
    assert!(browser.try_find("#add-here").await.is_none());
    browser
        .expect_page("スクリーンショットを他人に渡さないでください")
        .await;
    // Issue 15: "check my authenticator" under the key, the code typed as a Japanese IME
    // types it; the check is no login, so the same code logs in afterwards.
    let now = u64::try_from(stack.keystore_clock.now_ms() / 1000).unwrap();
    let shown_now = common::totp(&key.secret_base32, now);
    browser
        .find("#check-code")
        .await
        .type_text(&full_width_grouped(&shown_now))
        .await;
    browser.find("#check-submit").await.click().await;
    browser.expect_path("/key/check").await;
    browser
        .expect_page("この端末は正しく設定されています")
        .await;
    browser.screenshot("04b-check-authenticator-ready").await;
    browser.find("#back-to-key").await.click().await;
    browser.expect_path("/key").await;
    assert_eq!(
        stack.login_with_secret(&common::secret_of(&uri)).await,
        VerifyResult::Accepted
    );

    // FAQ 2: log out to switch IDs.
    browser.find("#logout").await.click().await;
    browser.expect_path("/logout?lang=ja").await;
    browser.expect_page("ログアウトしました").await;
    // Issue 14, item 6: on a shared PC, Back after logout does not show the key.
    browser.back().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    browser.find("#login").await;
    assert!(
        !browser.source().await.contains(&key.secret_base32[..8]),
        "Back after logout shows no setup key"
    );
    browser.goto(&stack.url("/key")).await;
    browser.find("#login").await;
}

async fn menu_2_reissues_the_key_end_to_end_with_the_code_from_the_mail(backend: Backend) {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = Box::pin(Stack::start_on(backend)).await;
    let browser = Browser::start(WINDOWS_CHROME).await;
    let code = steps_1_and_2(&browser, &stack).await;
    steps_3_and_4(&browser, &stack, &code).await;
}

/// Menu 2's steps 1 and 2, a refused form and a wrong code on the way; returns the code
/// from the mail. (The journey is split in steps: one async fn for all of it needs more
/// stack than a test thread has in a debug build.)
async fn steps_1_and_2(browser: &Browser, stack: &Stack) -> String {
    browser.goto(&stack.url("/")).await;
    browser.find("#menu2").await.click().await;
    browser.expect_page("1. 二要素認証のリセット").await;
    browser.screenshot("05-reset-1-id-password").await;

    // A form whose CSRF token was taken away is refused.
    browser
        .execute("document.querySelector('input[name=csrf]').remove()")
        .await;
    browser.find("#account_id").await.type_text(ACCOUNT).await;
    browser.find("#password").await.type_text(PASSWORD).await;
    browser.find("#submit").await.click().await;
    browser.expect_page("ページの有効期限が切れました").await;
    assert!(stack.sink.mails().is_empty(), "no mail for a refused form");
    assert!(
        stack.nothing_was_started().await,
        "no reset started and no mail queued for a refused form"
    );

    browser.goto(&stack.url("/reset")).await;
    browser.find("#account_id").await.type_text(ACCOUNT).await;
    browser.find("#password").await.type_text(PASSWORD).await;
    browser.find("#submit").await.click().await;

    browser.expect_page("2. 再設定メールを送信").await;
    let shown_to = browser.text_of("#recipient").await;
    assert!(
        shown_to.contains('*') && shown_to.ends_with(".ac.jp"),
        "masked: {shown_to}"
    );
    let field = browser.find("#code").await;
    assert_eq!(
        field.attribute("inputmode").await.as_deref(),
        Some("numeric")
    );
    assert_eq!(
        field.attribute("autocomplete").await.as_deref(),
        Some("one-time-code")
    );
    let code = stack.code_in_mail(1).await;
    browser.screenshot("06-reset-2-code-sent").await;

    // FAQ 4: "確認コードが違います".
    browser
        .find("#code")
        .await
        .type_text(&common::wrong(&code))
        .await;
    browser.find("#verify").await.click().await;
    browser.expect_page("確認コードが違います").await;
    assert!(
        browser
            .text_of("#error")
            .await
            .starts_with("確認コードが違います")
    );
    browser.screenshot("07-reset-2-wrong-code").await;
    code
}

/// Menu 2's steps 3 and 4 with the right `code`: the new key shown once, working, the old
/// one refused.
async fn steps_3_and_4(browser: &Browser, stack: &Stack, code: &str) {
    let old_secret = stack.first_key.secret_base32.clone();
    // Issue 14, item 3: typed with the Japanese IME on (full-width digits) and grouped as
    // a phone shows it: 「３６６ ２６２」 is the code.
    let typed = full_width_grouped(code);
    browser.find("#code").await.type_text(&typed).await;
    assert_eq!(
        browser
            .execute("return document.getElementById('code').value")
            .await
            .as_str(),
        Some(typed.as_str()),
        "nothing cut off"
    );
    browser.find("#verify").await.click().await;
    browser.expect_page("3. 最終確認").await;
    browser
        .expect_page("本当にセットアップキーを再発行してよろしいですか？")
        .await;
    browser.find("#menu").await;
    browser.screenshot("08-reset-3-final-confirmation").await;

    browser.find("#confirm").await.click().await;
    browser.expect_page("4. リセット完了").await;
    assert_eq!(browser.text_of("#account").await, ACCOUNT);
    browser.screenshot("09-reset-4-complete").await;

    let uri = qr_on_page(browser).await;
    let new_secret = common::secret_of(&uri);
    assert_ne!(new_secret, old_secret);
    assert_eq!(
        browser.text_of("#secret").await.replace(' ', ""),
        new_secret
    );
    assert_eq!(stack.current_key().await.otpauth_uri, uri);
    assert_eq!(
        stack.login_with_secret(&new_secret).await,
        VerifyResult::Accepted,
        "the new key works"
    );
    assert_eq!(
        stack.login_with_secret(&old_secret).await,
        VerifyResult::Rejected,
        "the old key does not"
    );

    // Shown once: asking for step 4 again does not show the key (the session forgot the
    // reset: back to step 1).
    browser.goto(&stack.url("/reset/done")).await;
    browser.expect_page("1. 二要素認証のリセット").await;
    assert!(browser.try_find("#secret").await.is_none());
    assert!(!browser.source().await.contains(&new_secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_is_refused_before_3_minutes_and_works_after() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = Box::pin(Stack::start()).await;
    let browser = Browser::start(WINDOWS_CHROME).await;

    browser.goto(&stack.url("/reset")).await;
    log_in(&browser, &stack).await;
    stack.code_in_mail(1).await;
    let resend = browser.find("#resend").await;
    assert!(
        !resend.enabled().await,
        "メールを再送信する is not offered before 3 minutes"
    );
    assert!(
        browser
            .text_of("#resend-wait")
            .await
            .contains("以降に使えます")
    );

    // Even a forced click is refused by the server.
    browser
        .execute("const b = document.getElementById('resend'); b.disabled = false; b.click();")
        .await;
    browser
        .expect_page("メールの再送信は、前回の送信から3分経過後に可能です。")
        .await;
    assert_eq!(
        browser.text_of("#error").await,
        "メールの再送信は、前回の送信から3分経過後に可能です。"
    );
    browser.screenshot("10-reset-2-resend-too-soon").await;
    assert_eq!(stack.sink.mails().len(), 1);

    // Issue 14, item 8: two seconds before the 3 minutes are over the page is loaded; the
    // button wakes up by itself when they are, no reload needed.
    stack.clock.advance(Duration::from_secs(178));
    browser.goto(&stack.url("/reset/code")).await;
    let resend = browser.find("#resend").await;
    assert!(!resend.enabled().await, "not yet");
    assert!(
        browser
            .text_of("#resend-wait")
            .await
            .contains("このページを再読み込みしてください"),
        "the no-script way is said"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !resend.enabled().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the resend button never woke up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.clock.advance(Duration::from_secs(3));
    resend.click().await;
    browser.expect_page("メールを再送信しました").await;
    let second = stack.code_in_mail(2).await;
    browser.find("#code").await.type_text(&second).await;
    browser.find("#verify").await.click().await;
    browser.expect_page("3. 最終確認").await;
}

async fn menu_3_is_enabled_for_iphone_safari(backend: Backend) {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = Box::pin(Stack::start_on(backend)).await;
    let browser = Browser::start(IPHONE_SAFARI).await;

    browser.goto(&stack.url("/")).await;
    let menu = browser.find("#menu3").await;
    assert_eq!(menu.tag().await, "a");
    menu.click().await;
    browser.find("#login").await.click().await;
    log_in(&browser, &stack).await;
    browser.expect_path("/apple").await;
    let link = browser
        .find("#apple-link")
        .await
        .attribute("href")
        .await
        .unwrap();
    let key = stack.current_key().await;
    assert_eq!(
        link,
        key.otpauth_uri
            .replacen("otpauth://", "apple-otpauth://", 1)
    );
    assert!(link.starts_with("apple-otpauth://totp/"));
    browser.screenshot("11-apple-autofill-iphone").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_3_is_greyed_out_for_chrome_on_windows() {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = Box::pin(Stack::start()).await;
    let browser = Browser::start(WINDOWS_CHROME).await;

    browser.goto(&stack.url("/")).await;
    let menu = browser.find("#menu3").await;
    assert_eq!(menu.tag().await, "div", "not a link");
    assert!(menu.attribute("class").await.unwrap().contains("disabled"));
    browser.goto(&stack.url("/apple")).await;
    assert!(
        browser
            .text_of("#unavailable")
            .await
            .contains("グレーアウト")
    );
    assert!(browser.try_find("#apple-link").await.is_none());
    browser.screenshot("12-apple-autofill-unavailable").await;
}

/// Issue 15: the help desk's console in a browser. A user without the role is refused and
/// sees nothing; the operator finds the locked account, unlocks it, cancels its reissue and
/// revokes its key, each with a reason: every action is in the trail on the page, and the
/// user has a mail for each in the SMTP mailbox.
async fn the_help_desk_console_walk(backend: Backend) {
    let _turn = ONE_BROWSER_AT_A_TIME.lock().await;
    let stack = helpdesk::stack_with_operator(backend).await;
    helpdesk::lock_out(&stack).await;
    helpdesk::start_reissue(&stack).await;
    let browser = Browser::start(WINDOWS_CHROME).await;

    browser.goto(&stack.url("/helpdesk")).await;
    log_in(&browser, &stack).await;
    browser.expect_page("ITヘルプデスクの担当者のみ").await;
    assert!(
        browser.try_find("#account").await.is_none(),
        "no search for a non-operator"
    );
    browser.find("#logout").await.click().await;
    browser.expect_page("ログアウトしました").await;

    browser.goto(&stack.url("/helpdesk")).await;
    browser
        .find("#account_id")
        .await
        .type_text(helpdesk::OPERATOR)
        .await;
    browser.find("#password").await.type_text(PASSWORD).await;
    browser.find("#submit").await.click().await;
    browser.expect_path("/helpdesk").await;
    browser.find("#account").await.type_text(ACCOUNT).await;
    browser.find("#search").await.click().await;
    assert_eq!(browser.text_of("#times-locked").await, "1");
    assert_eq!(browser.text_of("#reset-state").await, "CODE_SENT");
    assert_eq!(browser.text_of("#recovery").await, "t****@e*****.ac.jp");
    browser.screenshot("13-helpdesk-account").await;

    for (button, reason, done) in [
        (
            "#unlock",
            "本人から電話。学生証で確認",
            "ロックを解除しました",
        ),
        (
            "#cancel-reset",
            "本人が取り消しを希望",
            "再発行の手続きを取り消しました",
        ),
        (
            "#revoke",
            "端末の盗難の届け出",
            "セットアップキーを無効にしました",
        ),
    ] {
        browser.find("#reason").await.type_text(reason).await;
        browser.find(button).await.click().await;
        browser.expect_page(done).await;
        browser.expect_page("利用者にメールで通知しました").await;
    }
    let page = browser.source().await;
    for action in ["admin_unlock", "admin_cancel_reset", "admin_revoke"] {
        assert!(page.contains(action), "{action} in the trail on the page");
    }
    assert!(page.contains("operator=ops1 reason=端末の盗難の届け出"));
    browser.screenshot("14-helpdesk-after-actions").await;
    assert_eq!(
        stack
            .login_with_secret(&stack.first_key.secret_base32)
            .await,
        VerifyResult::NoKey,
        "the revoked key logs nobody in"
    );
    let mails = stack.sink.wait_for_raw(4).await;
    let notices = helpdesk::subjects(&mails)
        .into_iter()
        .filter(|s| s.contains("ヘルプデスクによるアカウント操作のお知らせ"))
        .count();
    assert_eq!(notices, 3, "a mail in the mailbox for each action");
}

kagi_testkit::both_backends!(
    the_help_desk_console_walk,
    menu_1_shows_the_current_key_after_login_and_its_qr_code_works,
    menu_2_reissues_the_key_end_to_end_with_the_code_from_the_mail,
    menu_3_is_enabled_for_iphone_safari,
);
