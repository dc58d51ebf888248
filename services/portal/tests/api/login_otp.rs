//! Issue 9, item 1, from the attacker's side: a password alone must not show the setup key.
//! Off campus (the keystore's `CheckLoginPolicy`), the local login asks for the current
//! one-time password too, checks it with the keystore, and fails a wrong or missing code
//! exactly like a wrong password, under the same limiter. In trusted-header mode the portal
//! can insist that the SSO says it did the one-time-password step.

use std::time::Duration;

use kagi_portal::config::LoginMode;
use kagi_runtime::Clock as _;
use kagi_testkit::Backend;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{ACCOUNT, PASSWORD, Stack, totp, wrong};

/// The address the institution's proxy says the user came from: off campus.
const OFF_CAMPUS: [(&str, &str); 1] = [("X-Forwarded-For", "203.0.113.9")];

const WRONG_LOGIN: &str = "ID、パスワードまたはワンタイムパスワードが違います。";

/// The test connects from 127.0.0.1, as the institution's proxy would (loopback is the
/// test keystore's campus network; the forwarded address is not).
fn behind_the_proxy(s: &mut kagi_portal::Settings) {
    s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

/// The code the user's phone shows now (the keystore's clock).
fn phone_code(stack: &Stack) -> String {
    let now = u64::try_from(stack.keystore_clock.now_ms() / 1000).unwrap();
    totp(&stack.first_key.secret_base32, now)
}

/// Posts the login form from off campus; `otp` is left out of the form when `None`.
async fn log_in_off_campus(client: &mut Client, password: &str, otp: Option<&str>) -> Reply {
    let form = client.get_with("/login?next=/key", &OFF_CAMPUS).await;
    let csrf = csrf_in(&form.text());
    let mut fields = vec![
        ("csrf", csrf.as_str()),
        ("account_id", ACCOUNT),
        ("password", password),
        ("next", "/key"),
    ];
    if let Some(otp) = otp {
        fields.push(("one_time_password", otp));
    }
    client.post_with("/login", &fields, &OFF_CAMPUS).await
}

/// A refused login answers POST/redirect/GET: back to the form, which then says why.
async fn refusal_page(client: &mut Client, refused: Reply) -> String {
    assert_eq!(refused.status, 303, "{}", refused.text());
    assert!(
        refused
            .header("location")
            .is_some_and(|l| l.starts_with("/login")),
        "{:?}",
        refused.header("location")
    );
    client.follow(refused).await.text()
}

async fn off_campus_a_password_alone_does_not_show_the_key(backend: Backend) {
    let stack = Box::pin(Stack::start_with_on(backend, behind_the_proxy)).await;

    // On campus the form asks for the password only (FAQ 8) ...
    let mut on_campus = Client::new(stack.portal);
    let form = on_campus.get("/login?next=/key").await.text();
    assert!(!form.contains("name=\"one_time_password\""));
    // ... off campus for the one-time password too, with the way to menu 2 for a lost phone.
    let mut thief = Client::new(stack.portal);
    let form = thief.get_with("/login?next=/key", &OFF_CAMPUS).await.text();
    assert!(form.contains("name=\"one_time_password\""), "{form}");
    assert!(form.contains("autocomplete=\"one-time-code\""));
    assert!(form.contains("<a href=\"/reset\">セットアップキーを再発行する</a>"));

    // A thief with the password: no code, a wrong code, a code of the wrong length. (The
    // reset service allows 5 password checks per account in 15 minutes; only the wrong
    // code needs one, the rest are refused before the password is looked at.)
    let right = phone_code(&stack);
    for otp in [None, Some(""), Some(wrong(&right).as_str()), Some("12345")] {
        let refused = log_in_off_campus(&mut thief, PASSWORD, otp).await;
        assert!(
            refused.headers("set-cookie").is_empty(),
            "no session for {otp:?}"
        );
        let page = refusal_page(&mut thief, refused).await;
        assert!(page.contains(WRONG_LOGIN), "{otp:?}");
        let key = thief.get_with("/key", &OFF_CAMPUS).await.text();
        assert!(!key.contains("id=\"secret\""), "{otp:?}");
        assert!(!key.contains(&stack.first_key.secret_base32));
    }

    // Someone who saw the code but lacks the password reads the same answer, and does not
    // spend the code: it is checked only after the password.
    let mut peeker = Client::new(stack.portal);
    let refused = log_in_off_campus(&mut peeker, "not-the-password", Some(&right)).await;
    assert!(
        refusal_page(&mut peeker, refused)
            .await
            .contains(WRONG_LOGIN)
    );

    // The user, with password and phone, gets in, and the code is used up.
    let mut user = Client::new(stack.portal);
    // Typed as a Japanese IME types it: full-width digits, an ideographic space (issue 14).
    let full_width: String = right
        .chars()
        .map(|c| char::from_u32(u32::from(c) - u32::from('0') + 0xFF10).unwrap())
        .collect();
    let typed = format!("{}\u{3000}{}", &full_width[..9], &full_width[9..]);
    let ok = log_in_off_campus(&mut user, PASSWORD, Some(&typed)).await;
    assert_eq!(ok.status, 303, "{}", ok.text());
    assert_eq!(ok.header("location"), Some("/key"));
    assert!(
        user.get_with("/key", &OFF_CAMPUS)
            .await
            .text()
            .contains("id=\"secret\"")
    );
    // The same code, replayed by someone who watched it typed in, within its 30 seconds.
    let replayed = log_in_off_campus(&mut thief, PASSWORD, Some(&right)).await;
    assert!(
        refusal_page(&mut thief, replayed)
            .await
            .contains(WRONG_LOGIN)
    );
}

async fn wrong_one_time_passwords_count_against_the_login_limit(backend: Backend) {
    let stack = Box::pin(Stack::start_with_on(backend, |s| {
        behind_the_proxy(s);
        s.login.per_account_max = 3;
    }))
    .await;
    let mut thief = Client::new(stack.portal);
    let right = phone_code(&stack);
    for _ in 0..3 {
        let guess = log_in_off_campus(&mut thief, PASSWORD, Some(&wrong(&right))).await;
        assert!(refusal_page(&mut thief, guess).await.contains(WRONG_LOGIN));
    }
    // The fourth try waits, even with the right code: three failures reached the limit.
    let limited = log_in_off_campus(&mut thief, PASSWORD, Some(&right)).await;
    assert!(limited.headers("set-cookie").is_empty());
    assert!(
        refusal_page(&mut thief, limited)
            .await
            .contains("ログインの試行回数が上限に達しました")
    );
}

kagi_testkit::both_backends!(
    off_campus_a_password_alone_does_not_show_the_key,
    wrong_one_time_passwords_count_against_the_login_limit,
);

fn sso_with_authn_context(s: &mut kagi_portal::Settings) {
    s.login.mode = LoginMode::TrustedHeader;
    s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    s.login.authn_context_header = "x-kagi-authn-context".into();
    s.login.authn_context_values = vec!["urn:example:ac:classes:mfa".into()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_login_that_did_not_ask_for_the_otp_gets_no_session() {
    let stack = Box::pin(Stack::start_with(sso_with_authn_context)).await;
    let user = ("X-Remote-User", ACCOUNT);
    let mfa = ("X-Kagi-Authn-Context", "urn:example:ac:classes:mfa");
    for headers in [
        vec![user],
        vec![
            user,
            ("X-Kagi-Authn-Context", "urn:example:ac:classes:password"),
        ],
        vec![user, ("X-Kagi-Authn-Context", "")],
        // Which line would the proxy have meant? Neither is believed.
        vec![user, mfa, mfa],
    ] {
        let mut client = Client::new(stack.portal);
        let reply = client.get_with("/login?next=/key", &headers).await;
        assert_eq!(reply.status, 403, "{headers:?}");
        assert!(
            reply
                .text()
                .contains("ワンタイムパスワードを使ったログインが必要です"),
            "{headers:?}"
        );
        assert!(reply.headers("set-cookie").is_empty(), "{headers:?}");
        let key = client.get_with("/key", &headers).await.text();
        assert!(!key.contains("id=\"secret\""), "{headers:?}");
    }

    let mut client = Client::new(stack.portal);
    let reply = client.get_with("/login?next=/key", &[user, mfa]).await;
    assert_eq!(reply.status, 200);
    assert!(client.get("/key").await.text().contains("id=\"secret\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_authn_context_header_without_values_stops_the_start() {
    let mut settings = kagi_portal::Settings::default();
    settings.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    settings.login.authn_context_header = "x-kagi-authn-context".into();
    let err = kagi_portal::Application::build(&settings)
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("authn_context_values"),
        "{err:#}"
    );
}

/// The keystore's lockout binds the portal's login too: five wrong codes (after the right
/// password) lock the account's one-time passwords for five minutes, right code or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_codes_lock_the_otp_login_for_five_minutes() {
    let stack = Box::pin(Stack::start_with(|s| {
        behind_the_proxy(s);
        s.login.per_account_max = 100;
    }))
    .await;
    let mut thief = Client::new(stack.portal);
    let right = phone_code(&stack);
    for _ in 0..5 {
        let guess = log_in_off_campus(&mut thief, PASSWORD, Some(&wrong(&right))).await;
        assert!(refusal_page(&mut thief, guess).await.contains(WRONG_LOGIN));
    }
    // 15 minutes on for the portal and the reset service (their own limits start over);
    // the keystore's lock still holds.
    stack.clock.advance(Duration::from_secs(901));
    let mut user = Client::new(stack.portal);
    let locked = log_in_off_campus(&mut user, PASSWORD, Some(&right)).await;
    assert!(
        refusal_page(&mut user, locked)
            .await
            .contains("ログインの試行回数が上限に達しました")
    );
    stack.keystore_clock.advance(Duration::from_secs(301));
    let ok = log_in_off_campus(&mut user, PASSWORD, Some(&phone_code(&stack))).await;
    assert_eq!(ok.header("location"), Some("/key"), "{}", ok.text());
}
