//! How long each service takes from exec to ready, what a Kubernetes scale-out waits for
//! before a new pod takes calls. The gRPC services (keystore, reset, notifier) are polled
//! with an in-process gRPC health client until their main service answers SERVING; the
//! portal, which serves pages and no gRPC, until its metrics port's `/readyz` (its
//! Kubernetes readiness probe) and its page port's `/healthz` both answer 200, read with a
//! plain HTTP/1.1 request from this process. A CLI such as grpcurl or curl takes ~150 ms to
//! start by itself, so neither is used. Polled every millisecond from the spawn. The first
//! start on a fresh database includes applying the migrations; the later ones find them
//! applied, as a new replica does. Each service runs in a scratch directory of its own,
//! with its production defaults except for what it must be told (database, keys, ports).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use data_encoding::BASE64;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::suite::{BenchDatabase, SuiteSpec};

/// A kagi service whose start-up is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Keystore,
    Reset,
    Notifier,
    Portal,
}

impl Service {
    pub const ALL: [Self; 4] = [Self::Keystore, Self::Reset, Self::Notifier, Self::Portal];

    /// # Errors
    /// A name other than keystore, reset, notifier or portal.
    pub fn parse(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| anyhow::anyhow!("unknown service {name:?}"))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Keystore => "keystore",
            Self::Reset => "reset",
            Self::Notifier => "notifier",
            Self::Portal => "portal",
        }
    }

    fn binary(self) -> String {
        format!("kagi-{}", self.name())
    }

    /// What "ready" is polled on: a gRPC service name, or (portal) the HTTP probes.
    fn readiness(self) -> &'static str {
        match self {
            Self::Keystore => "kagi.v1.Keystore",
            Self::Reset => "kagi.v1.Reset",
            Self::Notifier => "kagi.v1.Notifier",
            Self::Portal => "/readyz and /healthz",
        }
    }

    /// The settings the service cannot start without, as environment variables. Neighbours
    /// (the reset service's keystore and notifier, the portal's keystore and reset) are
    /// addressed at a closed port: clients connect lazily, as in a real rollout where a
    /// replica starts whether or not its neighbours answer yet.
    fn env(self, database_url: &str, addr: SocketAddr, probe: SocketAddr) -> Vec<(String, String)> {
        let key = BASE64.encode(&[7_u8; 32]);
        let nowhere = "http://127.0.0.1:9".to_owned();
        let pairs: Vec<(&str, String)> = match self {
            Self::Keystore => vec![
                ("KEK__KEYS__BENCH", key),
                ("AUTH__TOKENS__LOGIN", crate::suite::TOKEN.into()),
            ],
            Self::Reset => vec![
                ("CODE_HMAC_KEY", key),
                ("AUTH__TOKENS__PORTAL", crate::suite::TOKEN.into()),
                ("KEYSTORE__ENDPOINT", nowhere.clone()),
                ("KEYSTORE__TOKEN", crate::suite::TOKEN.into()),
                ("NOTIFIER__ENDPOINT", nowhere),
                ("NOTIFIER__TOKEN", crate::suite::TOKEN.into()),
            ],
            Self::Notifier => vec![("AUTH__TOKENS__RESET", crate::suite::TOKEN.into())],
            Self::Portal => vec![
                ("METRICS__LISTEN_ADDR", probe.to_string()),
                ("KEYSTORE__ENDPOINT", nowhere.clone()),
                ("RESET__ENDPOINT", nowhere),
            ],
        };
        let prefix = format!("KAGI_{}_", self.name().to_uppercase());
        let mut env: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v))
            .collect();
        env.extend([
            (format!("{prefix}DATABASE__URL"), database_url.to_owned()),
            (format!("{prefix}SERVER__LISTEN_ADDR"), addr.to_string()),
            (format!("{prefix}TELEMETRY__LOG_FILTER"), "warn".to_owned()),
        ]);
        env
    }

    /// Whether the service answers ready right now.
    async fn ready(self, addr: SocketAddr, probe: SocketAddr) -> bool {
        match self {
            Self::Portal => http_ok(probe, "/readyz").await && http_ok(addr, "/healthz").await,
            grpc => serving(addr, grpc.readiness()).await,
        }
    }
}

/// Start-up times of one service: the first (migrating) start and the distribution of the
/// others.
#[derive(Debug)]
pub struct StartupReport {
    pub service: Service,
    pub first: Duration,
    pub later: Histogram<u64>,
}

/// Starts each of `services` `runs` times on a database of its own, each until ready.
///
/// # Errors
/// A start that fails or is not ready within 10 s.
pub async fn run(
    spec: &SuiteSpec,
    services: &[Service],
    runs: usize,
) -> anyhow::Result<Vec<StartupReport>> {
    let mut reports = Vec::with_capacity(services.len());
    for &service in services {
        let database = BenchDatabase::create(spec).await?;
        let workdir = std::env::temp_dir().join(format!(
            "kagi-bench-startup-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&workdir)?;
        let report = starts(service, &database.url, &workdir, runs).await;
        database.drop_if_postgres(spec).await;
        let _ = std::fs::remove_dir_all(&workdir);
        reports.push(report?);
    }
    Ok(reports)
}

async fn starts(
    service: Service,
    database_url: &str,
    workdir: &Path,
    runs: usize,
) -> anyhow::Result<StartupReport> {
    let binary = std::env::current_exe()?.with_file_name(service.binary());
    let mut first = None;
    let mut later = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for _ in 0..runs.max(2) {
        let (addr, probe) = (free_port()?, free_port()?);
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&binary)
            .arg("serve")
            .envs(service.env(database_url, addr, probe))
            .current_dir(workdir)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let took = loop {
            if service.ready(addr, probe).await {
                break started.elapsed();
            }
            if let Some(status) = child.try_wait()? {
                anyhow::bail!(
                    "{} exited with {status} before it was ready",
                    service.binary()
                );
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "{} not ready after 10 s",
                service.binary()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        let _ = child.kill().await;
        match first {
            None => first = Some(took),
            Some(_) => later.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX))?,
        }
    }
    Ok(StartupReport {
        service,
        first: first.unwrap_or_default(),
        later,
    })
}

/// A loopback port free right now (the service binds it a moment later).
fn free_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

async fn serving(addr: SocketAddr, service: &str) -> bool {
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
            service: service.into(),
        })
        .await
        .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
}

/// `GET path` answers 200: one HTTP/1.1 request on a fresh connection, status line read.
async fn http_ok(addr: SocketAddr, path: &str) -> bool {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0_u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_millis(500), exchange)
        .await
        .is_ok_and(|r| r.unwrap_or(false))
}

/// The times as a markdown table.
#[allow(clippy::print_stdout)]
pub fn print(spec: &SuiteSpec, reports: &[StartupReport]) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!("\nexec → ready on {:?}\n", spec.backend);
    println!(
        "| service | ready when | first start (migrates) ms | later starts | p50 ms | p90 ms | max ms |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for report in reports {
        let ready = match report.service {
            Service::Portal => "/readyz and /healthz 200".to_owned(),
            grpc => format!("{} SERVING", grpc.readiness()),
        };
        println!(
            "| {} | {ready} | {:.1} | {} | {:.1} | {:.1} | {:.1} |",
            report.service.binary(),
            report.first.as_secs_f64() * 1000.0,
            report.later.len(),
            ms(report.later.value_at_quantile(0.5)),
            ms(report.later.value_at_quantile(0.9)),
            ms(report.later.max())
        );
    }
}
