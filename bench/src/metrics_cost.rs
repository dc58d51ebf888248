//! What Prometheus metrics cost `VerifyCode` (issue 11's ≤ 3 % target): the same generator
//! against keystore processes on one database in one run, `[metrics]` off and on in turn
//! (off, on, off, on), each phase on its own quarter of the accounts so every code is fresh
//! (on SQLite each phase on its own copy of the seeded file, so none inherits the WAL of
//! the one before).
//! While metrics are on, `/metrics` is scraped every second (Prometheus' ServiceMonitors ask
//! every 30 s: this is the pessimistic side), and the last scrape must have counted the
//! phase's calls, so an "on" phase cannot silently run without metrics.
//!
//! Throughput on a shared 2-core machine swings with whatever else runs, so each phase also
//! reports the server process's CPU time per call (user + system, from `/proc/<pid>/stat`):
//! what metrics add to every call, far less sensitive to neighbours than calls/s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::load::{self, CodePath};
use crate::suite::{Row, Seeded, Server, SuiteSpec, keystore_env, load_spec};

/// The phases, in the order they run.
const PHASES: [(&str, bool); 4] = [
    ("keystore, accepted, metrics off (1)", false),
    ("keystore, accepted, metrics on (1)", true),
    ("keystore, accepted, metrics off (2)", false),
    ("keystore, accepted, metrics on (2)", true),
];

/// One phase's server CPU: microseconds of CPU time (user + system) per call.
#[derive(Debug, Clone, Copy)]
pub struct CpuPerCall(pub f64);

/// Runs the four phases; the rows (and CPU figures) are in the order the phases ran (off, on, off, on).
///
/// # Errors
/// Any failure to seed, spawn, load or scrape, or an "on" phase whose `/metrics` did not
/// count its calls.
pub async fn run_metrics(spec: &SuiteSpec) -> anyhow::Result<(Vec<Row>, Vec<CpuPerCall>)> {
    let Seeded {
        database,
        kek,
        accounts,
    } = Seeded::create(spec, false).await?;

    let quarter = accounts.len() / PHASES.len();
    let mut rows = Vec::new();
    let mut cpu = Vec::new();
    for (n, (name, metrics_on)) in PHASES.into_iter().enumerate() {
        let mut env = keystore_env(spec, &database, &kek);
        if let Some(url) = database.sqlite_copy(&format!("phase-{n}"))? {
            env.retain(|(name, _)| name != "KAGI_KEYSTORE_DATABASE__URL");
            env.push(("KAGI_KEYSTORE_DATABASE__URL".into(), url));
        }
        let metrics_addr = free_addr()?;
        if metrics_on {
            env.push((
                "KAGI_KEYSTORE_METRICS__LISTEN_ADDR".into(),
                metrics_addr.to_string(),
            ));
        }
        let mut server = Server::spawn(
            "kagi-keystore",
            &["serve"],
            &env,
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
        )
        .await?;
        let mut load = load_spec(spec, server.addr, CodePath::Valid);
        let slice = Arc::new(accounts[n * quarter..(n + 1) * quarter].to_vec());
        load.calls = load.calls.min(slice.len());
        eprintln!("{name}…");
        let scraper = metrics_on.then(|| tokio::spawn(scrape_every_second(metrics_addr)));
        let ticks_before = cpu_ticks(server.pid())?;
        let report = load::run(&load, &slice).await;
        let ticks = cpu_ticks(server.pid())? - ticks_before;
        if let Some(scraper) = scraper {
            scraper.abort();
        }
        let report = report?;
        if metrics_on {
            let text = get_metrics(metrics_addr).await?;
            let counted = ok_verify_calls(&text);
            anyhow::ensure!(
                counted >= report.calls,
                "{name}: /metrics counted {counted} VerifyCode calls of {}",
                report.calls
            );
        }
        #[allow(clippy::cast_precision_loss)]
        cpu.push(CpuPerCall(
            ticks as f64 * 1e6 / CLOCK_TICKS_PER_SEC / report.calls.max(1) as f64,
        ));
        rows.push(Row {
            name,
            report,
            peak_rss_kib: server.peak_rss_kib(),
        });
        server.stop().await;
    }
    database.drop_if_postgres(spec).await;
    Ok((rows, cpu))
}

/// Linux's `USER_HZ`, the unit of `/proc/<pid>/stat`'s CPU times (100 on every mainstream
/// architecture; `getconf CLK_TCK`).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// User + system CPU time of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> anyhow::Result<u64> {
    let pid = pid.ok_or_else(|| anyhow::anyhow!("the server has exited"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let after_comm = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow::anyhow!("unreadable /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(n - 3)
            .ok_or_else(|| anyhow::anyhow!("short /proc/{pid}/stat"))?
            .parse()?)
    };
    Ok(field(14)? + field(15)?)
}

/// Metrics on vs off, from the rows of [`run_metrics`]: (calls/s off, calls/s on, the cost
/// in percent of the off rate; negative when "on" was faster, i.e. within noise).
pub fn cost(rows: &[Row]) -> Option<(f64, f64, f64)> {
    let rates: Vec<f64> = rows.iter().map(|r| r.report.per_second()).collect();
    let (off, on) = means(&rates)?;
    Some((off, on, 100.0 * (off - on) / off))
}

/// Server CPU per call off and on (µs), and what metrics add in percent of the off figure.
pub fn cpu_cost(cpu: &[CpuPerCall]) -> Option<(f64, f64, f64)> {
    let per_call: Vec<f64> = cpu.iter().map(|c| c.0).collect();
    let (off, on) = means(&per_call)?;
    Some((off, on, 100.0 * (on - off) / off))
}

/// The mean of the "off" phases' values and of the "on" phases' values.
fn means(values: &[f64]) -> Option<(f64, f64)> {
    let mean = |on: bool| {
        let rates: Vec<f64> = values
            .iter()
            .zip(PHASES)
            .filter(|(_, (_, phase_on))| *phase_on == on)
            .map(|(value, _)| *value)
            .collect();
        #[allow(clippy::cast_precision_loss)]
        let n = rates.len() as f64;
        (!rates.is_empty()).then(|| rates.iter().sum::<f64>() / n)
    };
    Some((mean(false)?, mean(true)?))
}

fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// Scrapes like a (very eager) Prometheus until aborted; failures are the final check's.
async fn scrape_every_second(addr: SocketAddr) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _ = get_metrics(addr).await;
    }
}

/// `GET /metrics` over a fresh connection, as a scraper does; the body.
async fn get_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("not an HTTP answer from {addr}"))?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    Ok(body.to_owned())
}

/// The keystore's count of VerifyCode calls answered OK.
fn ok_verify_calls(text: &str) -> usize {
    let series = "grpc_server_handled_total{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\",grpc_code=\"OK\"} ";
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let calls = v as usize;
            calls
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::load::LoadReport;

    fn row(name: &'static str, calls: usize) -> Row {
        Row {
            name,
            report: LoadReport {
                calls,
                elapsed: Duration::from_secs(1),
                p50: Duration::ZERO,
                p99: Duration::ZERO,
                results: BTreeMap::new(),
            },
            peak_rss_kib: 0,
        }
    }

    #[test]
    fn the_cost_compares_the_mean_of_the_on_phases_with_the_off_phases() {
        let rows: Vec<Row> = PHASES
            .iter()
            .zip([1_000, 940, 1_000, 960])
            .map(|((name, _), calls)| row(name, calls))
            .collect();
        let (off, on, cost) = cost(&rows).unwrap();
        assert_eq!((off, on), (1_000.0, 950.0));
        assert!((cost - 5.0).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn the_cpu_cost_is_what_the_on_phases_add_per_call() {
        let cpu = [400.0, 410.0, 400.0, 414.0].map(CpuPerCall);
        let (off, on, cost) = cpu_cost(&cpu).unwrap();
        assert_eq!((off, on), (400.0, 412.0));
        assert!((cost - 3.0).abs() < 1e-9, "{cost}");
    }

    #[test]
    fn this_process_has_spent_some_cpu() {
        assert!(cpu_ticks(Some(std::process::id())).is_ok());
        assert!(cpu_ticks(None).is_err());
    }

    #[test]
    fn the_ok_count_is_read_from_the_keystores_own_series() {
        let text = "grpc_server_handled_total{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\",grpc_code=\"Unauthenticated\"} 7\n\
                    grpc_server_handled_total{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\",grpc_code=\"OK\"} 25000\n";
        assert_eq!(ok_verify_calls(text), 25_000);
        assert_eq!(ok_verify_calls(""), 0);
    }
}
