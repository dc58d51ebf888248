//! A closed-loop driver for any keystore RPC (the issue-16 benchmarks: `compare`,
//! `current-key`), and the report rows they print. `load` stays the `verify` suite's own.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientSettings, channel};

use crate::load::LoadReport;

/// One printed row with a name made at run time.
#[derive(Debug)]
pub struct NamedRow {
    pub name: String,
    pub report: LoadReport,
    pub peak_rss_kib: u64,
}

/// `connections` channels to `client`'s endpoint, each made and used once (by `warm`)
/// before any clock starts.
///
/// # Errors
/// A bad endpoint or an unreachable server.
pub async fn connect<W, Fut>(
    client: &ClientSettings,
    connections: usize,
    warm: W,
) -> anyhow::Result<Vec<ServiceChannel>>
where
    W: Fn(KeystoreClient<ServiceChannel>) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let mut channels = Vec::new();
    for _ in 0..connections.max(1) {
        let built = channel(client)?;
        if let Err(status) = warm(KeystoreClient::new(built.clone())).await
            && status.code() == tonic::Code::Unavailable
        {
            anyhow::bail!("cannot reach {}: {status}", client.endpoint);
        }
        channels.push(built);
    }
    Ok(channels)
}

/// Makes `calls` calls with `concurrency` in flight over `channels`; `call(client, i)` makes
/// the i-th and names its result (the histogram of results is reported).
///
/// # Errors
/// A call failing with a gRPC error.
pub async fn closed_loop<F, Fut>(
    channels: &[ServiceChannel],
    concurrency: usize,
    calls: usize,
    call: F,
) -> anyhow::Result<LoadReport>
where
    F: Fn(KeystoreClient<ServiceChannel>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<String>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency.max(1) {
        let client = KeystoreClient::new(channels[worker % channels.len()].clone());
        let (next, call) = (next.clone(), call.clone());
        workers.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut results = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= calls {
                    break;
                }
                let sent = Instant::now();
                let result = call(client.clone(), i).await?;
                histogram.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
                *results.entry(result).or_insert(0_usize) += 1;
            }
            anyhow::Ok((histogram, results))
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut results = BTreeMap::new();
    for worker in workers {
        let (h, r) = worker.await??;
        histogram.add(h)?;
        for (k, v) in r {
            *results.entry(k).or_insert(0) += v;
        }
    }
    Ok(LoadReport {
        calls,
        elapsed: started.elapsed(),
        p50: Duration::from_micros(histogram.value_at_quantile(0.50)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
        results,
    })
}

/// The rows as a markdown table, with each row's throughput relative to the first's.
#[allow(clippy::print_stdout)]
pub fn print_rows(title: &str, rows: &[NamedRow]) {
    println!("\n{title}\n");
    println!("| run | calls/s | vs first row | p50 ms | p99 ms | server peak RSS MiB | results |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let first = rows.first().map_or(1.0, |r| r.report.per_second());
    for row in rows {
        let results: Vec<String> = row
            .report
            .results
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "| {} | {:.0} | {:.0} % | {:.2} | {:.2} | {:.1} | {} |",
            row.name,
            row.report.per_second(),
            100.0 * row.report.per_second() / first,
            row.report.p50.as_secs_f64() * 1000.0,
            row.report.p99.as_secs_f64() * 1000.0,
            row.peak_rss_kib as f64 / 1024.0,
            results.join(" ")
        );
    }
}
