//! The portal from the attacker's side (issue 9): a client forging `X-Forwarded-For` hops
//! or identity headers, a host inside the proxy network without the proxy's secret, a
//! session kept alive past its absolute lifetime, a stale login asking for the key.

use std::time::Duration;

use kagi_portal::config::LoginMode;
use kagi_testkit::Backend;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{ACCOUNT, PASSWORD, Stack};

/// Posts the local login form with `extra` headers on every request (as a proxy would
/// forward them); returns the reply to the POST.
async fn log_in_via(client: &mut Client, password: &str, extra: &[(&str, &str)]) -> Reply {
    let form = client.get_with("/login?next=/key", extra).await;
    let csrf = csrf_in(&form.text());
    client
        .post_with(
            "/login",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", password),
                ("next", "/key"),
            ],
            extra,
        )
        .await
}

async fn a_client_forging_forwarded_hops_is_still_limited_by_its_real_address(backend: Backend) {
    let stack = Box::pin(Stack::start_with_on(backend, |s| {
        // The test connects from 127.0.0.1, as the institution's proxy would.
        s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.login.per_ip_max = 3;
        s.login.per_account_max = 100;
    }))
    .await;
    let mut attacker = Client::new(stack.portal);
    // The attacker sends its own X-Forwarded-For with a new fake address each time; the
    // proxy appends the real one, on the same line or on a line of its own.
    let forged = [
        vec![("X-Forwarded-For", "198.18.0.1, 203.0.113.7")],
        vec![
            ("X-Forwarded-For", "198.18.0.2"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
        vec![
            ("X-Forwarded-For", "198.18.0.3, 198.18.0.4"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    ];
    for headers in &forged {
        let refused = log_in_via(&mut attacker, "not-the-password", headers).await;
        let page = attacker.follow(refused).await.text();
        // Off campus: the form asks for the one-time password too, and never says which was wrong.
        assert!(
            page.contains("ID、パスワードまたはワンタイムパスワードが違います。"),
            "{page}"
        );
    }
    let limited = log_in_via(
        &mut attacker,
        "still-guessing",
        &[
            ("X-Forwarded-For", "198.18.0.5"),
            ("X-Forwarded-For", "203.0.113.7"),
        ],
    )
    .await;
    let limited = attacker.follow(limited).await.text();
    assert!(
        limited.contains("ログインの試行回数が上限に達しました"),
        "the fourth guess from 203.0.113.7 waits: {limited}"
    );

    // Someone else behind the same proxy is not limited by the attacker's guesses (off
    // campus, so with the one-time password too).
    let mut user = Client::new(stack.portal);
    let now = u64::try_from(kagi_runtime::Clock::now_ms(&*stack.keystore_clock) / 1000).unwrap();
    let otp = crate::common::totp(&stack.first_key.secret_base32, now);
    let elsewhere = [("X-Forwarded-For", "192.0.2.44")];
    let form = user.get_with("/login?next=/key", &elsewhere).await;
    let csrf = csrf_in(&form.text());
    let reply = user
        .post_with(
            "/login",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
                ("one_time_password", &otp),
                ("next", "/key"),
            ],
            &elsewhere,
        )
        .await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/key"));
}

fn trusted_header_mode(s: &mut kagi_portal::Settings) {
    s.login.mode = LoginMode::TrustedHeader;
    s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_the_identity_header_twice_is_refused() {
    let stack = Box::pin(Stack::start_with(trusted_header_mode)).await;
    let mut attacker = Client::new(stack.portal);
    // The client sent its own identity header; the proxy added the one it authenticated.
    let reply = attacker
        .get_with(
            "/login?next=/key",
            &[("X-Remote-User", ACCOUNT), ("X-Remote-User", "hanako")],
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.headers("set-cookie").is_empty(), "no session");
    let page = attacker
        .get_with(
            "/key",
            &[("X-Remote-User", ACCOUNT), ("X-Remote-User", ACCOUNT)],
        )
        .await;
    assert_eq!(page.status, 400);
    assert!(!page.text().contains("id=\"secret\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_proxys_secret_the_identity_header_is_not_believed() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("proxy-secret");
    std::fs::write(&secret_file, "proxy-shared-secret-0123456789\n").unwrap();
    let stack = Box::pin(Stack::start_with(|s| {
        trusted_header_mode(s);
        s.login.proxy_secret_file = Some(secret_file.clone());
    }))
    .await;

    // Another host inside the proxy network, without the secret or with a wrong one.
    for extra in [
        vec![("X-Remote-User", ACCOUNT)],
        vec![
            ("X-Remote-User", ACCOUNT),
            ("X-Kagi-Proxy-Secret", "proxy-shared-secret-012345678"),
        ],
        vec![
            ("X-Remote-User", ACCOUNT),
            ("X-Kagi-Proxy-Secret", "proxy-shared-secret-0123456789"),
            ("X-Kagi-Proxy-Secret", "proxy-shared-secret-0123456789"),
        ],
    ] {
        let mut attacker = Client::new(stack.portal);
        let reply = attacker.get_with("/login?next=/key", &extra).await;
        assert_eq!(reply.status, 401, "{extra:?}");
        assert!(reply.headers("set-cookie").is_empty(), "{extra:?}");
        let page = attacker.get_with("/key", &extra).await.text();
        assert!(!page.contains("id=\"secret\""), "{extra:?}");
        assert!(page.contains("システムにログインしていません"), "{extra:?}");
    }

    // The proxy itself, with the secret.
    let mut user = Client::new(stack.portal);
    let reply = user
        .get_with(
            "/login?next=/key",
            &[
                ("X-Remote-User", ACCOUNT),
                ("X-Kagi-Proxy-Secret", "proxy-shared-secret-0123456789"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(user.get("/key").await.text().contains("id=\"secret\""));
}

async fn a_session_ends_eight_hours_after_login_however_active(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut thief = Client::new(stack.portal);
    assert_eq!(log_in_via(&mut thief, PASSWORD, &[]).await.status, 303);

    // Whoever holds the cookie keeps it busy, a page every 14 minutes (inside the
    // 15-minute idle timeout), for the 8 hours of its absolute lifetime.
    let mut elapsed = Duration::ZERO;
    while elapsed + Duration::from_secs(14 * 60) < Duration::from_secs(8 * 3600) {
        stack.clock.advance(Duration::from_secs(14 * 60));
        elapsed += Duration::from_secs(14 * 60);
        let top = thief.get("/").await.text();
        assert!(
            top.contains("id=\"who\""),
            "still logged in after {elapsed:?}"
        );
    }
    stack.clock.advance(Duration::from_secs(8 * 3600) - elapsed);
    let top = thief.get("/").await.text();
    assert!(
        !top.contains("id=\"who\""),
        "8 hours after login the session is over"
    );
    let page = thief.get("/key").await.text();
    assert!(page.contains("システムにログインしていません"));
    assert!(!page.contains("id=\"secret\""));
}

const IPHONE_SAFARI: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

/// What the page says when the login is too old to show the key.
const LOG_IN_AGAIN: &str = "セットアップキーを表示するには、もう一度ログインしてください";

async fn the_key_is_shown_only_within_5_minutes_of_login_then_after_logging_in_again(
    backend: Backend,
) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut user = Client::new(stack.portal);
    user.user_agent = IPHONE_SAFARI.into();
    assert_eq!(log_in_via(&mut user, PASSWORD, &[]).await.status, 303);
    assert!(user.get("/key").await.text().contains("id=\"secret\""));

    stack.clock.advance(Duration::from_secs(299));
    assert!(
        user.get("/key").await.text().contains("id=\"secret\""),
        "within 5 minutes of the login"
    );

    // Someone finds the browser left open: still logged in, but the key is not shown.
    stack.clock.advance(Duration::from_secs(2));
    let stale = user.get("/key").await;
    let page = stale.text();
    assert_eq!(stale.status, 200);
    assert!(!page.contains("id=\"secret\""), "the key is not shown");
    assert!(!page.contains(&stack.first_key.secret_base32));
    assert!(page.contains(LOG_IN_AGAIN), "the reason is shown");
    assert!(
        page.contains("href=\"/login?next=/key\""),
        "log in, then back"
    );
    assert!(page.contains("id=\"who\""), "the session itself lives on");
    let apple = user.get("/apple").await.text();
    assert!(!apple.contains("apple-otpauth://"), "nor in menu 3");
    assert!(apple.contains(LOG_IN_AGAIN));

    // Whoever knows the password logs in again and comes back to the key.
    let again = log_in_via(&mut user, PASSWORD, &[]).await;
    assert_eq!(again.status, 303);
    assert_eq!(again.header("location"), Some("/key"));
    let page = user.get("/key").await.text();
    assert!(page.contains("id=\"secret\""));
    assert!(!page.contains(LOG_IN_AGAIN));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_view_age_is_configurable_and_the_sso_login_comes_back_to_the_key() {
    let stack = Box::pin(Stack::start_with(|s| {
        trusted_header_mode(s);
        s.session.key_view_max_age_secs = 60;
    }))
    .await;
    let mut user = Client::new(stack.portal);
    let sso = [("X-Remote-User", ACCOUNT)];
    assert_eq!(user.get_with("/login?next=/key", &sso).await.status, 200);
    assert!(user.get("/key").await.text().contains("id=\"secret\""));

    stack.clock.advance(Duration::from_secs(61));
    let page = user.get("/key").await.text();
    assert!(!page.contains("id=\"secret\""));
    assert!(page.contains(LOG_IN_AGAIN));

    // The login button goes through the SSO and back to the key.
    let back = user.get_with("/login?next=/key", &sso).await;
    assert_eq!(back.status, 200);
    assert!(
        back.text()
            .contains("http-equiv=\"refresh\" content=\"0;url=/key\"")
    );
    assert!(user.get("/key").await.text().contains("id=\"secret\""));
}

kagi_testkit::both_backends!(
    a_client_forging_forwarded_hops_is_still_limited_by_its_real_address,
    a_session_ends_eight_hours_after_login_however_active,
    the_key_is_shown_only_within_5_minutes_of_login_then_after_logging_in_again,
);
