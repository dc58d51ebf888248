//! `/helpdesk` (issue 15) as an operator and as everyone else sees it, over plain HTTP
//! against the real keystore, reset service and notifier (mail to a real SMTP server), on
//! SQLite and PostgreSQL: one page answers the FAQ's questions about an account; every
//! action needs a reason, lands in the owning service's audit trail with the operator and
//! mails the user; a user without the role sees nothing and changes nothing.

use kagi_portal::config::LoginMode;
use kagi_proto::v1 as pb;
use kagi_runtime::Clock as _;
use kagi_testkit::Backend;
use secrecy::SecretString;

use crate::common::http::{Client, Reply, csrf_in};
use crate::common::{self, ACCOUNT, PASSWORD, Stack};

pub const OPERATOR: &str = "ops1";

pub async fn stack_with_operator(backend: Backend) -> Stack {
    let stack = Box::pin(Stack::start_with_on(backend, |s| {
        s.helpdesk.operators = vec![OPERATOR.into()];
    }))
    .await;
    stack
        .accounts
        .add(
            OPERATOR,
            "ops1@example.ac.jp",
            SecretString::from(PASSWORD),
            0,
        )
        .await
        .unwrap();
    stack
}

async fn log_in_as(client: &mut Client, account: &str) {
    let form = client.get("/login?next=/helpdesk").await;
    let csrf = csrf_in(&form.text());
    let reply = client
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("account_id", account),
                ("password", PASSWORD),
                ("next", "/helpdesk"),
            ],
        )
        .await;
    assert_eq!(reply.status, 303, "{account} logs in");
}

/// Five wrong codes: the account locks.
pub async fn lock_out(stack: &Stack) {
    let mut login = common::keystore_as(None, stack.keystore, "login");
    for _ in 0..5 {
        login
            .verify_code(pb::VerifyCodeRequest {
                account_id: ACCOUNT.into(),
                code: "000000".into(),
            })
            .await
            .unwrap();
    }
}

async fn verify_now(stack: &Stack) -> pb::VerifyResult {
    let code = common::totp(
        &stack.first_key.secret_base32,
        u64::try_from(stack.keystore_clock.now_ms() / 1000).unwrap(),
    );
    common::keystore_as(None, stack.keystore, "login")
        .verify_code(pb::VerifyCodeRequest {
            account_id: ACCOUNT.into(),
            code,
        })
        .await
        .unwrap()
        .into_inner()
        .result()
}

/// Menu 2's first step through the portal: the code mail goes out.
pub async fn start_reissue(stack: &Stack) {
    let mut user = Client::new(stack.portal);
    let form = user.get("/reset").await;
    let csrf = csrf_in(&form.text());
    let reply = user
        .post(
            "/reset/start",
            &[
                ("csrf", &csrf),
                ("account_id", ACCOUNT),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(reply.status, 303);
    stack.code_in_mail(1).await;
}

async fn act(client: &mut Client, action: &str, reason: &str) -> Reply {
    let page = client.get("/helpdesk?account=taro").await;
    let csrf = csrf_in(&page.text());
    client
        .post(
            "/helpdesk/action",
            &[
                ("csrf", &csrf),
                ("account", ACCOUNT),
                ("action", action),
                ("reason", reason),
            ],
        )
        .await
}

pub fn subjects(raw: &[Vec<u8>]) -> Vec<String> {
    raw.iter()
        .map(|m| {
            mail_parser::MessageParser::default()
                .parse(m)
                .unwrap()
                .subject()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

async fn one_page_answers_the_faq_and_every_action_is_audited_and_mailed(backend: Backend) {
    let stack = stack_with_operator(backend).await;
    lock_out(&stack).await;
    start_reissue(&stack).await;
    let mut operator = Client::new(stack.portal);
    log_in_as(&mut operator, OPERATOR).await;

    let page = operator.get("/helpdesk?account=taro").await;

    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("id=\"key-status\">登録済み"), "{html}");
    assert!(html.contains("id=\"times-locked\">1"), "locked once");
    assert!(html.contains("SHA1 / 6 digits / 30 s"));
    assert!(
        html.contains("id=\"reset-state\">CODE_SENT"),
        "the reissue in progress"
    );
    assert!(html.contains("id=\"recovery\">t****@e*****.ac.jp"));
    assert!(html.contains("id=\"attempts-left\">5"));
    assert!(
        html.contains("<td class=\"kind\">RESET_CODE</td>"),
        "the code mail is listed"
    );
    assert!(
        html.contains("<td class=\"reply\">250"),
        "with the SMTP server's reply"
    );
    assert!(!html.contains(common::EMAIL), "addresses are masked");
    assert!(
        !html.contains(&stack.first_key.secret_base32),
        "no secret on the page"
    );
    assert!(html.contains("<td class=\"action\">lockout</td>"));

    let reply = act(&mut operator, "unlock", "本人から電話。学生証で確認").await;
    assert_eq!(reply.status, 303, "POST/redirect/GET");
    assert_eq!(reply.header("location"), Some("/helpdesk?account=taro"));
    let after = operator.follow(reply).await.text();
    assert!(
        after.contains("ロックを解除しました。 利用者にメールで通知しました。"),
        "{after}"
    );
    assert_eq!(
        verify_now(&stack).await,
        pb::VerifyResult::Accepted,
        "unlocked"
    );
    let reply = act(&mut operator, "cancel_reset", "本人が取り消しを希望").await;
    let after = operator.follow(reply).await.text();
    assert!(
        after.contains("再発行の手続きを取り消しました。"),
        "{after}"
    );
    assert!(after.contains("id=\"reset-state\">CANCELLED"));
    let reply = act(&mut operator, "revoke", "端末の盗難の届け出").await;
    let after = operator.follow(reply).await.text();
    assert!(
        after.contains("セットアップキーを無効にしました。"),
        "{after}"
    );
    assert!(after.contains("無効化済み"));

    assert_eq!(
        verify_now(&stack).await,
        pb::VerifyResult::NoKey,
        "logins refused"
    );
    for (action, reason) in [
        ("admin_unlock", "本人から電話。学生証で確認"),
        ("admin_cancel_reset", "本人が取り消しを希望"),
        ("admin_revoke", "端末の盗難の届け出"),
    ] {
        let row = format!(
            "<td class=\"action\">{action}</td><td class=\"detail\">operator=ops1 reason={reason}</td>"
        );
        assert!(after.contains(&row), "{action} in the trail: {after}");
    }
    let mails = stack.sink.wait_for_raw(4).await;
    let notices = subjects(&mails)
        .iter()
        .filter(|s| s.contains("ヘルプデスクによるアカウント操作のお知らせ"))
        .count();
    assert_eq!(notices, 3, "one mail per action: {:?}", subjects(&mails));
}

async fn a_user_without_the_role_sees_nothing_and_changes_nothing(backend: Backend) {
    let stack = stack_with_operator(backend).await;
    lock_out(&stack).await;
    let mut anonymous = Client::new(stack.portal);
    let reply = anonymous.get("/helpdesk?account=taro").await;
    assert_eq!(reply.status, 303, "not logged in: the login first");
    let mut user = Client::new(stack.portal);
    log_in_as(&mut user, ACCOUNT).await;

    let page = user.get("/helpdesk?account=taro").await;

    assert_eq!(page.status, 403);
    let html = page.text();
    assert!(html.contains("ITヘルプデスクの担当者のみ"));
    for secret_fact in ["t****", "times-locked", "RESET_CODE", "lockout"] {
        assert!(
            !html.contains(secret_fact),
            "{secret_fact} shown to a non-operator"
        );
    }
    let csrf = csrf_in(&user.get("/").await.text());
    let refused = user
        .post(
            "/helpdesk/action",
            &[
                ("csrf", &csrf),
                ("account", ACCOUNT),
                ("action", "unlock"),
                ("reason", "I unlock myself"),
            ],
        )
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        verify_now(&stack).await,
        pb::VerifyResult::LockedOut,
        "still locked"
    );
}

async fn an_action_without_a_reason_or_token_changes_nothing(backend: Backend) {
    let stack = stack_with_operator(backend).await;
    lock_out(&stack).await;
    let mut operator = Client::new(stack.portal);
    log_in_as(&mut operator, OPERATOR).await;

    let reply = act(&mut operator, "unlock", "   ").await;
    let after = operator.follow(reply).await.text();
    assert!(after.contains("理由を入力してください。"), "{after}");
    let forged = operator
        .post(
            "/helpdesk/action",
            &[
                ("account", ACCOUNT),
                ("action", "unlock"),
                ("reason", "csrf"),
            ],
        )
        .await;
    assert_eq!(forged.status, 403, "no CSRF token, no action");

    assert_eq!(verify_now(&stack).await, pb::VerifyResult::LockedOut);
    assert!(!after.contains("admin_unlock"));
}

kagi_testkit::both_backends!(
    one_page_answers_the_faq_and_every_action_is_audited_and_mailed,
    a_user_without_the_role_sees_nothing_and_changes_nothing,
    an_action_without_a_reason_or_token_changes_nothing,
);

/// Trusted-header mode: the SSO proxy's group header makes the operator, on every request;
/// the same person without the group (or the header sent by anyone else) sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_sso_the_group_header_makes_the_operator() {
    let stack = Box::pin(Stack::start_with(|s| {
        s.login.mode = LoginMode::TrustedHeader;
        s.login.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
        s.helpdesk.group_header = "x-kagi-groups".into();
        s.helpdesk.group_values = vec!["it-helpdesk".into()];
    }))
    .await;
    let mut client = Client::new(stack.portal);
    let me = [
        ("X-Remote-User", OPERATOR),
        ("x-kagi-groups", "staff, it-helpdesk"),
    ];
    assert_eq!(
        client.get_with("/login?next=/helpdesk", &me).await.status,
        200
    );

    let page = client.get_with("/helpdesk?account=taro", &me).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("id=\"key-status\">登録済み"));

    let without_group = client
        .get_with(
            "/helpdesk?account=taro",
            &[("X-Remote-User", OPERATOR), ("x-kagi-groups", "staff")],
        )
        .await;
    assert_eq!(
        without_group.status, 403,
        "the role is checked on every request"
    );
    let twice = client
        .get_with(
            "/helpdesk?account=taro",
            &[
                ("X-Remote-User", OPERATOR),
                ("x-kagi-groups", "it-helpdesk"),
                ("x-kagi-groups", "it-helpdesk"),
            ],
        )
        .await;
    assert_eq!(twice.status, 403, "a doubled group header is not believed");
}
