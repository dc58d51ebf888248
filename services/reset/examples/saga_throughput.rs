//! Whole reset sagas per second (StartReset → code mail received over SMTP → VerifyCode →
//! ConfirmReset) against the real keystore, notifier and reset service on loopback, with an
//! aiosmtpd sink, and the latency of each step as the portal sees it.
//!
//! `cargo run -p kagi-reset --example saga_throughput -- [sagas] [concurrency]`
//! (argon2id at the production default, m=19456 KiB t=2 p=1; set KAGI_BENCH_CHEAP_ARGON2=1
//! to see the saga without it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::reset_client::ResetClient;
use secrecy::SecretString;
use tokio::io::AsyncBufReadExt as _;

const TOKEN: &str = "bench-token-0123456789abcdef";
const ONBOARDING: &str = "bench-onboarding-token-0123456789";

fn bearer<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    request
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sagas = args.first().copied().unwrap_or(40);
    let concurrency = args.get(1).copied().unwrap_or(4);
    let dir = tempfile::tempdir()?;
    // kagi-testkit's aiosmtpd sink, the SMTP server every test uses.
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/kit/smtp_sink.py"
    ));
    let maildir = dir.path().join("mail");
    let mut sink = tokio::process::Command::new(kagi_testkit::peers::python())
        .arg(script)
        .args(["--port", "0", "--maildir", maildir.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut line = String::new();
    tokio::io::BufReader::new(sink.stdout.take().unwrap())
        .read_line(&mut line)
        .await?;
    let smtp_port: u16 = line.trim().trim_start_matches("PORT ").parse()?;

    // Keystore.
    let mut ks = kagi_keystore::Settings::default();
    ks.server.listen_addr = "127.0.0.1:0".parse()?;
    ks.database.url = format!("sqlite://{}/keystore.db?mode=rwc", dir.path().display());
    ks.kek.keys.insert(
        "k1".into(),
        SecretString::from(base64::engine::general_purpose::STANDARD.encode([1_u8; 32])),
    );
    ks.auth
        .tokens
        .insert("reset".into(), SecretString::from(TOKEN));
    ks.auth
        .tokens
        .insert("onboarding".into(), SecretString::from(ONBOARDING));
    let keystore = kagi_keystore::Application::build(&ks).await?;
    let ks_addr = keystore.local_addr();
    tokio::spawn(keystore.run_until_stopped(std::future::pending()));

    // Notifier.
    let mut nt = kagi_notifier::Settings {
        server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse()?),
        ..Default::default()
    };
    nt.auth
        .tokens
        .insert("reset".into(), SecretString::from(TOKEN));
    nt.database.url = format!("sqlite://{}/notifier.db?mode=rwc", dir.path().display());
    nt.mail.templates_dir = None;
    nt.sealing.key_file = dir.path().join("notifier-payload-key");
    nt.transport.kind = kagi_notifier::config::TransportKind::Smtp;
    nt.transport.smtp.host = "127.0.0.1".into();
    nt.transport.smtp.port = smtp_port;
    nt.transport.smtp.tls = kagi_notifier::config::SmtpTls::None;
    nt.delivery.poll_interval_ms = 25;
    nt.delivery.reset_codes_per_recipient_per_hour = 0;
    let notifier = kagi_notifier::Application::build(&nt).await?;
    let nt_addr = notifier.local_addr();
    tokio::spawn(notifier.run_until_stopped(std::future::pending()));

    // Reset service.
    let mut rs = kagi_reset::Settings::default();
    rs.server.listen_addr = "127.0.0.1:0".parse()?;
    rs.database.url = format!("sqlite://{}/reset.db?mode=rwc", dir.path().display());
    rs.code_hmac_key_file = Some(dir.path().join("code-key"));
    rs.auth
        .tokens
        .insert("portal".into(), SecretString::from(TOKEN));
    rs.keystore.endpoint = format!("http://{ks_addr}");
    rs.keystore.token = Some(SecretString::from(TOKEN));
    rs.notifier.endpoint = format!("http://{nt_addr}");
    rs.notifier.token = Some(SecretString::from(TOKEN));
    rs.policy.per_account_max = 1_000;
    rs.policy.per_ip_max = 1_000_000;
    if std::env::var_os("KAGI_BENCH_CHEAP_ARGON2").is_some() {
        rs.password.memory_kib = 1024;
        rs.password.iterations = 1;
    }
    let reset = kagi_reset::Application::build(&rs).await?;
    let rs_addr = reset.local_addr();
    let accounts = reset.accounts().clone();
    tokio::spawn(reset.run_until_stopped(std::future::pending()));

    let channel = tonic::transport::Channel::from_shared(format!("http://{rs_addr}"))?
        .connect()
        .await?;
    let ks_channel = tonic::transport::Channel::from_shared(format!("http://{ks_addr}"))?
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
            .enroll({
                let mut r = tonic::Request::new(pb::EnrollRequest { account_id: id });
                r.metadata_mut()
                    .insert("authorization", format!("Bearer {ONBOARDING}").parse()?);
                r
            })
            .await?;
    }

    let maildir = Arc::new(maildir);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let began = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (channel, maildir, next) = (channel.clone(), Arc::clone(&maildir), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut client = ResetClient::new(channel);
            let mut steps: Vec<[Duration; 4]> = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= sagas {
                    return steps;
                }
                let id = format!("user{i}");
                let t = Instant::now();
                let started = client
                    .start_reset(bearer(pb::StartResetRequest {
                        account_id: id.clone(),
                        password: "bench-password".into(),
                        client_ip: "192.0.2.1".into(),
                        user_agent: "bench".into(),
                        locale: String::new(),
                    }))
                    .await
                    .unwrap()
                    .into_inner();
                let start = t.elapsed();
                let t = Instant::now();
                let code = wait_for_code(&maildir, &format!("{id}@example.ac.jp")).await;
                let mail = t.elapsed();
                let t = Instant::now();
                client
                    .verify_code(bearer(pb::VerifyResetCodeRequest {
                        reset_id: started.reset_id.clone(),
                        code,
                    }))
                    .await
                    .unwrap();
                let verify = t.elapsed();
                let t = Instant::now();
                client
                    .confirm_reset(bearer(pb::ConfirmResetRequest {
                        reset_id: started.reset_id,
                    }))
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

/// Polls the sink's maildir for the code mail to `recipient`.
async fn wait_for_code(maildir: &std::path::Path, recipient: &str) -> String {
    loop {
        for entry in std::fs::read_dir(maildir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "eml") {
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let Some(mail) = mail_parser::MessageParser::default().parse(&raw) else {
                continue;
            };
            let to = mail
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_owned();
            if to != recipient {
                continue;
            }
            let body = mail.body_text(0).unwrap_or_default();
            if let Some(code) = body.lines().find_map(|l| l.strip_prefix("確認コード: ")) {
                return code.trim().to_owned();
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
