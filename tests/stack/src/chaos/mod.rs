//! The chaos run: a whole stack under steady load while replicas, the database primary and
//! the SMTP server fail on a seeded schedule; then the invariants of issue 13, each a hard
//! failure, and the numbers per fault type.
//!
//! # Layout
//! - [`cli`]: `kagi-stack chaos --seconds N --seed S --replicas R`.
//! - [`load`]: logins, page loads, clients and their retries; [`saga`]: whole resets.
//! - [`faults`]: the seeded schedule and its injection.
//! - [`journal`]: what the clients saw; [`check`]: the invariants; [`report`]: the numbers.

pub mod check;
pub mod cli;
pub mod faults;
pub mod journal;
pub mod load;
pub mod report;
pub mod saga;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use secrecy::SecretString;

use crate::replica::Service;
use crate::stack::{Stack, StackBuilder, Storage};
use journal::Journal;
use load::{Account, Clients, Tokens, bearer};
use saga::{Saga, SagaAccount};

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The multi-call binary the replicas run.
    pub binary: PathBuf,
    pub seconds: u64,
    pub seed: u64,
    pub replicas: usize,
    pub storage: Storage,
    /// Login accounts (each logs in once per 30 s time step).
    pub accounts: usize,
    /// Sagas running at once.
    pub saga_workers: usize,
    pub smtp_down: Duration,
    pub smtp_4xx: Duration,
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Outcome {
    pub report: report::Report,
    /// The stack's folder, kept when an invariant failed.
    pub kept: Option<PathBuf>,
}

/// Runs the load and the faults, then checks.
///
/// # Errors
/// The stack could not start or a repair failed (then the run proves nothing); broken
/// invariants are not errors but [`report::Report::violations`].
pub async fn run(config: &Config) -> anyhow::Result<Outcome> {
    let began = std::time::Instant::now();
    let mut stack = StackBuilder::new(&config.binary)
        .storage(config.storage)
        .replicas(config.replicas)
        .start()
        .await
        .context("starting the stack")?;
    progress(began, "stack up");
    let result = run_on(&mut stack, config, began).await;
    let kept = match &result {
        Ok(report) if report.violations.is_empty() => None,
        _ => Some(stack.keep_dir()),
    };
    stack.stop().await;
    let report = result.with_context(|| match &kept {
        Some(dir) => format!("logs and data kept in {}", dir.display()),
        None => String::new(),
    })?;
    Ok(Outcome { report, kept })
}

/// One line on stderr per phase, so a long run shows where it is.
#[allow(clippy::print_stderr)]
fn progress(began: std::time::Instant, what: &str) {
    eprintln!(
        "kagi-stack chaos: {what} after {:.1} s",
        began.elapsed().as_secs_f64()
    );
}

async fn run_on(
    stack: &mut Stack,
    config: &Config,
    began: std::time::Instant,
) -> anyhow::Result<report::Report> {
    let journal = Journal::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = Clients {
        keystore: KeystoreClient::new(load::balanced(&stack.replica_addrs(Service::Keystore))?),
        reset: ResetClient::new(load::balanced(&stack.replica_addrs(Service::Reset))?),
        // Browsers reach the portal through the front, as through an Ingress.
        portal: vec![stack.addr(Service::Portal)],
        tokens: Arc::new(Tokens {
            login: stack.token("login")?,
            portal: stack.token("portal")?,
            admin: stack.token("admin")?,
            onboarding: stack.token("onboarding")?,
        }),
        journal: journal.clone(),
        mail: stack.mail(),
        stop: stop.clone(),
    };
    let accounts = enroll_logins(&clients, config.accounts).await?;
    // One saga per account: enough for a saga per worker every two seconds of the run (a
    // saga takes about that with its pause); a worker out of accounts stops early.
    let saga_count = usize::try_from(config.seconds).unwrap_or(60) * config.saga_workers / 2 + 10;
    let saga_accounts = saga_accounts(stack, &clients, saga_count).await?;
    let expected: Vec<(String, Vec<u8>)> = accounts
        .iter()
        .map(|a| (a.id.clone(), a.secret.clone()))
        .collect();

    let plan = faults::Plan {
        seconds: config.seconds,
        seed: config.seed,
        replicas: config.replicas,
        database_faults: stack.pg.is_some(),
        smtp_down: config.smtp_down,
        smtp_4xx: config.smtp_4xx,
    };
    let schedule = faults::schedule(&plan);
    progress(began, "accounts enrolled, load and faults start");
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    let workers = 8.min(accounts.len().max(1));
    let chunk = accounts.len().div_ceil(workers).max(1);
    for part in accounts.chunks(chunk) {
        tasks.push(tokio::spawn(load::logins(
            clients.clone(),
            part.to_vec(),
            10,
        )));
    }
    tasks.push(tokio::spawn(load::pages(
        clients.clone(),
        Duration::from_millis(50),
    )));
    let pool = Arc::new(Mutex::new(saga_accounts));
    let done: Arc<Mutex<Vec<Saga>>> = Arc::default();
    let mut saga_tasks = Vec::new();
    for worker in 0..config.saga_workers {
        saga_tasks.push(tokio::spawn(saga::worker(
            clients.clone(),
            pool.clone(),
            done.clone(),
            Duration::from_millis(500),
            worker,
        )));
    }

    let process = faults::process_lane(
        &mut stack.replicas,
        &mut stack.pg,
        stack.front.as_ref(),
        &schedule.process,
        &journal,
        started,
    );
    let mail = faults::smtp_lane(&mut stack.mailbox, &schedule, &journal, started);
    let (process, ()) = tokio::join!(process, mail);
    process.context("repairing a fault")?;
    tokio::time::sleep_until(started + Duration::from_secs(config.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    progress(began, "load stopped, sagas finishing");
    for task in tasks {
        task.await?;
    }
    // Started sagas run to their end (a mail held up by the SMTP outage included).
    for task in saga_tasks {
        task.await?;
    }
    let elapsed = started.elapsed();
    let sagas = done
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    progress(began, "sagas finished, checking");
    let found = check::all(stack, &clients, &expected, &sagas).await?;
    progress(began, "checked");
    Ok(report::Report::new(
        config, &schedule, &journal, &sagas, found, elapsed,
    ))
}

/// Enrolls `n` login accounts, 16 at a time.
async fn enroll_logins(clients: &Clients, n: usize) -> anyhow::Result<Vec<Account>> {
    let mut accounts = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("login{i:05}")).collect();
    for batch in ids.chunks(16) {
        let mut handles = Vec::new();
        for id in batch {
            let (clients, id) = (clients.clone(), id.clone());
            handles.push(tokio::spawn(async move {
                enroll(&clients, &id).await.map(|s| (id, s))
            }));
        }
        for handle in handles {
            let (id, secret) = handle.await??;
            accounts.push(Account {
                id,
                secret,
                last_step: 0,
            });
        }
    }
    Ok(accounts)
}

/// The account's first key, as the onboarding system enrolls it: retried while the stack
/// is slow to answer (a busy machine), and read back if a lost reply's enrollment went
/// through (`ALREADY_EXISTS` on the retry).
async fn enroll(clients: &Clients, id: &str) -> anyhow::Result<Vec<u8>> {
    let budget = Duration::from_secs(60);
    let enrolled = load::retry(&Journal::default(), "setup Enroll", budget, || {
        let mut keystore = clients.keystore.clone();
        let request = bearer(
            &clients.tokens.onboarding,
            pb::EnrollRequest {
                account_id: id.to_owned(),
            },
        );
        async move { keystore.enroll(request).await }
    })
    .await;
    let key = match enrolled {
        Ok(reply) => reply.into_inner().key,
        Err(status) if status.code() == tonic::Code::AlreadyExists => {
            load::retry(&Journal::default(), "setup GetCurrentKey", budget, || {
                let mut keystore = clients.keystore.clone();
                let request = bearer(
                    &clients.tokens.portal,
                    pb::GetCurrentKeyRequest {
                        account_id: id.to_owned(),
                        forms: vec![pb::KeyForm::Text as i32],
                    },
                );
                async move { keystore.get_current_key(request).await }
            })
            .await?
            .into_inner()
            .key
        }
        Err(status) => return Err(status.into()),
    };
    let key = key.context("no key in the reply")?;
    Ok(data_encoding::BASE32_NOPAD.decode(key.secret_base32.as_bytes())?)
}

/// `n` accounts in the reset service's directory (added as `kagi reset accounts add`
/// does, through its library), each enrolled at the keystore.
async fn saga_accounts(
    stack: &Stack,
    clients: &Clients,
    n: usize,
) -> anyhow::Result<Vec<SagaAccount>> {
    let mut settings = kagi_reset::Settings::default();
    settings.database.url = stack.database_url(Service::Reset).to_owned();
    settings.database.max_connections = 4;
    settings.password.memory_kib = 1024;
    settings.password.iterations = 1;
    let admin = kagi_reset::accounts::AccountAdmin::new(
        kagi_reset::app::database(&settings).await?,
        Arc::new(kagi_reset::app::password_hasher(&settings).await?),
    );
    let now = kagi_runtime::clock::unix_ms(std::time::SystemTime::now());
    let mut accounts = Vec::with_capacity(n);
    let ids: Vec<String> = (0..n).map(|i| format!("saga{i:05}")).collect();
    for batch in ids.chunks(16) {
        let mut handles = Vec::new();
        for id in batch.iter().cloned() {
            let (admin, clients) = (admin.clone(), clients.clone());
            handles.push(tokio::spawn(async move {
                let email = format!("{id}@example.ac.jp");
                admin
                    .add(&id, &email, SecretString::from(saga::PASSWORD), now)
                    .await
                    .with_context(|| format!("adding {id}"))?;
                let old_secret = enroll(&clients, &id).await?;
                anyhow::Ok(SagaAccount {
                    id,
                    email,
                    old_secret,
                })
            }));
        }
        for handle in handles {
            accounts.push(handle.await??);
        }
    }
    accounts.reverse();
    Ok(accounts)
}
