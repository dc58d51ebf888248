//! The attacker's side: brute force, enumeration, racing starts, rate limits, stolen
//! databases and forged reset IDs.

use kagi_proto::v1 as pb;
use kagi_proto::v1::directory_client::DirectoryClient;
use secrecy::SecretString;
use sha2::Digest as _;
use sqlx::Row as _;

use crate::helpers::{Backend, EMAIL, PASSWORD, Stack, sql, wrong};
use kagi_testkit::both_backends;

both_backends!(
    the_fifth_wrong_code_locks_the_reset,
    parallel_guesses_cannot_pass_the_cap,
    unknown_disabled_and_wrong_password_get_the_same_answer,
    two_concurrent_starts_leave_one_live_reset,
    a_new_start_supersedes_the_older_reset,
    starts_are_rate_limited_per_account_and_per_ip,
    reset_ids_and_codes_are_stored_only_hashed,
    every_refusal_costs_one_argon2id_verification_like_a_right_password,
);

async fn the_fifth_wrong_code_locks_the_reset(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b1").await;
    let (reset_id, code) = stack.start_and_read_code("b1").await;
    let bad = wrong(&code);
    for left in (1..5).rev() {
        let reply = stack.verify(&reset_id, &bad).await.unwrap();
        assert_eq!(
            reply.result(),
            pb::CodeCheck::WrongCode,
            "確認コードが違います"
        );
        assert_eq!(reply.attempts_remaining, left);
    }
    let fifth = stack.verify(&reset_id, &bad).await.unwrap();
    assert_eq!(fifth.result(), pb::CodeCheck::Locked);
    // Dead: even the right code is refused now.
    let right = stack.verify(&reset_id, &code).await.unwrap();
    assert_eq!(right.result(), pb::CodeCheck::Locked);
    assert_eq!(stack.get(&reset_id).await.state(), pb::ResetState::Locked);
    assert_eq!(
        stack.confirm(&reset_id).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    assert_eq!(
        stack.resend(&reset_id).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
}

async fn parallel_guesses_cannot_pass_the_cap(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b2").await;
    let (reset_id, code) = stack.start_and_read_code("b2").await;
    // 30 distinct wrong guesses at once.
    let right: u32 = code.parse().unwrap();
    let guesses: Vec<String> = (1..=30)
        .map(|i| format!("{:06}", (right + i) % 1_000_000))
        .collect();
    let tasks: Vec<_> = guesses
        .into_iter()
        .map(|guess| {
            let mut client = stack.client.clone();
            let reset_id = reset_id.clone();
            tokio::spawn(async move {
                let request = crate::helpers::portal(pb::VerifyResetCodeRequest {
                    reset_id,
                    code: guess,
                });
                client
                    .verify_code(request)
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.push(task.await.unwrap());
    }
    let wrong_codes = replies
        .iter()
        .filter(|r| {
            r.as_ref()
                .is_ok_and(|r| r.result() == pb::CodeCheck::WrongCode)
        })
        .count();
    assert_eq!(wrong_codes, 4, "only four answers say 'try again'");
    let rows = sql(&stack.reset_db, "SELECT wrong_attempts, state FROM resets").await;
    assert_eq!(rows[0].get::<i64, _>("wrong_attempts"), 5);
    assert_eq!(rows[0].get::<String, _>("state"), "locked");
    assert_eq!(
        stack.verify(&reset_id, &code).await.unwrap().result(),
        pb::CodeCheck::Locked
    );
}

async fn unknown_disabled_and_wrong_password_get_the_same_answer(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b3").await;
    stack.account("b3off").await;
    stack.accounts.set_enabled("b3off", false, 0).await.unwrap();

    let unknown = stack
        .start_reset("nobody", PASSWORD, "192.0.2.1")
        .await
        .unwrap_err();
    let disabled = stack
        .start_reset("b3off", PASSWORD, "192.0.2.1")
        .await
        .unwrap_err();
    let wrong_pw = stack
        .start_reset("b3", "not-the-password", "192.0.2.1")
        .await
        .unwrap_err();
    for refusal in [&unknown, &disabled, &wrong_pw] {
        assert_eq!(refusal.code(), tonic::Code::Unauthenticated);
        assert_eq!(refusal.message(), "the account ID or password is incorrect");
    }
    assert!(stack.sink.mails().is_empty(), "no mail for a refused start");
    let live = sql(&stack.reset_db, "SELECT COUNT(*) AS n FROM resets").await;
    assert_eq!(live[0].get::<i64, _>("n"), 0);
}

async fn two_concurrent_starts_leave_one_live_reset(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b4").await;
    let (a, b) = tokio::join!(
        stack.start_reset("b4", PASSWORD, "192.0.2.1"),
        stack.start_reset("b4", PASSWORD, "192.0.2.2"),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let live = sql(
        &stack.reset_db,
        "SELECT COUNT(*) AS n FROM resets WHERE state IN ('code_sent', 'verified', 'confirming')",
    )
    .await;
    assert_eq!(live[0].get::<i64, _>("n"), 1, "exactly one live reset");
    let states = [
        stack.get(&a.reset_id).await.state(),
        stack.get(&b.reset_id).await.state(),
    ];
    assert!(states.contains(&pb::ResetState::CodeSent), "{states:?}");
    assert!(states.contains(&pb::ResetState::Superseded), "{states:?}");
}

async fn a_new_start_supersedes_the_older_reset(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b5").await;
    let (first, first_code) = stack.start_and_read_code("b5").await;
    stack.verify(&first, &first_code).await.unwrap();
    let (second, second_code) = stack.start_and_read_code("b5").await;

    let old = stack.confirm(&first).await.unwrap_err();
    assert_eq!(old.code(), tonic::Code::FailedPrecondition);
    assert!(old.message().contains("newer reset"), "{}", old.message());
    assert_eq!(stack.get(&first).await.state(), pb::ResetState::Superseded);
    assert_eq!(
        stack.verify(&second, &second_code).await.unwrap().result(),
        pb::CodeCheck::Verified
    );
    stack.confirm(&second).await.unwrap();
    assert_eq!(stack.rotations("b5").await, 1);
}

async fn starts_are_rate_limited_per_account_and_per_ip(backend: Backend) {
    let stack = Stack::start_with(backend, |s| {
        s.policy.per_account_max = 2;
        s.policy.per_ip_max = 3;
    })
    .await;
    stack.account("b6").await;
    // Per account: wrong passwords count, from any address; the right one does not (issue
    // 14, item 5), and the refusal says when to try again (item 4).
    let first = stack
        .start_reset("b6", "guess-1", "198.51.100.1")
        .await
        .unwrap_err();
    assert_eq!(first.code(), tonic::Code::Unauthenticated);
    stack
        .start_reset("b6", PASSWORD, "198.51.100.2")
        .await
        .unwrap();
    let second = stack
        .start_reset("b6", "guess-2", "198.51.100.3")
        .await
        .unwrap_err();
    assert_eq!(second.code(), tonic::Code::Unauthenticated);
    let third = stack
        .start_reset("b6", PASSWORD, "198.51.100.7")
        .await
        .unwrap_err();
    assert_eq!(third.code(), tonic::Code::ResourceExhausted);
    assert!(kagi_proto::retry_at(&third).is_some());
    // Unknown accounts are limited the same way: the limit says nothing about existence.
    stack
        .start_reset("ghost", "x", "198.51.100.4")
        .await
        .unwrap_err();
    stack
        .start_reset("ghost", "x", "198.51.100.5")
        .await
        .unwrap_err();
    let ghost = stack
        .start_reset("ghost", "x", "198.51.100.6")
        .await
        .unwrap_err();
    assert_eq!(ghost.code(), tonic::Code::ResourceExhausted);

    // Per IP: one address spraying many accounts.
    for i in 0..3 {
        let r = stack
            .start_reset(&format!("spray{i}"), "x", "203.0.113.9")
            .await
            .unwrap_err();
        assert_eq!(r.code(), tonic::Code::Unauthenticated);
    }
    let sprayed = stack
        .start_reset("spray9", "x", "203.0.113.9")
        .await
        .unwrap_err();
    assert_eq!(sprayed.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        sprayed.message(),
        "too many reset attempts; try again later"
    );
}

async fn reset_ids_and_codes_are_stored_only_hashed(backend: Backend) {
    let stack = Stack::start(backend).await;
    stack.account("b7").await;
    let (reset_id, code) = stack.start_and_read_code("b7").await;

    let rows = sql(
        &stack.reset_db,
        "SELECT token_hash, saga_id, code_hash FROM resets",
    )
    .await;
    let token_hash: String = rows[0].get("token_hash");
    let expected: String = sha2::Sha256::digest(reset_id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(token_hash, expected);
    let saga_id: String = rows[0].get("saga_id");
    assert!(!saga_id.contains(&reset_id));
    let code_hash: Vec<u8> = rows[0].get("code_hash");
    assert_eq!(code_hash.len(), 32);
    assert!(!code_hash.windows(6).any(|w| w == code.as_bytes()));

    // A forged or malformed reset ID.
    let forged = "A".repeat(43);
    assert_eq!(
        stack.verify(&forged, &code).await.unwrap_err().code(),
        tonic::Code::NotFound
    );
    assert_eq!(
        stack.verify("x", &code).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // Without the portal's token nothing is answered.
    let mut anonymous = kagi_proto::v1::reset_client::ResetClient::new(
        crate::helpers::channel(stack.reset.as_ref().unwrap().addr).await,
    );
    let refused = anonymous
        .get_reset(pb::GetResetRequest { reset_id })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
}

/// Unknown account, disabled account and wrong password cost the same argon2id work at
/// production strength as a right password, on StartReset and on the portal's login alike,
/// so timing says nothing about which it was. The work is counted, not timed: each answer
/// runs exactly one argon2id verification, refused or accepted (a path that skipped the
/// hash would count 0, one that hashed twice 2), and the dummy hash that unknown and
/// disabled accounts are checked against has the parameters of a real one
/// (`directory::password`'s unit tests), so each verification costs the same.
async fn every_refusal_costs_one_argon2id_verification_like_a_right_password(backend: Backend) {
    let stack = Stack::start_with(backend, |s| {
        s.password = kagi_reset::directory::PasswordParams::default();
    })
    .await;
    for id in ["counted", "countedoff"] {
        stack
            .accounts
            .add(id, EMAIL, SecretString::from(PASSWORD), 0)
            .await
            .unwrap();
    }
    stack
        .accounts
        .set_enabled("countedoff", false, 0)
        .await
        .unwrap();
    let mut directory =
        DirectoryClient::new(crate::helpers::channel(stack.reset.as_ref().unwrap().addr).await);
    let paths: [(&str, &str, &str); 8] = [
        ("StartReset", "nobody", PASSWORD),
        ("StartReset", "countedoff", PASSWORD),
        ("StartReset", "counted", "not-the-password"),
        ("Authenticate", "nobody", PASSWORD),
        ("Authenticate", "countedoff", PASSWORD),
        ("Authenticate", "counted", "not-the-password"),
        ("Authenticate", "counted", PASSWORD),
        ("StartReset", "counted", PASSWORD),
    ];
    for (rpc, account, password) in paths {
        let before = stack.hasher.verifications();
        let answer = if rpc == "StartReset" {
            stack
                .start_reset(account, password, "192.0.2.100")
                .await
                .map(drop)
        } else {
            let request = pb::AuthenticateRequest {
                account_id: account.into(),
                password: password.into(),
                client_ip: "192.0.2.100".into(),
            };
            directory
                .authenticate(crate::helpers::portal(request))
                .await
                .map(drop)
        };
        let accepted = account == "counted" && password == PASSWORD;
        match answer {
            Ok(()) => assert!(accepted, "{rpc} {account} was let in"),
            Err(refusal) => {
                assert!(!accepted, "{rpc} {account}: {refusal:?}");
                assert_eq!(refusal.code(), tonic::Code::Unauthenticated);
                assert_eq!(refusal.message(), "the account ID or password is incorrect");
            }
        }
        assert_eq!(
            stack.hasher.verifications() - before,
            1,
            "{rpc} {account} (right password: {accepted}): argon2id verifications"
        );
    }
}
