//! The portal over HTTP, as a browser without JavaScript sees it, against the real
//! keystore, notifier and reset services: security headers, cookies, CSRF, both login
//! modes, the idle timeout (on an injected clock), the login rate limit, and menu 2's
//! resends under the production limits.

use std::time::Duration;

use kagi_portal::config::LoginMode;
use kagi_testkit::Backend;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{self, ACCOUNT, PASSWORD, Stack};

/// Logs in through the local form; returns the reply to the POST: 303 to `/key` when the
/// password was right. A refusal answers 303 back to the login form (POST/redirect/GET),
/// which is followed: the reply is then the form the user reads, saying why.
async fn log_in(client: &mut Client, password: &str) -> Reply {
    let form = client.get("/login?next=/key").await;
    let csrf = csrf_in(&form.text());
    let reply = client
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", password),
                ("next", "/key"),
            ],
        )
        .await;
    if reply
        .header("location")
        .is_some_and(|l| l.starts_with("/login"))
    {
        return client.follow(reply).await;
    }
    reply
}

/// What a refused login says.
const WRONG_PASSWORD: &str = "IDまたはパスワードが違います。";
const LOCKED: &str = "ログインの試行回数が上限に達しました";

fn session_cookie(reply: &Reply) -> String {
    reply
        .headers("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("kagi_session=") || c.starts_with("__Host-kagi_session="))
        .expect("a session cookie")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_carries_the_security_headers_and_stays_small() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    for path in ["/", "/key", "/reset", "/apple", "/login", "/no-such-page"] {
        let reply = client.get(path).await;
        assert_eq!(
            reply.header("content-security-policy"),
            Some(kagi_portal::web::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert!(kagi_portal::web::CONTENT_SECURITY_POLICY.contains("frame-ancestors 'none'"));
        assert!(!kagi_portal::web::CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
        assert_eq!(reply.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(
            reply.header("strict-transport-security"),
            None,
            "no HSTS over plain http: {path}"
        );
        assert!(
            reply.body.len() < 100 * 1024,
            "{path} weighs {} bytes",
            reply.body.len()
        );
        let html = reply.text();
        let script_file = "<script src=\"/static/portal.js\" defer></script>";
        assert!(
            !html.replace(script_file, "").contains("<script") && !html.contains("style="),
            "{path}: no inline script or style"
        );
    }
    let css = client.get("/static/portal.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
    let js = client.get("/static/portal.js").await;
    assert_eq!(js.status, 200);
    assert!(
        js.header("content-type")
            .unwrap()
            .starts_with("text/javascript")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_top_page_reads_as_in_the_manual_in_japanese_and_switches_to_english() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    let top = client.get("/").await.text();
    for words in [
        "二要素認証管理システム",
        "現在のセットアップキーを表示する",
        "セットアップキーを再発行する",
        "ワンタイムパスワードの自動入力を設定する",
        "トラブル・問い合わせ",
        "マニュアル",
        "© サンプル大学 情報基盤センター",
    ] {
        assert!(top.contains(words), "{words}");
    }
    let switched = client.get("/lang?to=en&next=/").await;
    assert_eq!(switched.status, 303);
    assert_eq!(switched.header("location"), Some("/"));
    let top = client.get("/").await.text();
    assert!(top.contains("Two-factor authentication manager"));
    assert!(top.contains("lang=\"en\""));
    // No open redirect through the language switch.
    let evil = client.get("/lang?to=ja&next=//evil.example/").await;
    assert_eq!(evil.header("location"), Some("/"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_login_sets_a_new_strict_http_only_cookie_and_the_key_page_is_not_stored() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    let wrong = log_in(&mut client, "not-the-password").await;
    assert_eq!(wrong.status, 200, "back on the form");
    assert!(wrong.text().contains(WRONG_PASSWORD));
    assert!(
        wrong.text().contains(&format!("value=\"{ACCOUNT}\"")),
        "the ID typed is kept"
    );
    let reloaded = client.get("/login?next=/key").await.text();
    assert!(
        !reloaded.contains(WRONG_PASSWORD),
        "a reload neither posts again nor repeats the message"
    );
    let before = client.cookies["kagi_session"].clone();

    let reply = log_in(&mut client, PASSWORD).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/key"));
    let cookie = session_cookie(&reply);
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "plain http in tests: {cookie}");
    assert_ne!(
        client.cookies["kagi_session"], before,
        "a new session ID at login"
    );

    let page = client.get("/key").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let key = stack.current_key().await;
    assert!(
        page.text()
            .contains(&common::ShownSecret(&key.secret_base32).grouped())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_cookie_is_secure_behind_https() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.server.public_url = "https://mfa.example.ac.jp".into()
    }))
    .await;
    let mut client = Client::new(stack.portal);
    let reply = client.get("/reset").await;
    let hsts = reply
        .header("strict-transport-security")
        .expect("HSTS over https");
    let max_age: u64 = hsts
        .strip_prefix("max-age=")
        .and_then(|v| v.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(max_age >= 365 * 24 * 3600, "at least a year: {hsts}");
    let cookie = session_cookie(&reply);
    assert!(cookie.contains("; Secure"));
    assert!(
        cookie.starts_with("__Host-kagi_session=")
            && cookie.contains("Path=/")
            && !cookie.contains("Domain"),
        "a __Host- cookie no sibling host can plant: {cookie}"
    );
    // The portal reads the cookie back under that name.
    let csrf = csrf_in(&reply.text());
    let refused = client
        .post("/reset/start", &[("csrf", &csrf), ("account_id", ACCOUNT)])
        .await;
    assert_ne!(
        refused.status,
        403,
        "the session was found: {}",
        refused.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_without_the_sessions_csrf_token_are_refused() {
    let stack = Box::pin(Stack::start()).await;
    let mut victim = Client::new(stack.portal);
    log_in(&mut victim, PASSWORD).await;
    let mut attacker = Client::new(stack.portal);
    let attackers_token = csrf_in(&attacker.get("/reset").await.text());

    let fields = [("account_id", ACCOUNT), ("password", PASSWORD)];
    let no_token = victim.post("/reset/start", &fields).await;
    assert_eq!(no_token.status, 403);
    assert!(no_token.text().contains("ページの有効期限が切れました"));
    let foreign = victim
        .post(
            "/reset/start",
            &[("csrf", attackers_token.as_str()), fields[0], fields[1]],
        )
        .await;
    assert_eq!(foreign.status, 403);
    for path in [
        "/logout",
        "/reset/verify",
        "/reset/resend",
        "/reset/cancel",
        "/reset/confirm",
        "/login",
    ] {
        assert_eq!(
            victim.post(path, &[("csrf", "")]).await.status,
            403,
            "{path}"
        );
    }
    // Nothing happened: the reset service was never asked, nothing is queued for mail (so
    // none can arrive later), no mail came, and the victim is still logged in.
    assert!(stack.nothing_was_started().await);
    assert!(stack.sink.mails().is_empty());
    assert!(victim.get("/key").await.text().contains("id=\"secret\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sso_proxys_header_logs_the_user_in() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.mode = LoginMode::TrustedHeader;
        s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    }))
    .await;
    let mut client = Client::new(stack.portal);
    let reply = client
        .get_with("/login?next=/key", &[("X-Remote-User", ACCOUNT)])
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .text()
            .contains("http-equiv=\"refresh\" content=\"0;url=/key\"")
    );
    session_cookie(&reply);
    let page = client.get("/key").await.text();
    assert!(page.contains("id=\"secret\""), "the key is shown");
    assert!(page.contains(ACCOUNT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_header_from_anyone_but_the_proxy_is_ignored() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.mode = LoginMode::TrustedHeader;
        s.login.trusted_proxies = vec!["10.20.0.0/16".parse().unwrap()];
    }))
    .await;
    let mut client = Client::new(stack.portal);
    let reply = client
        .get_with(
            "/login?next=/key",
            &[("X-Remote-User", ACCOUNT), ("X-Forwarded-For", "10.20.0.5")],
        )
        .await;
    assert_eq!(reply.status, 401);
    let page = client
        .get_with("/key", &[("X-Remote-User", ACCOUNT)])
        .await
        .text();
    assert!(!page.contains("id=\"secret\""));
    assert!(page.contains("システムにログインしていません"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_session_ends_after_the_timeout() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.session.idle_timeout_secs = 900;
        // The key stays viewable for the whole test: this one is about the idle timeout.
        s.session.key_view_max_age_secs = 3600;
    }))
    .await;
    let mut client = Client::new(stack.portal);
    log_in(&mut client, PASSWORD).await;

    stack.clock.advance(Duration::from_secs(899));
    assert!(
        client.get("/key").await.text().contains("id=\"secret\""),
        "still in use: the session lives on"
    );
    stack.clock.advance(Duration::from_secs(899));
    assert!(
        client.get("/key").await.text().contains("id=\"secret\""),
        "each use restarts the idle time"
    );
    stack.clock.advance(Duration::from_secs(900));
    let page = client.get("/key").await.text();
    assert!(
        page.contains("システムにログインしていません"),
        "15 idle minutes end the session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_address() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.per_ip_max = 3;
        s.login.per_account_max = 100;
    }))
    .await;
    let mut client = Client::new(stack.portal);
    for _ in 0..3 {
        assert!(
            log_in(&mut client, "not-the-password")
                .await
                .text()
                .contains(WRONG_PASSWORD)
        );
    }
    let limited = log_in(&mut client, PASSWORD).await;
    assert!(
        limited.text().contains(LOCKED),
        "even the right password waits for the window"
    );

    stack.clock.advance(Duration::from_secs(901));
    assert_eq!(
        log_in(&mut client, PASSWORD).await.status,
        303,
        "a new window admits the user"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_rate_limited_per_account() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.per_ip_max = 100;
        s.login.per_account_max = 2;
    }))
    .await;
    let mut client = Client::new(stack.portal);
    for _ in 0..2 {
        assert!(
            log_in(&mut client, "not-the-password")
                .await
                .text()
                .contains(WRONG_PASSWORD)
        );
    }
    assert!(log_in(&mut client, PASSWORD).await.text().contains(LOCKED));
}

/// Issue 14, item 5: only failures count. Under the production limits a user who logs in
/// twelve times and starts menu 2 twice within 15 minutes (all with the right password) is
/// never locked out, by the portal's limiter or by the reset service's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_right_logins_in_fifteen_minutes_never_lock_the_user_out() {
    let stack = Box::pin(Stack::start()).await;
    for round in 0..12 {
        let mut client = Client::new(stack.portal);
        let reply = log_in(&mut client, PASSWORD).await;
        assert_eq!(reply.status, 303, "login {round}: {}", reply.text());
        if round % 6 == 5 {
            let started = start_reset(&mut client).await;
            assert_eq!(started.status, 303, "reset {round}: {}", started.text());
        }
        stack.clock.advance(Duration::from_secs(60));
    }
    // Failures still count: after the reset service's 5 for the account, even the right
    // password waits.
    let mut client = Client::new(stack.portal);
    for _ in 0..5 {
        assert!(
            log_in(&mut client, "not-the-password")
                .await
                .text()
                .contains(WRONG_PASSWORD)
        );
    }
    assert!(log_in(&mut client, PASSWORD).await.text().contains(LOCKED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_no_account_can_have_count_against_the_address_but_get_no_bucket_of_their_own() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.per_ip_max = 3;
        s.login.per_account_max = 100;
    }))
    .await;
    let mut client = Client::new(stack.portal);
    let junk = ["x".repeat(5_000), "a b".into(), "名前".into()];
    for account in &junk {
        let form = client.get("/login").await;
        let csrf = csrf_in(&form.text());
        let reply = client
            .post(
                "/login",
                &[("csrf", &csrf), ("account_id", account), ("password", "p")],
            )
            .await;
        let page = client.follow(reply).await.text();
        assert!(
            page.contains(WRONG_PASSWORD),
            "answered like a wrong password"
        );
    }
    let buckets: Vec<(String,)> = {
        let (pool, _) = kagi_runtime::db::connect(&stack.portal_db, 1)
            .await
            .unwrap();
        sqlx::query_as("SELECT bucket FROM login_attempts ORDER BY bucket")
            .fetch_all(&pool)
            .await
            .unwrap()
    };
    assert_eq!(
        buckets.len(),
        1,
        "only the address was counted: {buckets:?}"
    );
    assert!(buckets[0].0.starts_with("ip:127.0.0.1"), "{buckets:?}");
    assert!(
        log_in(&mut client, PASSWORD).await.text().contains(LOCKED),
        "the junk attempts used up the address's limit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_portal_has_no_mail_outbox_page() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    assert_eq!(client.get("/outbox").await.status, 404);
    assert!(!client.get("/").await.text().contains("/outbox"));
}

/// Starts menu 2 with the account's ID and password; returns the reply to the POST.
async fn start_reset(client: &mut Client) -> Reply {
    let form = client.get("/reset").await;
    let csrf = csrf_in(&form.text());
    client
        .post(
            "/reset/start",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
            ],
        )
        .await
}

/// Presses "メールを再送信する" on step 2; returns the reply to the POST.
async fn press_resend(client: &mut Client) -> Reply {
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    client.post("/reset/resend", &[("csrf", &csrf)]).await
}

/// Step 2 with a first mail and its 5 resends, each 3 minutes after the last, every mail
/// checked to arrive; then the 6th resend, refused by the reset's own cap. `mails_before`
/// counts the mails of earlier reissues.
async fn send_every_code_a_reissue_allows(stack: &Stack, client: &mut Client, mails_before: usize) {
    let started = start_reset(client).await;
    assert_eq!(started.status, 303, "{}", started.text());
    assert_eq!(started.header("location"), Some("/reset/code"));
    stack.code_in_mail(mails_before + 1).await;
    for resend in 1..=5 {
        stack.clock.advance(Duration::from_secs(181));
        let reply = press_resend(client).await;
        assert_eq!(
            reply.header("location"),
            Some("/reset/code?resent=1"),
            "resend {resend}: {}",
            reply.text()
        );
        stack.code_in_mail(mails_before + 1 + resend).await;
    }
    stack.clock.advance(Duration::from_secs(181));
    let refused = press_resend(client).await;
    assert_eq!(
        refused.header("location"),
        Some("/reset/code"),
        "POST/redirect/GET"
    );
    let page = client.follow(refused).await.text();
    assert!(
        page.contains("これ以上メールを再送信できません。最初からやり直してください。"),
        "the reset's own cap, not the mail limit: {page}"
    );
    assert!(!page.contains("このメールアドレスへの送信回数が上限に達しました"));
}

/// The manual's "メールを再送信する" under the production defaults of every limit: a first
/// mail and 5 resends, then starting again and doing it all once more, every mail arrives;
/// the refusals the user meets are the reset's own ("no more resends, start again"), never
/// the notifier's per-address limit; the last code still reissues the key.
async fn two_whole_reissues_with_every_resend_fit_the_default_limits(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut client = Client::new(stack.portal);

    send_every_code_a_reissue_allows(&stack, &mut client, 0).await;
    let csrf = csrf_in(&client.get("/reset").await.text());
    assert_eq!(
        client
            .post("/reset/cancel", &[("csrf", &csrf)])
            .await
            .header("location"),
        Some("/reset"),
        "最初からやり直す"
    );
    send_every_code_a_reissue_allows(&stack, &mut client, 6).await;
    assert_eq!(
        Stack::rows(&stack.notifier_db, "deliveries").await,
        12,
        "12 mails queued, 12 delivered"
    );
    assert_eq!(stack.sink.mails().len(), 12);

    // The second reissue was refused more resends, not ended: its newest code still works.
    let code = stack.code_in_mail(12).await;
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    let verified = client
        .post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(verified.header("location"), Some("/reset/confirm"));
    let csrf = csrf_in(&client.get("/reset/confirm").await.text());
    let confirmed = client.post("/reset/confirm", &[("csrf", &csrf)]).await;
    assert_eq!(confirmed.header("location"), Some("/reset/done"));
    let confirmed = client.follow(confirmed).await;
    assert_eq!(confirmed.status, 200, "step 4 with the new key");
    assert_ne!(
        stack.current_key().await.secret_base32,
        stack.first_key.secret_base32,
        "the key was reissued"
    );

    // Issue 14, item 4: the limits are coherent. The reissues an account may start in an
    // hour, each with every resend, fit the notifier's per-address cap...
    let (reset, notifier) = (
        kagi_reset::Settings::default(),
        kagi_notifier::Settings::default(),
    );
    assert!(
        reset.policy.starts_per_hour * (1 + reset.policy.max_resends)
            <= notifier.delivery.reset_codes_per_recipient_per_hour
    );
    // ...so a third reissue within the hour is refused by the reset service first, saying
    // when to come back (in the institution's zone, named), and no mail goes out.
    let third = start_reset(&mut client).await;
    assert_eq!(
        third.header("location"),
        Some("/reset"),
        "POST/redirect/GET"
    );
    let page = client.follow(third).await.text();
    assert!(
        page.contains("このメールアドレスへの送信回数が上限に達しました。")
            && page.contains(" JST 以降にもう一度お試しください。"),
        "{page}"
    );
    assert_eq!(
        Stack::rows(&stack.notifier_db, "deliveries").await,
        13,
        "12 codes and the notice, nothing more"
    );
}

kagi_testkit::both_backends!(two_whole_reissues_with_every_resend_fit_the_default_limits);

/// The absolute session lifetime the store tests use (the default, in milliseconds).
const EIGHT_HOURS: i64 = 8 * 3600 * 1000;

/// The store's SQL on both backends: sessions, the idle and absolute timeouts, the reset
/// handle and the fixed-window login counter.
async fn the_session_store_works(backend: kagi_testkit::Backend) {
    let db = kagi_testkit::TestDatabase::new(backend, "portal.db").await;
    let store = kagi_portal::store::Db::connect(&db.url, 2).await.unwrap();
    store.migrate().await.unwrap();

    let (cookie, created) = store.create_session(Some(ACCOUNT), 1_000).await.unwrap();
    let loaded = store
        .load_session(&cookie, 2_000, 900_000, EIGHT_HOURS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.account_id.as_deref(), Some(ACCOUNT));
    assert_eq!(loaded.csrf, created.csrf);
    store
        .set_reset(&loaded.id_hash, &cookie, "reset-handle", ACCOUNT)
        .await
        .unwrap();
    let loaded = store
        .load_session(&cookie, 3_000, 900_000, EIGHT_HOURS)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(loaded.reset_id.as_deref(), Some("reset-handle"));
    // At rest the handle is sealed under the cookie, which only the browser has.
    let (pool, _) = kagi_runtime::db::connect(&db.url, 1).await.unwrap();
    let (at_rest,): (String,) = sqlx::query_as("SELECT reset_id FROM sessions")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(!at_rest.contains("reset-handle"), "{at_rest}");
    let other_cookie = {
        let (other, created) = store.create_session(None, 3_000).await.unwrap();
        sqlx_copy_reset(&db.url, &loaded.id_hash, &created.id_hash).await;
        other
    };
    assert_eq!(
        store
            .load_session(&other_cookie, 3_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .unwrap()
            .reset_id,
        None,
        "a sealed handle copied into another session opens to nothing"
    );
    store.forget_reset(&loaded.id_hash).await.unwrap();
    assert!(
        store
            .load_session(&cookie, 4_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .unwrap()
            .reset_id
            .is_none()
    );
    // A renewed cookie keeps the session's start; however busy, it ends 8 hours on.
    let (busy_cookie, busy) = store.create_session(Some(ACCOUNT), 10_000).await.unwrap();
    let (renewed_cookie, renewed) = store.renew_session(&busy, 20_000).await.unwrap();
    assert_ne!(renewed_cookie, busy_cookie);
    assert_eq!(renewed.created_at, 10_000);
    assert!(
        store
            .load_session(&busy_cookie, 20_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .is_none(),
        "the old cookie is gone"
    );
    let mut now = 20_000;
    while now < 10_000 + EIGHT_HOURS - 600_000 {
        now += 600_000;
        assert!(
            store
                .load_session(&renewed_cookie, now, 900_000, EIGHT_HOURS)
                .await
                .unwrap()
                .is_some(),
            "busy and younger than 8 hours at {now}"
        );
    }
    assert!(
        store
            .load_session(&renewed_cookie, 10_000 + EIGHT_HOURS, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .is_none(),
        "8 hours after its start, however busy"
    );
    assert!(
        store
            .load_session("not-a-session", 4_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .load_session(&cookie, 4_000 + 900_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .is_none(),
        "idle too long"
    );
    assert!(
        store
            .load_session(&cookie, 5_000, 900_000, EIGHT_HOURS)
            .await
            .unwrap()
            .is_none(),
        "and deleted"
    );

    assert_eq!(
        store
            .count_attempt("ip:192.0.2.1", 10_000, 60_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_attempt("ip:192.0.2.1", 20_000, 60_000)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_attempt("ip:192.0.2.2", 20_000, 60_000)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_attempt("ip:192.0.2.1", 70_000, 60_000)
            .await
            .unwrap(),
        1,
        "a new window"
    );
    store
        .purge(1_000_000, 900_000, EIGHT_HOURS, 60_000)
        .await
        .unwrap();
    store.close().await;
}

/// Copies the stored (sealed) reset of session `from` into session `to`, as someone who
/// can write the database would.
async fn sqlx_copy_reset(url: &str, from: &str, to: &str) {
    let (pool, _) = kagi_runtime::db::connect(url, 1).await.unwrap();
    let (sealed,): (String,) = sqlx::query_as("SELECT reset_id FROM sessions WHERE id_hash = $1")
        .bind(from)
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE sessions SET reset_id = $1, reset_account = 'taro' WHERE id_hash = $2")
        .bind(sealed)
        .bind(to)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
}

kagi_testkit::both_backends!(the_session_store_works);

/// Runs menu 2 in `client` from the code in mail `n` to the confirmation; returns step 4,
/// where "セットアップキーを再発行する" leads.
async fn verify_and_confirm(stack: &Stack, client: &mut Client, n: usize) -> Reply {
    let code = stack.code_in_mail(n).await;
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    let verified = client
        .post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(verified.header("location"), Some("/reset/confirm"));
    let csrf = csrf_in(&client.get("/reset/confirm").await.text());
    let confirmed = client.post("/reset/confirm", &[("csrf", &csrf)]).await;
    assert_eq!(
        confirmed.header("location"),
        Some("/reset/done"),
        "POST/redirect/GET"
    );
    client.follow(confirmed).await
}

/// Session fixation, from the attacker's side: the attacker gets a session ID from the
/// portal and plants it in the victim's browser; the victim reissues the key. The reset
/// runs in a session issued fresh at "送信", so the planted ID never sees it.
async fn a_planted_session_id_does_not_carry_into_the_victims_reset(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut attacker = Client::new(stack.portal);
    attacker.get("/reset").await;
    let planted = attacker.cookies["kagi_session"].clone();

    let mut victim = Client::new(stack.portal);
    victim
        .cookies
        .insert("kagi_session".into(), planted.clone());
    let started = start_reset(&mut victim).await;
    assert_eq!(started.header("location"), Some("/reset/code"));
    assert!(
        session_cookie(&started).starts_with("kagi_session="),
        "a new session cookie at 送信"
    );
    assert_ne!(
        victim.cookies["kagi_session"], planted,
        "not the planted ID"
    );

    // The attacker, holding the planted ID, follows the victim's reset page by page.
    for path in ["/reset/code", "/reset/confirm", "/reset/done"] {
        let seen = attacker.get(path).await;
        assert_eq!(seen.status, 303, "{path}");
        assert_eq!(seen.header("location"), Some("/reset"), "{path}");
    }
    let key_page = verify_and_confirm(&stack, &mut victim, 1).await;
    assert_eq!(key_page.status, 200);
    let new_key = stack.current_key().await;
    assert_ne!(new_key.secret_base32, stack.first_key.secret_base32);
    let grouped = common::ShownSecret(&new_key.secret_base32).grouped();
    assert!(
        key_page.text().contains(&grouped),
        "the victim sees the new key"
    );
    for path in ["/reset/code", "/reset/confirm", "/reset/done", "/key"] {
        let seen = attacker.get(path).await.text();
        assert!(
            !seen.contains(&grouped),
            "{path} shows the attacker the key"
        );
        assert!(!seen.contains(&new_key.secret_base32), "{path}");
    }
}

/// The new key is shown once, in the answer to "セットアップキーを再発行する": reloading
/// step 4, or sending the confirmation again, shows it no more (menu 1 is where to see it).
async fn reloading_step_4_does_not_show_the_key_again(backend: Backend) {
    let stack = Box::pin(Stack::start_on(backend)).await;
    let mut client = Client::new(stack.portal);
    start_reset(&mut client).await;
    let shown = verify_and_confirm(&stack, &mut client, 1).await;
    let new_key = stack.current_key().await;
    let grouped = common::ShownSecret(&new_key.secret_base32).grouped();
    assert_eq!(shown.status, 200);
    assert!(shown.text().contains("4. リセット完了"));
    assert!(shown.text().contains(&grouped), "shown once");

    let reloaded = client.get("/reset/done").await;
    assert!(!reloaded.text().contains(&grouped), "not on a reload");
    assert!(!reloaded.text().contains(&new_key.secret_base32));
    let csrf = csrf_in(&client.get("/reset").await.text());
    let again = client.post("/reset/confirm", &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 303, "no reset left to confirm");
    assert_eq!(again.header("location"), Some("/reset"));
    assert!(!again.text().contains(&grouped));
}

kagi_testkit::both_backends!(
    a_planted_session_id_does_not_carry_into_the_victims_reset,
    reloading_step_4_does_not_show_the_key_again,
);

/// Issue 14, item 7: every POST answers with a redirect, so a reload after a wrong code
/// shows the page again without sending the code again (and without using up a try).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_after_a_wrong_code_does_not_use_up_a_try() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    start_reset(&mut client).await;
    let code = stack.code_in_mail(1).await;
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    let wrong = client
        .post(
            "/reset/verify",
            &[("csrf", &csrf), ("code", &common::wrong(&code))],
        )
        .await;
    assert_eq!(wrong.status, 303, "POST/redirect/GET");
    assert_eq!(wrong.header("location"), Some("/reset/code"));
    let page = client.follow(wrong).await.text();
    assert!(
        page.contains("確認コードが違います（あと4回入力できます）"),
        "{page}"
    );
    for _ in 0..3 {
        let reloaded = client.get("/reset/code").await.text();
        assert!(!reloaded.contains("確認コードが違います"), "shown once");
    }
    let again = client
        .post(
            "/reset/verify",
            &[("csrf", &csrf), ("code", &common::wrong(&code))],
        )
        .await;
    let page = client.follow(again).await.text();
    assert!(page.contains("あと3回"), "the reloads used no try: {page}");
}

/// Types `code` on step 2 and presses "確認する"; returns the redirect it answers with.
async fn type_code(client: &mut Client, code: &str) -> Reply {
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    let reply = client
        .post("/reset/verify", &[("csrf", &csrf), ("code", code)])
        .await;
    assert_eq!(reply.status, 303, "POST/redirect/GET");
    reply
}

/// Issue 14, item 8b: after "メールを再送信する", the first mail's code is refused saying the
/// newest mail's code replaced it (in Japanese and in English), and it still uses up a try;
/// a code that is merely wrong reads as before; the newest code goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_mails_code_after_a_resend_says_the_newest_mail_replaced_it() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    start_reset(&mut client).await;
    let mut old = stack.code_in_mail(1).await;
    let mut new = old.clone();
    let mut mails = 1;
    // Two codes drawn alike (one chance in a million): resend again for a distinct one.
    while new == old {
        old = new;
        stack.clock.advance(Duration::from_secs(181));
        let resent = press_resend(&mut client).await;
        assert_eq!(resent.header("location"), Some("/reset/code?resent=1"));
        mails += 1;
        new = stack.code_in_mail(mails).await;
    }
    let reply = type_code(&mut client, &old).await;
    let page = client.follow(reply).await.text();
    assert!(
        page.contains(
            "この確認コードは、メールの再送信により新しいコードに置き換えられました。\
             最新のメールに記載された確認コードを入力してください（あと4回入力できます）。"
        ),
        "{page}"
    );
    assert!(!page.contains("確認コードが違います"), "{page}");

    client.get("/lang?to=en&next=/reset/code").await;
    let reply = type_code(&mut client, &old).await;
    let page = client.follow(reply).await.text();
    assert!(
        page.contains(
            "This confirmation code was replaced when the mail was sent again. \
             Enter the code in the newest mail (3 tries left)."
        ),
        "{page}"
    );
    let neither = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| *c != old && *c != new)
        .unwrap();
    let reply = type_code(&mut client, &neither).await;
    let page = client.follow(reply).await.text();
    assert!(
        page.contains("The confirmation code is incorrect (2 tries left)."),
        "{page}"
    );

    let reply = type_code(&mut client, &new).await;
    assert_eq!(reply.header("location"), Some("/reset/confirm"));
}

/// Issue 14, item 6: logging out on a shared computer tells the browser to forget the
/// site (cache, back/forward cache, cookies, storage), then says 「ログアウトしました」.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_clears_the_site_data_and_says_so() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    log_in(&mut client, PASSWORD).await;
    let csrf = csrf_in(&client.get("/key").await.text());
    let out = client.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert_eq!(
        out.header("clear-site-data"),
        Some("\"cache\", \"cookies\", \"storage\"")
    );
    assert!(!client.cookies.contains_key("kagi_session"));
    let page = client.follow(out).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text().contains("<h1>ログアウトしました</h1>"),
        "{}",
        page.text()
    );
    assert!(
        client
            .get("/key")
            .await
            .text()
            .contains("システムにログインしていません")
    );

    // In English, the page after logout is still in English.
    let mut client = Client::new(stack.portal);
    client.get("/lang?to=en&next=/").await;
    log_in(&mut client, PASSWORD).await;
    let csrf = csrf_in(&client.get("/key").await.text());
    let out = client.post("/logout", &[("csrf", &csrf)]).await;
    client.cookies.remove("lang");
    let page = client.follow(out).await.text();
    assert!(page.contains("You have logged out"), "{page}");
}

/// The relative luminance of `#rrggbb` (WCAG 2).
fn luminance(hex: &str) -> f64 {
    let channel = |i: usize| {
        let c = f64::from(u8::from_str_radix(&hex[i..i + 2], 16).unwrap()) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5)
}

/// Issue 14, item 9: what a careful reader notices. Full-width brackets in Japanese, error
/// sentences ending in 。, "Your password", the Apple heading before login, no otpauth
/// button on a desktop, a skip link, input borders of at least 3:1 contrast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pages_read_carefully_and_meet_the_contrast_and_keyboard_rules() {
    let stack = Box::pin(Stack::start()).await;
    let mut client = Client::new(stack.portal);
    let top = client.get("/").await.text();
    assert!(
        top.contains("QRコード（セットアップキー）"),
        "full-width brackets"
    );
    assert!(top.contains("<a class=\"skip\" href=\"#main\">本文へ移動</a>"));
    assert!(top.contains("<main id=\"main\""));
    let apple = client.get("/login?next=/apple").await;
    assert_eq!(apple.status, 200);
    client.user_agent = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1".into();
    let prompt = client.get("/apple").await.text();
    assert!(prompt.contains("<h1>【Apple端末向け】"), "{prompt}");
    client.user_agent = "Mozilla/5.0 (test)".into();

    start_reset(&mut client).await;
    let code = stack.code_in_mail(1).await;
    let step2 = client.get("/reset/code").await.text();
    assert!(step2.contains("確認コード（数字6桁）"));
    assert!(step2.contains("JST"), "times say their zone");
    let csrf = csrf_in(&step2);
    let wrong = client
        .post(
            "/reset/verify",
            &[("csrf", &csrf), ("code", &common::wrong(&code))],
        )
        .await;
    let page = client.follow(wrong).await.text();
    assert!(
        page.contains("（あと4回入力できます）。"),
        "a sentence ends with 。"
    );

    client.get("/lang?to=en&next=/").await;
    let form = client.get("/login").await.text();
    assert!(form.contains(">Your password</label>"), "{form}");

    let mut desktop = Client::new(stack.portal);
    let mut phone = Client::new(stack.portal);
    phone.user_agent = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36".into();
    for (client, shown) in [(&mut desktop, false), (&mut phone, true)] {
        log_in(client, PASSWORD).await;
        let key = client.get("/key").await.text();
        assert_eq!(
            key.contains("id=\"add-here\""),
            shown,
            "{}",
            client.user_agent
        );
    }

    let css = client.get("/static/portal.css").await.text();
    let border = css
        .split("input {")
        .nth(1)
        .and_then(|rule| rule.split("border: 1px solid ").nth(1))
        .map(|v| v[..7].to_owned())
        .unwrap();
    let contrast = (1.0 + 0.05) / (luminance(&border) + 0.05);
    assert!(contrast >= 3.0, "input border {border}: {contrast:.2}:1");
    assert!(css.contains("a:focus-visible"), "a plain focus ring");
}

/// Another university's identity, configured once for the whole deployment.
fn omu() -> kagi_runtime::Institution {
    use kagi_runtime::Localized;
    kagi_runtime::Institution {
        name: Localized::new("大阪公立大学", "Osaka Metropolitan University"),
        short_name: Localized::new("OMU二要素認証", "OMU 2FA"),
        department: Localized::new(
            "大阪公立大学 情報基盤センター",
            "Center for Information Infrastructure, Osaka Metropolitan University",
        ),
        account_id_label: Localized::new("OMUID", "OMUID"),
        helpdesk_url: "https://www.omu.ac.jp/cii/start-trouble/".into(),
        manual_url: "https://www.omu.ac.jp/cii/2fa-manual.pdf".into(),
        onboarding_url: "https://www.omu.ac.jp/cii/start/".into(),
        otpauth_issuer: "OMU".into(),
        ..kagi_runtime::Institution::default()
    }
}

/// Fails when `text` names any institution but OMU (the defaults' sample one, or kagi).
fn names_only_omu(what: &str, text: &str) {
    for other in [
        "サンプル大学",
        "Example Univ",
        "www.example.ac.jp",
        "issuer=kagi",
        "kagi:",
    ] {
        assert!(!text.contains(other), "{what} names {other:?}:\n{text}");
    }
}

/// The text and HTML bodies and the subject of mail `n`, as the user reads them.
async fn mail_text(stack: &Stack, n: usize) -> (String, String) {
    let mails = stack.sink.wait_for_raw(n).await;
    let mail = mail_parser::MessageParser::default()
        .parse(&mails[n - 1])
        .unwrap();
    let from = mail
        .from()
        .and_then(|f| f.first())
        .and_then(|a| a.name())
        .unwrap_or_default()
        .to_owned();
    let body = format!(
        "{}\n{}\n{}",
        from,
        mail.body_text(0).unwrap_or_default(),
        mail.body_html(0).unwrap_or_default()
    );
    (mail.subject().unwrap_or_default().to_owned(), body)
}

/// Issue 14, items 1, 2 and 10: the institution is configured once, and every page, both
/// mails and the authenticator entry name it and no other; the mails follow the language
/// the user reads the portal in.
async fn every_page_and_mail_names_the_configured_institution_only(backend: Backend) {
    let stack = Box::pin(Stack::start_for(backend, &omu(), |_| {})).await;
    let mut client = Client::new(stack.portal);
    for path in ["/", "/login", "/reset", "/apple", "/no-such-page"] {
        let page = client.get(path).await.text();
        assert!(page.contains("大阪公立大学"), "{path}");
        names_only_omu(path, &page);
    }
    let top = client.get("/").await.text();
    assert!(top.contains("© 大阪公立大学 情報基盤センター"));
    assert!(top.contains("https://www.omu.ac.jp/cii/start-trouble/"));

    log_in(&mut client, PASSWORD).await;
    let key = client.get("/key").await.text();
    names_only_omu("/key", &key);
    assert!(key.contains("OMUID"));
    let uri = stack.current_key().await.otpauth_uri;
    assert!(uri.starts_with("otpauth://totp/OMU:taro?"), "{uri}");
    assert!(uri.contains("&issuer=OMU&"), "{uri}");

    // Showing the key mailed the "your setup key was displayed" notice (issue 9).
    let (subject, body) = mail_text(&stack, 1).await;
    assert_eq!(subject, "[OMU二要素認証]セットアップキー表示のお知らせ");
    names_only_omu("the key-displayed notice", &body);

    start_reset(&mut client).await;
    names_only_omu("step 2", &client.get("/reset/code").await.text());
    let (subject, body) = mail_text(&stack, 2).await;
    assert_eq!(subject, "[OMU二要素認証]二要素認証の再設定のご案内");
    assert!(
        body.contains("大阪公立大学 二要素認証管理システム"),
        "{body}"
    );
    assert!(body.contains("https://www.omu.ac.jp/cii/start-trouble/"));
    names_only_omu("the reset mail", &body);
    let done = verify_and_confirm(&stack, &mut client, 2).await.text();
    names_only_omu("step 4", &done);
    let (subject, body) = mail_text(&stack, 3).await;
    assert!(subject.starts_with("[OMU二要素認証]"), "{subject}");
    names_only_omu("the notice", &body);

    // Item 10: a user reading the portal in English gets the mail in English.
    client.get("/lang?to=en&next=/").await;
    let top = client.get("/").await.text();
    assert!(top.contains("Osaka Metropolitan University"));
    names_only_omu("/ in English", &top);
    start_reset(&mut client).await;
    let (subject, body) = mail_text(&stack, 4).await;
    assert_eq!(
        subject,
        "[OMU 2FA] Resetting your two-factor authentication"
    );
    assert!(body.contains("Confirmation code: "), "{body}");
    assert!(body.contains("Osaka Metropolitan University"), "{body}");
    names_only_omu("the English reset mail", &body);
}

kagi_testkit::both_backends!(every_page_and_mail_names_the_configured_institution_only);
