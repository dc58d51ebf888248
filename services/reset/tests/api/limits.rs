//! The attacker's side of the rate limits with the reset service scaled out: many
//! simultaneous attempts spread over three replicas on one database pass each limit
//! exactly as often as it allows, and no more.

use kagi_proto::v1 as pb;
use kagi_proto::v1::reset_client::ResetClient;
use sqlx::Row as _;
use tonic::transport::Channel;

use crate::helpers::{Backend, Running, Stack, channel, portal, sql, start_reset};
use kagi_testkit::both_backends;

both_backends!(
    forty_simultaneous_guesses_over_three_replicas_check_the_password_only_per_account_max_times,
    forty_simultaneous_starts_from_one_address_over_three_replicas_pass_only_per_ip_max_times,
);

/// The stack's reset service and two more replicas on the same database.
async fn three_replicas(stack: &Stack) -> (Vec<Running>, Vec<ResetClient<Channel>>) {
    let mut running = Vec::new();
    let mut clients = vec![stack.client.clone()];
    for _ in 0..2 {
        let (replica, _, _) = start_reset(&stack.settings, stack.clock.clone()).await;
        clients.push(ResetClient::new(channel(replica.addr).await));
        running.push(replica);
    }
    (running, clients)
}

/// Sends every `(account, password, client_ip)` at once, round-robin over the replicas,
/// and returns the status codes of the answers.
async fn all_at_once(
    clients: &[ResetClient<Channel>],
    attempts: Vec<(String, String, String)>,
) -> Vec<tonic::Code> {
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(attempts.len()));
    let tasks: Vec<_> = attempts
        .into_iter()
        .enumerate()
        .map(|(i, (account_id, password, client_ip))| {
            let mut client = clients[i % clients.len()].clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let request = portal(pb::StartResetRequest {
                    account_id,
                    password,
                    client_ip,
                    user_agent: "Mozilla/5.0 (attacker)".into(),
                    locale: String::new(),
                });
                barrier.wait().await;
                match client.start_reset(request).await {
                    Ok(_) => tonic::Code::Ok,
                    Err(status) => status.code(),
                }
            })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

fn count(codes: &[tonic::Code], code: tonic::Code) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

/// 40 password guesses for one account, from 40 addresses, at once over three replicas:
/// exactly `per_account_max` (5) are checked ("the account ID or password is incorrect"),
/// every other one is refused as too many attempts, and only the 5 checked are recorded (a
/// refused attempt does not keep the lock longer).
async fn forty_simultaneous_guesses_over_three_replicas_check_the_password_only_per_account_max_times(
    backend: Backend,
) {
    let stack = Stack::start(backend).await;
    assert_eq!(stack.settings.policy.per_account_max, 5);
    stack.account("victim").await;
    let (_replicas, clients) = three_replicas(&stack).await;
    let guesses = (0..40)
        .map(|i| {
            (
                "victim".to_owned(),
                format!("guess-{i}"),
                format!("198.51.100.{}", i + 1),
            )
        })
        .collect();
    let codes = all_at_once(&clients, guesses).await;
    assert_eq!(count(&codes, tonic::Code::Unauthenticated), 5, "{codes:?}");
    assert_eq!(
        count(&codes, tonic::Code::ResourceExhausted),
        35,
        "{codes:?}"
    );
    let rows = sql(
        &stack.reset_db,
        "SELECT COUNT(*) AS n FROM rate_events WHERE scope = 'account' AND subject = 'victim'",
    )
    .await;
    assert_eq!(
        rows[0].get::<i64, _>("n"),
        5,
        "refused attempts are not recorded"
    );
    // Even the right password is refused now, on every replica.
    for client in &clients {
        let request = portal(pb::StartResetRequest {
            account_id: "victim".into(),
            password: crate::helpers::PASSWORD.into(),
            client_ip: "192.0.2.200".into(),
            user_agent: "Mozilla/5.0 (test)".into(),
            locale: String::new(),
        });
        let refused = client.clone().start_reset(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    }
    assert!(stack.sink.mails().is_empty(), "no code was mailed");
}

/// 40 starts for 40 accounts from one IPv4 client at once over three replicas, half of
/// them arriving through a dual-stack listener as `::ffff:203.0.113.9`: one address, one
/// counter, and exactly `per_ip_max` attempts reach the password check.
async fn forty_simultaneous_starts_from_one_address_over_three_replicas_pass_only_per_ip_max_times(
    backend: Backend,
) {
    let stack = Stack::start_with(backend, |s| s.policy.per_ip_max = 7).await;
    let (_replicas, clients) = three_replicas(&stack).await;
    let sprays = (0..40)
        .map(|i| {
            let ip = if i % 2 == 0 {
                "203.0.113.9"
            } else {
                "::ffff:203.0.113.9"
            };
            (format!("spray{i}"), "x".to_owned(), ip.to_owned())
        })
        .collect();
    let codes = all_at_once(&clients, sprays).await;
    assert_eq!(count(&codes, tonic::Code::Unauthenticated), 7, "{codes:?}");
    assert_eq!(
        count(&codes, tonic::Code::ResourceExhausted),
        33,
        "{codes:?}"
    );
    let rows = sql(
        &stack.reset_db,
        "SELECT subject, COUNT(*) AS n FROM rate_events WHERE scope = 'ip' GROUP BY subject",
    )
    .await;
    assert_eq!(rows.len(), 1, "one counter for the one address");
    assert_eq!(rows[0].get::<String, _>("subject"), "203.0.113.9");
    assert_eq!(
        rows[0].get::<i64, _>("n"),
        7,
        "only the attempts let through"
    );
}
