//! Benchmark: queued-to-delivered throughput through the pooled SMTP transport into a local
//! SMTP sink, and the latency of the `SendResetCode` RPC.
//!
//! ```text
//! cargo run -p kagi-notifier --example throughput -- [--messages 5000] [--samples 2000]
//!     [--concurrency 32] [--postgres postgres://postgres@127.0.0.1:5432/test]
//! ```
//! The sink is a minimal SMTP server in this process (it answers 250 to everything), so the
//! numbers are the notifier's, not a mail server's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kagi_notifier::config::{SmtpTls, TransportKind};
use kagi_notifier::{Application, Settings};
use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_client::NotifierClient;
use secrecy::SecretString;
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tonic::transport::Channel;

const TOKEN: &str = "bench-token-0123456789abcdef";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let messages: usize = arg("--messages").map_or(5000, |v| v.parse().unwrap());
    let samples: usize = arg("--samples").map_or(2000, |v| v.parse().unwrap());
    let concurrency: usize = arg("--concurrency").map_or(32, |v| v.parse().unwrap());
    let tmp = tempfile::tempdir()?;
    let db_url = match arg("--postgres") {
        Some(server) => fresh_postgres(&server).await?,
        None => format!("sqlite://{}/bench.db?mode=rwc", tmp.path().display()),
    };
    let delivered = Arc::new(AtomicU64::new(0));
    let smtp_port = start_sink(Arc::clone(&delivered)).await?;
    println!("database: {}", db_url.split(':').next().unwrap_or_default());

    // 1. RPC latency of SendResetCode, one call at a time, with the worker delivering.
    let (addr, stop) = spawn(settings(&db_url, smtp_port, concurrency, true)).await?;
    let mut latency_client = connect(addr).await?;
    let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
    for n in 0..samples {
        let started = Instant::now();
        latency_client
            .send_reset_code(request(&format!("lat-{n}")))
            .await?;
        histogram.record(u64::try_from(started.elapsed().as_micros())?)?;
    }
    println!(
        "SendResetCode latency over {samples} calls: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.9)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.max()),
    );
    wait_for(&delivered, u64::try_from(samples)?).await;
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 2. Queue `messages` with no worker running, then start one and time the drain.
    let (addr, stop) = spawn(settings(&db_url, smtp_port, concurrency, false)).await?;
    let client = connect(addr).await?;
    let queued = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..32 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            for n in (worker..messages).step_by(32) {
                client
                    .send_reset_code(request(&format!("tp-{n}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let queue_secs = queued.elapsed().as_secs_f64();
    println!(
        "queued {messages} messages over gRPC (32 callers) in {queue_secs:.2} s: {:.0} calls/s",
        messages as f64 / queue_secs
    );
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let before = delivered.load(Ordering::SeqCst);
    let started = Instant::now();
    let (_addr, stop) = spawn(settings(&db_url, smtp_port, concurrency, true)).await?;
    wait_for(&delivered, before + u64::try_from(messages)?).await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "delivered {messages} queued messages in {secs:.2} s: {:.0} mails/s (worker concurrency {concurrency}, SMTP pool {concurrency})",
        messages as f64 / secs
    );
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(300)).await;
    if let Some(server) = arg("--postgres") {
        drop_postgres(&server, &db_url).await?;
    }
    Ok(())
}

/// Removes the database `fresh_postgres` made, so runs leave the server as they found it.
async fn drop_postgres(server: &str, db_url: &str) -> anyhow::Result<()> {
    let prefix = server
        .split('?')
        .next()
        .unwrap_or(server)
        .rsplit_once('/')
        .unwrap()
        .0;
    let name = db_url.rsplit_once('/').unwrap().1;
    let mut admin = sqlx::AnyConnection::connect(&format!("{prefix}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await?;
    Ok(())
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn request(message_id: &str) -> pb::SendResetCodeRequest {
    let expires = chrono::Utc::now() + chrono::Duration::minutes(30);
    pb::SendResetCodeRequest {
        message_id: message_id.into(),
        recipient: format!("{message_id}@example.ac.jp"),
        account_id: "bench".into(),
        code: "123456".into(),
        expires_at: Some(prost_types::Timestamp {
            seconds: expires.timestamp(),
            nanos: 0,
        }),
        locale: String::new(),
    }
}

fn settings(db_url: &str, smtp_port: u16, concurrency: usize, worker: bool) -> Settings {
    let mut settings = Settings {
        server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    settings
        .auth
        .tokens
        .insert("reset".into(), SecretString::from(TOKEN));
    settings.telemetry.log_filter = "warn".into();
    settings.database.url = db_url.to_owned();
    settings.database.max_connections = 8;
    settings.sealing.key_file =
        std::env::temp_dir().join(format!("kagi-throughput-key-{}", std::process::id()));
    settings.mail.templates_dir = None;
    settings.transport.kind = TransportKind::Smtp;
    settings.transport.smtp.host = "127.0.0.1".into();
    settings.transport.smtp.port = smtp_port;
    settings.transport.smtp.tls = SmtpTls::None;
    settings.transport.smtp.pool_max_size = u32::try_from(concurrency).unwrap();
    settings.delivery.worker_enabled = worker;
    settings.delivery.concurrency = concurrency;
    settings.delivery.poll_interval_ms = 50;
    settings.delivery.reset_codes_per_recipient_per_hour = 0;
    settings
}

async fn spawn(
    settings: Settings,
) -> anyhow::Result<(std::net::SocketAddr, tokio::sync::oneshot::Sender<()>)> {
    let app = Application::build(&settings).await?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    Ok((addr, stop))
}

type Client = NotifierClient<
    tonic::service::interceptor::InterceptedService<
        Channel,
        fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
    >,
>;

#[allow(clippy::result_large_err)]
fn bearer(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    Ok(request)
}

async fn connect(addr: std::net::SocketAddr) -> anyhow::Result<Client> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(NotifierClient::with_interceptor(
        channel,
        bearer as fn(_) -> _,
    ))
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    while counter.load(Ordering::SeqCst) < target {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn fresh_postgres(server: &str) -> anyhow::Result<String> {
    sqlx::any::install_default_drivers();
    let (prefix, _) = server
        .split('?')
        .next()
        .unwrap_or(server)
        .rsplit_once('/')
        .unwrap();
    let name = format!("notifier_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::AnyConnection::connect(&format!("{prefix}/postgres")).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await?;
    Ok(format!("{prefix}/{name}"))
}

/// A minimal SMTP server that accepts everything and counts messages.
async fn start_sink(delivered: Arc<AtomicU64>) -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let delivered = Arc::clone(&delivered);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 sink ESMTP\r\n").await?;
                let mut in_data = false;
                while let Some(line) = lines.next_line().await? {
                    if in_data {
                        if line == "." {
                            in_data = false;
                            delivered.fetch_add(1, Ordering::SeqCst);
                            write.write_all(b"250 2.0.0 Ok: queued\r\n").await?;
                        }
                        continue;
                    }
                    let verb = line.get(..4).unwrap_or_default().to_ascii_uppercase();
                    let reply: &[u8] = match verb.as_str() {
                        "EHLO" | "HELO" => b"250-sink\r\n250 PIPELINING\r\n",
                        "DATA" => {
                            in_data = true;
                            b"354 End data with <CR><LF>.<CR><LF>\r\n"
                        }
                        "QUIT" => {
                            write.write_all(b"221 Bye\r\n").await?;
                            break;
                        }
                        _ => b"250 OK\r\n",
                    };
                    write.write_all(reply).await?;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    Ok(port)
}
