//! What a user waits for at a campus's morning peak: `VerifyCode` sent at a fixed rate
//! (open loop: a call goes out on schedule whether or not earlier ones have answered, as
//! logins arrive), over mTLS with the login system known by its client certificate, each
//! call a fresh valid code of a different account. Latency is measured from the moment
//! the call was due, so a stalled generator or server cannot hide its queue (no
//! coordinated omission).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::pki::CertAuthority;
use rand::seq::SliceRandom;
use tokio::time::Instant;

use crate::drive;
use crate::seed;
use crate::suite::{Seeded, Server, SuiteSpec, keystore_env, load_spec};

/// What an open-loop run measured.
#[derive(Debug)]
pub struct OpenLoopReport {
    pub rate: f64,
    pub sent: usize,
    pub accepted: usize,
    pub elapsed: Duration,
    /// From when each call was due to its answer, in microseconds.
    pub latency: Histogram<u64>,
    /// How late the generator sent calls (its own lag), in microseconds.
    pub send_lag: Histogram<u64>,
}

/// Seeds `spec.accounts`, starts the keystore with TLS and client certificates, and sends
/// `rate` calls per second for `seconds`.
///
/// # Errors
/// Any failure to seed, spawn, connect, or a call failing.
pub async fn run(spec: &SuiteSpec, rate: f64, seconds: u64) -> anyhow::Result<OpenLoopReport> {
    let Seeded {
        database,
        kek,
        mut accounts,
    } = Seeded::create(spec, false).await?;
    accounts.shuffle(&mut rand::rng());
    let accounts = Arc::new(accounts);

    let dir =
        std::env::temp_dir().join(format!("kagi-bench-open-{}", uuid::Uuid::new_v4().simple()));
    let ca = CertAuthority::create(&dir, "kagi bench CA")?;
    let server_cert = ca.server("server", &["localhost", "127.0.0.1"])?;
    let login = ca.client("login", &["login.callers.kagi.test"])?;
    let config = dir.join("keystore.toml");
    std::fs::write(
        &config,
        "[auth]\ncertificate_callers = { \"login.callers.kagi.test\" = \"login\" }\n",
    )?;
    let path = |p: &std::path::Path| p.display().to_string();
    let mut env = keystore_env(spec, &database, &kek);
    env.extend([
        ("KAGI_KEYSTORE_CONFIG".to_owned(), path(&config)),
        (
            "KAGI_KEYSTORE_SERVER__TLS_CERT".to_owned(),
            path(&server_cert.cert),
        ),
        (
            "KAGI_KEYSTORE_SERVER__TLS_KEY".to_owned(),
            path(&server_cert.key),
        ),
        (
            "KAGI_KEYSTORE_SERVER__TLS_CLIENT_CA".to_owned(),
            path(ca.ca_file()),
        ),
    ]);
    let mut server = Server::spawn(
        "kagi-keystore",
        &["serve"],
        &env,
        "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
    )
    .await?;
    let mut client = load_spec(spec, server.addr, crate::load::CodePath::Valid).client;
    client.endpoint = format!("https://{}", server.addr);
    client.token = None;
    client.ca_file = Some(ca.ca_file().to_owned());
    client.tls_server_name = Some("localhost".into());
    client.cert_file = Some(login.cert.clone());
    client.key_file = Some(login.key.clone());
    let channels = drive::connect(&client, spec.connections, |mut c| async move {
        c.verify_code(pb::VerifyCodeRequest {
            account_id: "warm-up".into(),
            code: "000000".into(),
        })
        .await
        .map(|_| ())
    })
    .await?;

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let total = ((rate * seconds as f64) as usize).min(accounts.len());
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(100);
    let mut send_lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for i in 0..total {
        #[allow(clippy::cast_possible_truncation)]
        let due = start + interval * (i as u32);
        tokio::time::sleep_until(due).await;
        send_lag.record(micros(due.elapsed()))?;
        let mut client = KeystoreClient::new(channels[i % channels.len()].clone());
        let (accounts, tx) = (accounts.clone(), tx.clone());
        tokio::spawn(async move {
            let account = &accounts[i];
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let reply = client
                .verify_code(pb::VerifyCodeRequest {
                    account_id: account.account_id.clone(),
                    code: seed::code(&account.secret, now).to_string(),
                })
                .await;
            let _ = tx.send((due.elapsed(), reply.map(|r| r.into_inner().result())));
        });
    }
    drop(tx);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut accepted = 0;
    while let Some((waited, result)) = rx.recv().await {
        latency.record(micros(waited))?;
        if result? == pb::VerifyResult::Accepted {
            accepted += 1;
        }
    }
    let elapsed = start.elapsed();
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    database.drop_if_postgres(spec).await;
    Ok(OpenLoopReport {
        rate,
        sent: total,
        accepted,
        elapsed,
        latency,
        send_lag,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The distribution as a markdown table.
#[allow(clippy::print_stdout)]
pub fn print(spec: &SuiteSpec, report: &OpenLoopReport) {
    println!(
        "\nVerifyCode open loop on {:?} over mTLS: {:.0} calls/s for {:.1} s, {} sent over {} connections, {} accepted, {} accounts\n",
        spec.backend,
        report.rate,
        report.elapsed.as_secs_f64(),
        report.sent,
        spec.connections,
        report.accepted,
        spec.accounts
    );
    println!("| | p50 | p90 | p99 | p99.9 | max |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, h) in [
        ("latency from due time, ms", &report.latency),
        ("generator's send lag, ms", &report.send_lag),
    ] {
        let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            h.max() as f64 / 1000.0
        );
    }
}
