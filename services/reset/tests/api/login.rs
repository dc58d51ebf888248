//! `kagi.v1.Directory/Authenticate`, the portal's `local` login: the same accounts, the same
//! single answer for every bad credential, its own rate limits.

use kagi_proto::v1 as pb;
use kagi_proto::v1::directory_client::DirectoryClient;
use tonic::Code;

use crate::helpers::{Backend, PASSWORD, Stack, as_caller, channel, portal};
use kagi_testkit::both_backends;

both_backends!(
    the_right_password_logs_in_and_every_wrong_answer_looks_the_same,
    logins_are_rate_limited_and_only_the_portal_may_ask,
);

async fn authenticate(
    stack: &Stack,
    account: &str,
    password: &str,
    ip: &str,
) -> Result<(), tonic::Status> {
    let addr = stack.reset.as_ref().unwrap().addr;
    let mut client = DirectoryClient::new(channel(addr).await);
    let request = pb::AuthenticateRequest {
        account_id: account.into(),
        password: password.into(),
        client_ip: ip.into(),
    };
    client.authenticate(portal(request)).await.map(|_| ())
}

async fn the_right_password_logs_in_and_every_wrong_answer_looks_the_same(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("l1").await;
    stack.account("l1off").await;
    stack.accounts.set_enabled("l1off", false, 0).await.unwrap();

    authenticate(&stack, "l1", PASSWORD, "192.0.2.10")
        .await
        .unwrap();

    for (account, password) in [
        ("l1", "not-the-password"),
        ("nobody", PASSWORD),
        ("l1off", PASSWORD),
    ] {
        let refusal = authenticate(&stack, account, password, "192.0.2.10")
            .await
            .unwrap_err();
        assert_eq!(refusal.code(), Code::Unauthenticated, "{account}");
        assert_eq!(
            refusal.message(),
            "the account ID or password is incorrect",
            "{account}"
        );
    }
    let malformed = authenticate(&stack, "l1", "", "192.0.2.10")
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert!(stack.sink.mails().is_empty(), "a login sends no mail");
}

async fn logins_are_rate_limited_and_only_the_portal_may_ask(backend: Backend) {
    let stack = Stack::start_with(backend, |s| {
        s.policy.per_account_max = 2;
        s.policy.per_ip_max = 10;
        // A known caller that is not the portal.
        s.auth.tokens.insert(
            "login".into(),
            secrecy::SecretString::from(crate::helpers::token_of("login")),
        );
    })
    .await;
    stack.account("l2").await;

    authenticate(&stack, "l2", "guess-1", "198.51.100.20")
        .await
        .unwrap_err();
    // Right passwords are not counted (issue 14, item 5): however many, none locks.
    for ip in ["198.51.100.21", "198.51.100.22", "198.51.100.23"] {
        authenticate(&stack, "l2", PASSWORD, ip).await.unwrap();
    }
    authenticate(&stack, "l2", "guess-2", "198.51.100.24")
        .await
        .unwrap_err();
    let limited = authenticate(&stack, "l2", PASSWORD, "198.51.100.25")
        .await
        .unwrap_err();
    assert_eq!(
        limited.code(),
        Code::ResourceExhausted,
        "even the right password once two failures are counted"
    );
    assert!(
        kagi_proto::retry_at(&limited).is_some(),
        "the refusal says when to try again"
    );
    // Login attempts do not use up the account's reset starts.
    stack
        .start_reset("l2", PASSWORD, "198.51.100.23")
        .await
        .unwrap();

    let addr = stack.reset.as_ref().unwrap().addr;
    let mut client = DirectoryClient::new(channel(addr).await);
    let request = pb::AuthenticateRequest {
        account_id: "l2".into(),
        password: PASSWORD.into(),
        client_ip: "192.0.2.1".into(),
    };
    let denied = client
        .authenticate(as_caller("login", request))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
}
