//! The load generator: `concurrency` calls of `VerifyCode` in flight over a few HTTP/2
//! connections, each call for a different random account, with latency histograms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientSettings, channel};
use rand::seq::SliceRandom;

use crate::seed::{SeededAccount, code};

/// Which path the calls take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePath {
    /// A valid, never-used code of the account: the accepted path.
    Valid,
    /// A code outside the account's window: the rejected path (failure counted, audited).
    Wrong,
}

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Endpoint, token and TLS of the clients, built by kagi's own client builder (the
    /// same one the services use), so plaintext, TLS and mTLS differ only in settings.
    pub client: ClientSettings,
    pub concurrency: usize,
    pub connections: usize,
    pub calls: usize,
    pub path: CodePath,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub calls: usize,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub results: BTreeMap<String, usize>,
}

impl LoadReport {
    pub fn per_second(&self) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let calls = self.calls as f64;
        calls / self.elapsed.as_secs_f64()
    }
}

/// Runs `spec.calls` calls, each on a distinct account drawn at random from `accounts`.
///
/// # Errors
/// Connection failures or a call failing with a gRPC error.
pub async fn run(
    spec: &LoadSpec,
    accounts: &Arc<Vec<SeededAccount>>,
) -> anyhow::Result<LoadReport> {
    anyhow::ensure!(
        spec.calls <= accounts.len(),
        "more calls than accounts: codes would repeat"
    );
    let mut order: Vec<usize> = (0..accounts.len()).collect();
    order.shuffle(&mut rand::rng());
    let order = Arc::new(order);
    let mut channels = Vec::new();
    for _ in 0..spec.connections.max(1) {
        let built = channel(&spec.client)?;
        // Connections (and TLS handshakes) are made before the clock starts.
        let mut warm = KeystoreClient::new(built.clone());
        let warmed = warm
            .verify_code(pb::VerifyCodeRequest {
                account_id: "warm-up".into(),
                code: "000000".into(),
            })
            .await;
        // Any answer (an unknown account included) means the connection is up.
        if let Err(status) = warmed
            && status.code() == tonic::Code::Unavailable
        {
            anyhow::bail!("cannot reach {}: {status}", spec.client.endpoint);
        }
        channels.push(built);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..spec.concurrency {
        let client = KeystoreClient::new(channels[worker % channels.len()].clone());
        let (next, order, accounts, spec) =
            (next.clone(), order.clone(), accounts.clone(), spec.clone());
        workers.push(tokio::spawn(async move {
            worker_loop(client, &spec, &next, &order, &accounts).await
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
        calls: spec.calls,
        elapsed: started.elapsed(),
        p50: Duration::from_micros(histogram.value_at_quantile(0.50)),
        p99: Duration::from_micros(histogram.value_at_quantile(0.99)),
        results,
    })
}

type WorkerResult = (Histogram<u64>, BTreeMap<String, usize>);

async fn worker_loop(
    mut client: KeystoreClient<ServiceChannel>,
    spec: &LoadSpec,
    next: &AtomicUsize,
    order: &[usize],
    accounts: &[SeededAccount],
) -> anyhow::Result<WorkerResult> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut results = BTreeMap::new();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= spec.calls {
            break;
        }
        let account = &accounts[order[i]];
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let code = match spec.path {
            CodePath::Valid => code(&account.secret, now).to_string(),
            CodePath::Wrong => wrong_code(&account.secret, now),
        };
        let request = pb::VerifyCodeRequest {
            account_id: account.account_id.clone(),
            code,
        };
        let sent = Instant::now();
        let reply = client.verify_code(request).await?.into_inner();
        histogram.record(u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX))?;
        *results
            .entry(reply.result().as_str_name().to_owned())
            .or_insert(0) += 1;
    }
    Ok((histogram, results))
}

/// A 6-digit code matching none of the steps the keystore would accept.
pub fn wrong_code(secret: &[u8], now: u64) -> String {
    let window: Vec<String> = [now - 60, now - 30, now, now + 30, now + 60]
        .iter()
        .map(|t| code(secret, *t).to_string())
        .collect();
    (0..)
        .map(|n: u32| format!("{:06}", (n * 7919) % 1_000_000))
        .find(|c| !window.contains(c))
        .unwrap_or_default()
}
