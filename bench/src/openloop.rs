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
use kagi_runtime::ServiceChannel;
use kagi_runtime::pki::CertAuthority;
use rand::seq::SliceRandom;
use std::time::Instant;

use crate::drive;
use crate::seed::{self, SeededAccount};
use crate::suite::{Seeded, Server, SuiteSpec, keystore_env, load_spec, spawn_ceiling};

/// What an open-loop run measured: the keystore first, then the same schedule against
/// servers that do only part of its work, on the same database and machine.
#[derive(Debug)]
pub struct OpenLoopReport {
    pub rate: f64,
    pub sent: usize,
    pub elapsed: Duration,
    pub rows: Vec<Distribution>,
}

/// One server's answers to the schedule.
#[derive(Debug)]
pub struct Distribution {
    pub name: &'static str,
    /// Calls answered `ACCEPTED` (the keystore) or done (the references).
    pub accepted: usize,
    /// From when each call was due to its answer, in microseconds.
    pub latency: Histogram<u64>,
    /// How late the generator sent calls (its own lag), in microseconds.
    pub send_lag: Histogram<u64>,
}

/// The schedule one server is driven with.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    rate: f64,
    warm_up: usize,
    total: usize,
}

/// Seeds `spec.accounts`, then drives three servers in turn on the same database, each
/// settled first and sent `rate` calls per second (for `warm_up_seconds` unrecorded: the
/// server's pool grows to what the rate needs, caches fill; then for `seconds` measured),
/// each call on an account of its own:
/// the keystore over TLS with client certificates; the reference, which does only the
/// database work of an accepted code (the account row read, one conditional UPDATE in its
/// own commit; no crypto, no audit row, no TLS); and a bare tonic echo. The two below it
/// say how much of the keystore's distribution is the machine's and the database's.
///
/// # Errors
/// Any failure to seed, spawn, connect, or a call failing.
pub async fn run(
    spec: &SuiteSpec,
    rate: f64,
    seconds: u64,
    warm_up_seconds: u64,
) -> anyhow::Result<OpenLoopReport> {
    let Seeded {
        database,
        kek,
        mut accounts,
    } = Seeded::create(spec, true).await?;
    accounts.shuffle(&mut rand::rng());

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let calls = |seconds: u64| (rate * seconds as f64) as usize;
    let schedule = Schedule {
        rate,
        warm_up: calls(warm_up_seconds),
        total: calls(seconds),
    };
    let each = schedule.warm_up + schedule.total;
    anyhow::ensure!(
        3 * each <= accounts.len(),
        "{} accounts cannot give three servers {} warm-up and {} measured calls a fresh account each",
        accounts.len(),
        schedule.warm_up,
        schedule.total
    );
    let mut shares = accounts.chunks(each).map(|c| Arc::new(c.to_vec()));
    let mut rows = Vec::new();
    let started = Instant::now();

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
    let channels = drive::connect(&client, spec.connections, warm_up_call).await?;
    settle(&database.url).await?;
    eprintln!("keystore over mTLS…");
    let share = shares.next().unwrap_or_default();
    rows.push(drive_schedule("keystore, mTLS", &channels, share, schedule).await?);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    for (name, kind) in [
        (
            "reference: one SELECT + one conditional UPDATE, plaintext",
            "read-update",
        ),
        ("bare tonic echo, plaintext", "echo"),
    ] {
        let mut server = spawn_ceiling(spec, &database, kind).await?;
        let client = load_spec(spec, server.addr, crate::load::CodePath::Valid).client;
        let channels = drive::connect(&client, spec.connections, warm_up_call).await?;
        settle(&database.url).await?;
        eprintln!("{name}…");
        let share = shares.next().unwrap_or_default();
        rows.push(drive_schedule(name, &channels, share, schedule).await?);
        server.stop().await;
    }
    database.drop_if_postgres(spec).await;
    Ok(OpenLoopReport {
        rate,
        sent: schedule.total,
        elapsed: started.elapsed(),
        rows,
    })
}

async fn warm_up_call(mut client: KeystoreClient<ServiceChannel>) -> Result<(), tonic::Status> {
    client
        .verify_code(pb::VerifyCodeRequest {
            account_id: "warm-up".into(),
            code: "000000".into(),
        })
        .await
        .map(|_| ())
}

/// Sends `schedule` over `channels`, the i-th call a fresh valid code of `accounts[i]`, and
/// records the measured calls' latency from their due time.
async fn drive_schedule(
    name: &'static str,
    channels: &[ServiceChannel],
    accounts: Arc<Vec<SeededAccount>>,
    schedule: Schedule,
) -> anyhow::Result<Distribution> {
    let Schedule {
        rate,
        warm_up,
        total,
    } = schedule;
    anyhow::ensure!(accounts.len() >= warm_up + total, "too few accounts");
    let channels = channels.to_vec();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now() + Duration::from_millis(100);
    // The schedule runs on a thread of its own: tokio's timer wakes on whole milliseconds,
    // which alone made calls ~1.4 ms late at the median; a thread's sleep is accurate to
    // tens of microseconds, so the lag measured is the machine's, not the timer wheel's.
    let runtime = tokio::runtime::Handle::current();
    let generator = std::thread::spawn(move || -> anyhow::Result<Histogram<u64>> {
        let mut send_lag = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        for i in 0..warm_up + total {
            #[allow(clippy::cast_possible_truncation)]
            let due = start + interval * (i as u32);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let measured = i >= warm_up;
            if measured {
                send_lag.record(micros(due.elapsed()))?;
            }
            let mut client = KeystoreClient::new(channels[i % channels.len()].clone());
            let (accounts, tx) = (accounts.clone(), tx.clone());
            runtime.spawn(async move {
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
                let _ = tx.send((
                    measured,
                    due.elapsed(),
                    reply.map(|r| r.into_inner().result()),
                ));
            });
        }
        Ok(send_lag)
    });
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut accepted = 0;
    while let Some((measured, waited, result)) = rx.recv().await {
        let result = result?;
        if measured {
            latency.record(micros(waited))?;
            if result == pb::VerifyResult::Accepted {
                accepted += 1;
            }
        }
    }
    let send_lag = generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))??;
    Ok(Distribution {
        name,
        accepted,
        latency,
        send_lag,
    })
}

/// Finishes what seeding left for later before the clock starts, as a database in service
/// has long done: on PostgreSQL the new rows' statistics and visibility map (`VACUUM
/// ANALYZE`, which autovacuum would otherwise start mid-run) and the dirty pages
/// (`CHECKPOINT`, which would otherwise write them out during the measurement); on SQLite
/// the write-ahead log folded into the file.
async fn settle(url: &str) -> anyhow::Result<()> {
    let db = kagi_keystore::store::Db::connect(url, 1).await?;
    let statements: &[&'static str] = if url.starts_with("sqlite:") {
        &["PRAGMA wal_checkpoint(TRUNCATE)"]
    } else {
        &["VACUUM ANALYZE", "CHECKPOINT"]
    };
    for &statement in statements {
        sqlx::raw_sql(statement).execute(db.pool()).await?;
    }
    db.close().await;
    Ok(())
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The distributions as a markdown table.
#[allow(clippy::print_stdout)]
pub fn print(spec: &SuiteSpec, report: &OpenLoopReport) {
    println!(
        "\nVerifyCode open loop on {:?}: {:.0} calls/s, {} measured per server over {} connections, {} accounts, {:.1} s in all\n",
        spec.backend,
        report.rate,
        report.sent,
        spec.connections,
        spec.accounts,
        report.elapsed.as_secs_f64(),
    );
    println!("| server | ms from due time | p50 | p90 | p99 | p99.9 | max | accepted |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in &report.rows {
        for (what, h) in [
            ("latency", &row.latency),
            ("generator's send lag", &row.send_lag),
        ] {
            let q = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "| {} | {what} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} |",
                row.name,
                q(0.5),
                q(0.9),
                q(0.99),
                q(0.999),
                h.max() as f64 / 1000.0,
                row.accepted,
            );
        }
    }
}
