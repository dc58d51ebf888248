//! What the load saw, as the clients saw it: every failed attempt with its status code and
//! time, every call that failed after its retries, every ACCEPTED code, and the fault
//! windows the injector opened and closed. The invariants and the report read only this
//! and the databases.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of fault the schedule injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    KillKeystore,
    KillNotifier,
    KillReset,
    KillPortal,
    PrimaryFailover,
    PostgresRestart,
    SmtpOutage,
}

impl FaultKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::KillKeystore => "SIGKILL keystore replica",
            Self::KillNotifier => "SIGKILL notifier replica",
            Self::KillReset => "SIGKILL reset replica",
            Self::KillPortal => "SIGKILL portal replica",
            Self::PrimaryFailover => "PostgreSQL primary failover",
            Self::PostgresRestart => "PostgreSQL primary restart",
            Self::SmtpOutage => "SMTP down, then 4xx",
        }
    }
}

/// One injected fault: from the first blow to the end of its repair.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub start: Instant,
    pub end: Option<Instant>,
}

/// A failed attempt of a call (it may have succeeded on a retry).
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Instant,
    /// `keystore.VerifyCode`, `reset.ConfirmReset`, `portal GET /login` …
    pub call: &'static str,
    pub code: tonic::Code,
    pub message: String,
    /// The call's last attempt: the call failed as a whole.
    pub last: bool,
}

/// The shared record of a run.
#[derive(Debug, Default)]
struct Inner {
    failures: Vec<Failure>,
    calls: BTreeMap<&'static str, u64>,
    faults: Vec<Fault>,
    /// `(account, time step)` of every ACCEPTED reply, in order.
    accepted: Vec<(String, u64)>,
    violations: Vec<String>,
    notes: BTreeMap<&'static str, u64>,
    mail_waits: Vec<Duration>,
}

/// Cheap to clone; every load task and the injector write to it.
#[derive(Debug, Clone, Default)]
pub struct Journal(Arc<Mutex<Inner>>);

impl Journal {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut inner)
    }

    pub fn call(&self, call: &'static str) {
        self.with(|i| *i.calls.entry(call).or_default() += 1);
    }

    pub fn failure(&self, call: &'static str, status: &tonic::Status, last: bool) {
        let failure = Failure {
            at: Instant::now(),
            call,
            code: status.code(),
            message: status.message().chars().take(200).collect(),
            last,
        };
        self.with(|i| i.failures.push(failure));
    }

    pub fn accepted(&self, account: &str, step: u64) {
        self.with(|i| i.accepted.push((account.to_owned(), step)));
    }

    /// An invariant broken while the run was going (checked again at the end).
    pub fn violation(&self, what: String) {
        self.with(|i| i.violations.push(what));
    }

    /// Counts something worth reporting that is not a failure (`replayed after a retry`).
    pub fn note(&self, what: &'static str) {
        self.with(|i| *i.notes.entry(what).or_default() += 1);
    }

    pub fn mail_wait(&self, waited: Duration) {
        self.with(|i| i.mail_waits.push(waited));
    }

    /// Opens a fault window; returns its index for [`Self::fault_end`].
    pub fn fault_start(&self, kind: FaultKind) -> usize {
        self.with(|i| {
            i.faults.push(Fault {
                kind,
                start: Instant::now(),
                end: None,
            });
            i.faults.len() - 1
        })
    }

    pub fn fault_end(&self, index: usize) {
        self.with(|i| {
            if let Some(f) = i.faults.get_mut(index) {
                f.end = Some(Instant::now());
            }
        });
    }

    pub fn failures(&self) -> Vec<Failure> {
        self.with(|i| i.failures.clone())
    }

    pub fn faults(&self) -> Vec<Fault> {
        self.with(|i| i.faults.clone())
    }

    pub fn accepted_codes(&self) -> Vec<(String, u64)> {
        self.with(|i| i.accepted.clone())
    }

    pub fn violations(&self) -> Vec<String> {
        self.with(|i| i.violations.clone())
    }

    pub fn calls(&self) -> BTreeMap<&'static str, u64> {
        self.with(|i| i.calls.clone())
    }

    pub fn notes(&self) -> BTreeMap<&'static str, u64> {
        self.with(|i| i.notes.clone())
    }

    pub fn mail_waits(&self) -> Vec<Duration> {
        self.with(|i| i.mail_waits.clone())
    }
}
