//! How long a keystore takes from exec to answering SERVING, what a Kubernetes scale-out
//! waits for before a new pod takes calls. Polled with an in-process gRPC health client
//! (a CLI such as grpcurl takes ~150 ms to start by itself), every millisecond from the
//! moment the process is spawned. The first start on a fresh database includes applying
//! the migrations; the later ones find them applied, as a new replica does.

use std::process::Stdio;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use hdrhistogram::Histogram;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::suite::{BenchDatabase, SuiteSpec};

/// Start-up times: the first (migrating) start and the distribution of the others.
#[derive(Debug)]
pub struct StartupReport {
    pub first: Duration,
    pub later: Histogram<u64>,
}

/// Starts `kagi-keystore serve` `runs` times on one database, each until SERVING.
///
/// # Errors
/// A start that fails or never reports SERVING within 10 s.
pub async fn run(spec: &SuiteSpec, runs: usize) -> anyhow::Result<StartupReport> {
    let database = BenchDatabase::create(spec).await?;
    let binary = std::env::current_exe()?.with_file_name("kagi-keystore");
    let mut first = None;
    let mut later = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..runs.max(2) {
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .arg("serve")
            .env("KAGI_KEYSTORE_DATABASE__URL", &database.url)
            .env("KAGI_KEYSTORE_KEK__KEYS__BENCH", BASE64.encode(&[7_u8; 32]))
            .env("KAGI_KEYSTORE_AUTH__TOKENS__LOGIN", crate::suite::TOKEN)
            .env("KAGI_KEYSTORE_TELEMETRY__LOG_FILTER", "warn")
            .env("KAGI_KEYSTORE_SERVER__LISTEN_ADDR", addr.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let took = loop {
            if serving(addr).await {
                break started.elapsed();
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "kagi-keystore not SERVING after 10 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let _ = child.kill().await;
        match first {
            None => first = Some(took),
            Some(_) => later.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))?,
        }
    }
    database.drop_if_postgres(spec).await;
    Ok(StartupReport {
        first: first.unwrap_or_default(),
        later,
    })
}

async fn serving(addr: std::net::SocketAddr) -> bool {
    let Ok(channel) = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|e| e.connect_timeout(Duration::from_millis(100)))
    else {
        return false;
    };
    let Ok(channel) = channel.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "kagi.v1.Keystore".into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

/// The times as a markdown table.
#[allow(clippy::print_stdout)]
pub fn print(spec: &SuiteSpec, report: &StartupReport) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "\nkagi-keystore exec → SERVING on {:?} ({} later starts)\n",
        spec.backend,
        report.later.len()
    );
    println!("| first start (migrates) ms | later starts p50 ms | p90 ms | max ms |");
    println!("| ---: | ---: | ---: | ---: |");
    println!(
        "| {:.1} | {:.1} | {:.1} | {:.1} |",
        report.first.as_secs_f64() * 1000.0,
        ms(report.later.value_at_quantile(0.5)),
        ms(report.later.value_at_quantile(0.9)),
        ms(report.later.max())
    );
}
