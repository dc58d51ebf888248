//! The invariants checked after the load stopped, each a hard failure:
//! no time step accepted twice for one account; every started saga completed, with exactly
//! one rotation each in the audit trail; every queued mail delivered (duplicates counted);
//! every key still decrypts and is the one its user holds; no acknowledged login lost
//! (the database's last step ≥ every step a client saw ACCEPTED); and clients saw only
//! UNAVAILABLE / DEADLINE_EXCEEDED, only inside a fault's window.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kagi_proto::v1 as pb;
use sqlx::Row as _;

use super::journal::{Fault, FaultKind};
use super::load::{Clients, bearer};
use super::saga::{Outcome, Saga};
use crate::replica::Service;
use crate::stack::Stack;

/// How long after a fault's repair its failures may still show (pools reconnecting,
/// the front's next health check).
pub const GRACE: Duration = Duration::from_secs(10);

/// What the checks found.
#[derive(Debug, Default)]
pub struct Found {
    pub violations: Vec<String>,
    pub mails_queued: usize,
    pub mails_received: usize,
    /// Messages received more than once (same Message-ID).
    pub duplicate_mails: usize,
    pub keys_checked: usize,
}

/// Runs every check.
///
/// # Errors
/// A database or service could not be read for a check.
pub async fn all(
    stack: &Stack,
    clients: &Clients,
    logins: &[(String, Vec<u8>)],
    sagas: &[Saga],
) -> anyhow::Result<Found> {
    let mut found = Found::default();
    found.violations.extend(clients.journal.violations());
    accepted_once(clients, &mut found);
    failures_inside_faults(clients, &mut found);
    mail(stack, &mut found).await?;
    let mut expected: Vec<(String, Vec<u8>)> = logins.to_vec();
    for saga in sagas {
        match &saga.outcome {
            Outcome::Completed { new_secret } => {
                expected.push((saga.account.id.clone(), new_secret.clone()));
            }
            Outcome::NotStarted | Outcome::Broken(_) => {}
        }
    }
    keys(clients, &expected, &mut found).await?;
    keystore_rows(stack, clients, sagas, &mut found).await?;
    sagas_not_stuck(stack, clients, sagas, &mut found).await?;
    Ok(found)
}

fn accepted_once(clients: &Clients, found: &mut Found) {
    let mut seen = HashSet::new();
    for (account, step) in clients.journal.accepted_codes() {
        if !seen.insert((account.clone(), step)) {
            found
                .violations
                .push(format!("time step {step} of {account} was ACCEPTED twice"));
        }
    }
}

/// The fault a failure at `at` belongs to: the one being injected then (faults of the
/// process lane never overlap), else the latest-repaired one whose [`GRACE`] holds it. SMTP
/// outages fail no call (they delay mail) and explain none.
pub fn fault_at(faults: &[Fault], at: Instant, end_of_run: Instant) -> Option<&Fault> {
    let calls = || faults.iter().filter(|f| f.kind != FaultKind::SmtpOutage);
    calls()
        .find(|f| f.start <= at && at <= f.end.unwrap_or(end_of_run))
        .or_else(|| {
            calls()
                .filter(|f| f.start <= at && at <= f.end.unwrap_or(end_of_run) + GRACE)
                .max_by_key(|f| f.end)
        })
}

fn failures_inside_faults(clients: &Clients, found: &mut Found) {
    let faults = clients.journal.faults();
    let now = Instant::now();
    let mut outside: BTreeMap<String, usize> = BTreeMap::new();
    for failure in clients.journal.failures() {
        let expected_code = matches!(
            failure.code,
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        );
        if !expected_code {
            *outside
                .entry(format!(
                    "{} answered {:?} ({})",
                    failure.call, failure.code, failure.message
                ))
                .or_default() += 1;
        } else if fault_at(&faults, failure.at, now).is_none() {
            *outside
                .entry(format!(
                    "{} failed outside every fault window: {:?} ({})",
                    failure.call, failure.code, failure.message
                ))
                .or_default() += 1;
        }
    }
    for (what, n) in outside {
        found.violations.push(format!("{what} ×{n}"));
    }
}

/// Waits for the notifier's queue to drain, then matches it against the mailbox.
async fn mail(stack: &Stack, found: &mut Found) -> anyhow::Result<()> {
    let url = stack.database_url(Service::Notifier);
    let table = qualified(url, "notifier", "deliveries");
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = query(url, &format!("SELECT id, state FROM {table}")).await?;
        let pending = rows
            .iter()
            .filter(|r| r.1 == "queued" || r.1 == "sending")
            .count();
        if pending == 0 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut received: HashMap<String, usize> = HashMap::new();
    for mail in stack.mail().all() {
        let id = mail
            .message_id
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        *received.entry(id).or_default() += 1;
    }
    found.mails_queued = rows.len();
    found.mails_received = received.values().sum();
    found.duplicate_mails = received.values().filter(|n| **n > 1).count();
    for (id, state) in &rows {
        if !received.contains_key(id) {
            found.violations.push(format!(
                "queued mail {id} (state {state}) never reached the SMTP server"
            ));
        }
    }
    Ok(())
}

/// Every key decrypts (GetCurrentKey) and is the one its user holds; 16 accounts at a
/// time, asking for the text form only.
async fn keys(
    clients: &Clients,
    expected: &[(String, Vec<u8>)],
    found: &mut Found,
) -> anyhow::Result<()> {
    for batch in expected.chunks(16) {
        let mut handles = Vec::new();
        for (account, secret) in batch.iter().cloned() {
            let mut keystore = clients.keystore.clone();
            let request = bearer(
                &clients.tokens.portal,
                pb::GetCurrentKeyRequest {
                    account_id: account.clone(),
                    forms: vec![pb::KeyForm::Text as i32],
                },
            );
            handles.push(tokio::spawn(async move {
                let key = keystore.get_current_key(request).await;
                let held = match key.map(|k| k.into_inner().key.map(|k| k.secret_base32)) {
                    Ok(Some(b32)) => {
                        data_encoding::BASE32_NOPAD.decode(b32.as_bytes()).ok() == Some(secret)
                    }
                    _ => false,
                };
                (account, held)
            }));
        }
        for handle in handles {
            let (account, held) = handle.await?;
            if held {
                found.keys_checked += 1;
            } else {
                found.violations.push(format!(
                    "the key of {account} does not decrypt to the one its user holds"
                ));
            }
        }
    }
    Ok(())
}

/// Behind the API: the last accepted step of every account covers every ACCEPTED a client
/// saw (no acknowledged write lost in a failover), and every completed saga rotated once.
async fn keystore_rows(
    stack: &Stack,
    clients: &Clients,
    sagas: &[Saga],
    found: &mut Found,
) -> anyhow::Result<()> {
    let url = stack.database_url(Service::Keystore);
    let accounts = qualified(url, "keystore", "accounts");
    let audit = qualified(url, "keystore", "audit_events");
    let last: HashMap<String, i64> = query_i64(
        url,
        &format!("SELECT account_id, last_step FROM {accounts}"),
    )
    .await?
    .into_iter()
    .collect();
    let mut seen: HashMap<String, u64> = HashMap::new();
    for (account, step) in clients.journal.accepted_codes() {
        let max = seen.entry(account).or_default();
        *max = (*max).max(step);
    }
    for (account, step) in seen {
        let stored = last.get(&account).copied().unwrap_or(0);
        if u64::try_from(stored).unwrap_or(0) < step {
            found.violations.push(format!(
                "{account}: a client saw step {step} ACCEPTED, the database says {stored}: an acknowledged write was lost"
            ));
        }
    }
    let rotations: HashMap<String, i64> = query_i64(
        url,
        &format!(
            "SELECT account_id, COUNT(*) FROM {audit} WHERE action = 'rotate' GROUP BY account_id"
        ),
    )
    .await?
    .into_iter()
    .collect();
    for saga in sagas {
        let n = rotations.get(&saga.account.id).copied().unwrap_or(0);
        let want = i64::from(matches!(saga.outcome, Outcome::Completed { .. }));
        if n != want && !matches!(saga.outcome, Outcome::NotStarted) {
            found.violations.push(format!(
                "saga of {}: {n} rotations in the audit trail, want {want}",
                saga.account.id
            ));
        }
    }
    Ok(())
}

/// No saga is left mid-rotation in the reset service's database (its sweeper finishes what
/// a killed replica left), and each started saga mailed its code exactly once.
async fn sagas_not_stuck(
    stack: &Stack,
    clients: &Clients,
    sagas: &[Saga],
    found: &mut Found,
) -> anyhow::Result<()> {
    let url = stack.database_url(Service::Reset);
    let resets = qualified(url, "reset", "resets");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = query_i64(
            url,
            &format!("SELECT state, COUNT(*) FROM {resets} GROUP BY state"),
        )
        .await?;
        let confirming = states
            .iter()
            .find(|(state, _)| state == "confirming")
            .map_or(0, |(_, n)| *n);
        if confirming == 0 {
            break;
        }
        if Instant::now() > deadline {
            found
                .violations
                .push(format!("{confirming} sagas stuck in CONFIRMING after 60 s"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for saga in sagas.iter().filter(|s| s.reset_id.is_some()) {
        let codes: HashSet<String> = clients
            .mail
            .to(&saga.account.email)
            .into_iter()
            .filter(|m| m.reset_code().is_some())
            .map(|m| m.message_id)
            .collect();
        if codes.len() != 1 {
            found.violations.push(format!(
                "saga of {}: {} distinct code mails, want 1",
                saga.account.id,
                codes.len()
            ));
        }
    }
    Ok(())
}

/// `schema.table` on PostgreSQL (every service has its schema), `table` on SQLite.
fn qualified(url: &str, schema: &str, table: &str) -> String {
    if url.starts_with("sqlite:") {
        table.to_owned()
    } else {
        format!("{schema}.{table}")
    }
}

async fn connect(url: &str) -> anyhow::Result<sqlx::AnyConnection> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(url)
        .await
        .with_context(|| "connecting to a service database for the checks".to_owned())
}

async fn query(url: &str, sql: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut conn = connect(url).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?)))
        .collect()
}

async fn query_i64(url: &str, sql: &str) -> anyhow::Result<Vec<(String, i64)>> {
    let mut conn = connect(url).await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect()
}
