//! Menu 2 (二要素認証のリセット) end to end with every gRPC hop on mTLS: the portal calls
//! the reset service and the keystore, the reset service calls the keystore and the notifier,
//! each over TLS presenting its own client certificate from the test's CA. The user sees the
//! same pages and gets the same mail; the new key works for the next login.

use kagi_proto::v1 as pb;
use kagi_testkit::Backend;

use crate::common::http::{Client, csrf_in};
use crate::common::{ACCOUNT, PASSWORD, ShownSecret, Stack};

async fn the_whole_reissue_runs_with_every_hop_on_mtls(backend: Backend) {
    let stack = Box::pin(Stack::start_mtls_on(backend)).await;
    let mut client = Client::new(stack.portal);

    // 1. ID and password (portal → reset over mTLS; reset → notifier over mTLS).
    let csrf = csrf_in(&client.get("/reset").await.text());
    let started = client
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

    // 2. The code from the mail; 3. the final confirmation (reset → keystore over mTLS).
    let code = stack.code_in_mail(1).await;
    let csrf = csrf_in(&client.get("/reset/code").await.text());
    let verified = client
        .post("/reset/verify", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(verified.header("location"), Some("/reset/confirm"));
    let csrf = csrf_in(&client.get("/reset/confirm").await.text());
    let confirmed = client.post("/reset/confirm", &[("csrf", &csrf)]).await;
    assert_eq!(confirmed.header("location"), Some("/reset/done"));
    let done = client.follow(confirmed).await;
    assert_eq!(done.status, 200, "{}", done.text());
    assert!(done.text().contains("4. リセット完了"));

    // The keystore (asked over mTLS as the portal) holds the key step 4 showed.
    let new_key = stack.current_key().await;
    assert_ne!(new_key.secret_base32, stack.first_key.secret_base32);
    assert!(
        done.text()
            .contains(&ShownSecret(&new_key.secret_base32).grouped())
    );
    assert_eq!(
        stack.login_with_secret(&new_key.secret_base32).await,
        pb::VerifyResult::Accepted,
        "the new key logs in"
    );
    assert_eq!(
        stack
            .login_with_secret(&stack.first_key.secret_base32)
            .await,
        pb::VerifyResult::Rejected,
        "the old key no longer does"
    );
}

kagi_testkit::both_backends!(the_whole_reissue_runs_with_every_hop_on_mtls);
