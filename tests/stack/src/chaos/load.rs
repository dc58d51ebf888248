//! The load a chaos run keeps up while faults are injected, as real clients make it:
//! logins (`VerifyCode` with a fresh code over many accounts, some codes replayed on
//! purpose), whole reset sagas (the code read from the SMTP server's mailbox), and portal
//! page loads. Clients balance over every replica of a service themselves (tonic's
//! balanced channel over each replica's address) and retry what a real client retries.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_runtime::client::{ClientSettings, Resolve, ServiceChannel};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::journal::Journal;
use crate::mailbox::MailReader;

/// A login account of the run: its current key as the client knows it.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub secret: Vec<u8>,
    /// The last time step this client sent a code of.
    pub last_step: u64,
}

/// Everything a load task needs.
#[derive(Debug, Clone)]
pub struct Clients {
    pub keystore: KeystoreClient<ServiceChannel>,
    pub reset: ResetClient<ServiceChannel>,
    pub portal: Vec<SocketAddr>,
    pub tokens: Arc<Tokens>,
    pub journal: Journal,
    pub mail: MailReader,
    pub stop: Arc<AtomicBool>,
}

/// The bearer tokens the load calls with.
#[derive(Debug)]
pub struct Tokens {
    pub login: String,
    pub portal: String,
    pub admin: String,
    pub onboarding: String,
}

/// The replicas of one service, as a headless Service's DNS name would list them.
#[derive(Debug)]
struct Replicas(Vec<SocketAddr>);

impl Resolve for Replicas {
    fn resolve<'a>(
        &'a self,
        _host: &'a str,
        _port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// A client channel as kagi's own services build them (`kagi_runtime::client`), balancing
/// over every replica's address: one connection each, calls spread over the ready ones.
pub fn balanced(addrs: &[SocketAddr]) -> anyhow::Result<ServiceChannel> {
    let settings = ClientSettings {
        balance: true,
        timeout_ms: 5_000,
        ..ClientSettings::at("http://replicas.kagi-stack:1")
    };
    Ok(kagi_runtime::client::channel_with_resolver(
        &settings,
        Arc::new(Replicas(addrs.to_vec())),
    )?)
}

/// `message` with `Bearer token`.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Ok(value) = format!("Bearer {token}").parse() {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Runs `attempt` until it succeeds, answers something other than UNAVAILABLE or
/// DEADLINE_EXCEEDED, or `budget` is spent; every failed attempt goes to the journal.
pub async fn retry<T, F, Fut>(
    journal: &Journal,
    call: &'static str,
    budget: Duration,
    mut attempt: F,
) -> Result<T, tonic::Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    journal.call(call);
    let deadline = Instant::now() + budget;
    let mut pause = Duration::from_millis(50);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(status) => {
                let retryable = matches!(
                    status.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
                );
                let last = !retryable || Instant::now() + pause > deadline;
                journal.failure(call, &status, last);
                if last {
                    return Err(status);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// The TOTP code of `secret` (SHA1, 6 digits, 30 s) for time step `step`.
pub fn code_at(secret: &[u8], step: u64) -> String {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_secret(secret.to_vec())
        .build()
        .map(|totp| totp.generate(step * 30).to_string())
        .unwrap_or_default()
}

pub fn current_step() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 30)
}

/// How long a login retries: what a login page would wait.
const LOGIN_BUDGET: Duration = Duration::from_secs(3);

/// One login worker: over its accounts, logs each in once per time step with a fresh
/// code; every `replay_every`-th accepted code is sent again and must be REPLAYED.
pub async fn logins(clients: Clients, mut accounts: Vec<Account>, replay_every: usize) {
    let journal = &clients.journal;
    let mut accepted = 0_usize;
    while !clients.stop.load(Ordering::Relaxed) {
        let step = current_step();
        let mut busy = false;
        for account in accounts.iter_mut() {
            if clients.stop.load(Ordering::Relaxed) {
                return;
            }
            if account.last_step >= step {
                continue;
            }
            busy = true;
            account.last_step = step;
            let code = code_at(&account.secret, step);
            let attempts = std::sync::atomic::AtomicU32::new(0);
            let reply = retry(journal, "keystore.VerifyCode", LOGIN_BUDGET, || {
                attempts.fetch_add(1, Ordering::Relaxed);
                let (mut ks, request) =
                    (clients.keystore.clone(), verify(&clients, account, &code));
                async move { ks.verify_code(request).await }
            })
            .await;
            let retried = attempts.load(Ordering::Relaxed) > 1;
            let Ok(reply) = reply else { continue };
            match reply.into_inner().result() {
                pb::VerifyResult::Accepted => {
                    journal.accepted(&account.id, step);
                    accepted += 1;
                    if replay_every > 0 && accepted.is_multiple_of(replay_every) {
                        replay(&clients, account, &code, step).await;
                    }
                }
                // The first attempt went through but its reply was lost; the retry is
                // rightly refused. Ambiguous for the client, never a double acceptance.
                pb::VerifyResult::Replayed if retried => {
                    journal.note("login retried after a lost reply: REPLAYED")
                }
                other => journal.violation(format!(
                    "login {} at step {step}: {other:?} for a fresh code of the current key",
                    account.id
                )),
            }
        }
        if !busy {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

fn verify(
    clients: &Clients,
    account: &Account,
    code: &str,
) -> tonic::Request<pb::VerifyCodeRequest> {
    bearer(
        &clients.tokens.login,
        pb::VerifyCodeRequest {
            account_id: account.id.clone(),
            code: code.to_owned(),
        },
    )
}

/// Sends an accepted code again (the balancer picks any replica): anything but REPLAYED
/// is a second acceptance or a wrong answer.
async fn replay(clients: &Clients, account: &Account, code: &str, step: u64) {
    let reply = retry(
        &clients.journal,
        "keystore.VerifyCode (replay)",
        LOGIN_BUDGET,
        || {
            let (mut ks, request) = (clients.keystore.clone(), verify(clients, account, code));
            async move { ks.verify_code(request).await }
        },
    )
    .await;
    if let Ok(reply) = reply {
        match reply.into_inner().result() {
            pb::VerifyResult::Replayed => clients.journal.note("replayed code refused"),
            pb::VerifyResult::Accepted => {
                clients.journal.accepted(&account.id, step);
                clients.journal.violation(format!(
                    "a replayed code of {} at step {step} was ACCEPTED again",
                    account.id
                ));
            }
            other => clients.journal.violation(format!(
                "a replayed code of {} at step {step}: {other:?}",
                account.id
            )),
        }
    }
}

/// Portal page loads through plain HTTP/1.1 (to the front, which spreads them over the
/// replicas); a load still failing after its budget of retries is a failed call.
pub async fn pages(clients: Clients, pause: Duration) {
    let next = AtomicUsize::new(0);
    while !clients.stop.load(Ordering::Relaxed) {
        let _ = retry(&clients.journal, "portal GET /login", LOGIN_BUDGET, || {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let addr = clients.portal[i % clients.portal.len().max(1)];
            get(addr, "/login")
        })
        .await;
        tokio::time::sleep(pause).await;
    }
}

/// `GET path`: 200 is success; a refused connection or a 5xx is UNAVAILABLE.
async fn get(addr: SocketAddr, path: &str) -> Result<(), tonic::Status> {
    let unavailable = |what: String| tonic::Status::unavailable(what);
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unavailable(format!("connect: {e}")))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: portal\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| unavailable(format!("write: {e}")))?;
        let mut reply = Vec::new();
        stream
            .read_to_end(&mut reply)
            .await
            .map_err(|e| unavailable(format!("read: {e}")))?;
        let head = String::from_utf8_lossy(&reply[..reply.len().min(12)]).into_owned();
        match head.get(9..12) {
            Some("200") => Ok(()),
            Some(s) if s.starts_with('5') => Err(unavailable(format!("HTTP {s}"))),
            Some(s) => Err(tonic::Status::internal(format!("HTTP {s}"))),
            None => Err(unavailable("connection closed without a reply".into())),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("portal page")))
}
