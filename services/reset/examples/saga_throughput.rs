//! Whole reset sagas per second (StartReset → code mail received over SMTP → VerifyCode →
//! ConfirmReset) against the real keystore, notifier and reset service on loopback, with an
//! aiosmtpd sink, and the latency of each step as the portal sees it. The system is
//! kagi-stack's [`LocalStack`] on SQLite, on the system clock, logging nowhere, with each
//! service's shipped pool size and sweeper.
//!
//! `cargo run -p kagi-reset --example saga_throughput -- [sagas] [concurrency]`
//! (argon2id at the production default, m=19456 KiB t=2 p=1; set KAGI_BENCH_CHEAP_ARGON2=1
//! to see the saga without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kagi_proto::v1 as pb;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_reset::directory::PasswordParams;
use kagi_runtime::DatabaseSettings;
use kagi_stack::LocalStack;
use kagi_stack::local::{Sink, token_of};
use kagi_testkit::Backend;
use secrecy::SecretString;

fn as_caller<T>(caller: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of(caller)).parse().unwrap(),
    );
    request
}

/// The whole system as production runs it, but for the limits that would refuse a
/// benchmark's many resets from one address and one mailbox.
async fn system() -> anyhow::Result<LocalStack> {
    // LocalStack hashes cheaply (m=1 MiB, t=1), which is what KAGI_BENCH_CHEAP_ARGON2 asks for.
    let production_argon2 = std::env::var_os("KAGI_BENCH_CHEAP_ARGON2").is_none();
    let pool = DatabaseSettings::default().max_connections;
    LocalStack::builder(Backend::Sqlite)
        .without_portal()
        .system_clocks()
        .without_log_capture()
        .keystore(|s| s.database.max_connections = pool)
        .notifier(|s| {
            s.database.max_connections = pool;
            s.delivery.reset_codes_per_recipient_per_hour = 0;
        })
        .reset(|s| {
            s.database.max_connections = pool;
            s.sweeper = kagi_reset::config::SweeperSettings::default();
            s.policy.per_account_max = 1_000;
            s.policy.per_ip_max = 1_000_000;
            if production_argon2 {
                s.password = PasswordParams::default();
            }
        })
        .start()
        .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sagas = args.first().copied().unwrap_or(40);
    let concurrency = args.get(1).copied().unwrap_or(4);
    let system = Arc::new(system().await?);
    let reset = system.reset.as_ref().expect("the reset service runs");
    let accounts = reset.accounts.clone();

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", reset.running.addr))?
        .connect()
        .await?;
    let ks_channel =
        tonic::transport::Channel::from_shared(format!("http://{}", system.keystore_addr()))?
            .connect()
            .await?;
    println!("setting up {sagas} accounts (argon2id hashing each)...");
    for i in 0..sagas {
        let id = format!("user{i}");
        accounts
            .add(
                &id,
                &format!("{id}@example.ac.jp"),
                SecretString::from("bench-password"),
                0,
            )
            .await?;
        kagi_proto::v1::keystore_client::KeystoreClient::new(ks_channel.clone())
            .enroll(as_caller(
                "onboarding",
                pb::EnrollRequest { account_id: id },
            ))
            .await?;
    }

    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (channel, system, next) = (channel.clone(), Arc::clone(&system), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut client = ResetClient::new(channel);
            let mut steps: Vec<[Duration; 4]> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= sagas {
                    return steps;
                }
                let id = format!("user{i}");
                // This account's code mail can only come after the mail already here.
                let read = system.sink.raw().len();
                let t = Instant::now();
                let started = client
                    .start_reset(as_caller(
                        "portal",
                        pb::StartResetRequest {
                            account_id: id.clone(),
                            password: "bench-password".into(),
                            client_ip: "192.0.2.1".into(),
                            user_agent: "bench".into(),
                            locale: String::new(),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner();
                let start = t.elapsed();
                let t = Instant::now();
                let code = wait_for_code(&system.sink, &format!("{id}@example.ac.jp"), read).await;
                let mail = t.elapsed();
                let t = Instant::now();
                client
                    .verify_code(as_caller(
                        "portal",
                        pb::VerifyResetCodeRequest {
                            reset_id: started.reset_id.clone(),
                            code,
                        },
                    ))
                    .await
                    .unwrap();
                let verify = t.elapsed();
                let t = Instant::now();
                client
                    .confirm_reset(as_caller(
                        "portal",
                        pb::ConfirmResetRequest {
                            reset_id: started.reset_id,
                        },
                    ))
                    .await
                    .unwrap();
                steps.push([start, mail, verify, t.elapsed()]);
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await?);
    }
    let elapsed = began.elapsed();
    println!(
        "{} sagas in {:.2} s with {concurrency} concurrent users: {:.1} sagas/s",
        all.len(),
        elapsed.as_secs_f64(),
        all.len() as f64 / elapsed.as_secs_f64()
    );
    for (k, name) in ["StartReset", "mail received", "VerifyCode", "ConfirmReset"]
        .iter()
        .enumerate()
    {
        let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
        for s in &all {
            h.record(u64::try_from(s[k].as_micros()).unwrap_or(u64::MAX))?;
        }
        println!(
            "{name:>14}: p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}

/// Polls the SMTP server's mail for the code mail to `recipient`, which comes after the
/// first `read` messages; each message is parsed once, so the polling costs the services
/// sharing this process little.
async fn wait_for_code(sink: &Sink, recipient: &str, mut read: usize) -> String {
    loop {
        let fresh = sink.mails_from(read);
        read += fresh.len();
        let code = fresh
            .iter()
            .filter(|mail| mail.to.iter().any(|to| to == recipient))
            .find_map(kagi_stack::local::Mail::reset_code);
        if let Some(code) = code {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
