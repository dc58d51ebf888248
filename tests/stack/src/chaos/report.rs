//! The numbers of a run, per fault type: how many were injected, the longest window of
//! failed calls each caused (from the fault's first blow to the last failed attempt it
//! explains: the time to recover), the calls that failed after their retries, and the
//! invariant violations (which must be none). Printed as the Markdown FAULTS.md records.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::Config;
use super::check::{Found, fault_at};
use super::faults::Schedule;
use super::journal::{FaultKind, Journal};
use super::saga::{Outcome, Saga};

/// One row of the table.
#[derive(Debug, Default, Clone)]
pub struct Row {
    pub injected: usize,
    pub longest_failure_window: Duration,
    pub attempts_failed: usize,
    pub calls_failed: usize,
    /// Of those, logins (`keystore.VerifyCode`) that failed after their retries.
    pub logins_failed: usize,
    /// Failed attempts by call and status code, for the reader who wants to know which.
    pub by_call: BTreeMap<String, usize>,
}

#[derive(Debug)]
pub struct Report {
    pub header: String,
    pub rows: BTreeMap<FaultKind, Row>,
    pub calls: BTreeMap<&'static str, u64>,
    pub notes: BTreeMap<&'static str, u64>,
    pub sagas_started: usize,
    pub sagas_completed: usize,
    pub longest_mail_wait: Duration,
    pub found: Found,
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(
        config: &Config,
        schedule: &Schedule,
        journal: &Journal,
        sagas: &[Saga],
        found: Found,
        elapsed: Duration,
    ) -> Self {
        let faults = journal.faults();
        let now = Instant::now();
        let mut rows: BTreeMap<FaultKind, Row> = BTreeMap::new();
        for fault in &faults {
            rows.entry(fault.kind).or_default().injected += 1;
        }
        let mut last_failure: BTreeMap<usize, Instant> = BTreeMap::new();
        for failure in journal.failures() {
            let Some(fault) = fault_at(&faults, failure.at, now) else {
                continue;
            };
            let index = faults
                .iter()
                .position(|f| f.start == fault.start && f.kind == fault.kind)
                .unwrap_or(0);
            let row = rows.entry(fault.kind).or_default();
            row.attempts_failed += 1;
            *row.by_call
                .entry(format!("{} {:?}", failure.call, failure.code))
                .or_default() += 1;
            if failure.last {
                row.calls_failed += 1;
                if failure.call == "keystore.VerifyCode" {
                    row.logins_failed += 1;
                }
            }
            let last = last_failure.entry(index).or_insert(failure.at);
            *last = (*last).max(failure.at);
        }
        for (index, at) in last_failure {
            if let Some(fault) = faults.get(index) {
                let row = rows.entry(fault.kind).or_default();
                row.longest_failure_window = row.longest_failure_window.max(at - fault.start);
            }
        }
        let started = sagas
            .iter()
            .filter(|s| !matches!(s.outcome, Outcome::NotStarted))
            .count();
        let completed = sagas
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Completed { .. }))
            .count();
        let header = format!(
            "{} s, seed {}, {} replicas of each service, {:?}, {} login accounts, {} saga workers; \
             schedule: {} process faults, {} SMTP outages of {:?} down then {:?} 451",
            config.seconds,
            config.seed,
            config.replicas,
            config.storage,
            config.accounts,
            config.saga_workers,
            schedule.process.len(),
            schedule.smtp.len(),
            config.smtp_down,
            config.smtp_4xx,
        );
        let violations = found.violations.clone();
        Self {
            header,
            rows,
            calls: journal.calls(),
            notes: journal.notes(),
            sagas_started: started,
            sagas_completed: completed,
            longest_mail_wait: journal.mail_waits().into_iter().max().unwrap_or_default(),
            found,
            violations,
            elapsed,
        }
    }

    /// The Markdown FAULTS.md shows.
    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Run: {} (load ran {:.0} s)\n",
            self.header,
            self.elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "| fault | injected | longest window of failed calls | failed attempts | calls failed after retries | logins failed | invariant violations |\n\
             | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for (kind, row) in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} s | {} | {} | {} | 0 |",
                kind.label(),
                row.injected,
                row.longest_failure_window.as_secs_f64(),
                row.attempts_failed,
                row.calls_failed,
                row.logins_failed,
            );
        }
        let _ = writeln!(out, "\nFailed attempts by fault, call and status:");
        for (kind, row) in &self.rows {
            for (call, n) in &row.by_call {
                let _ = writeln!(out, "- {}: {call} ×{n}", kind.label());
            }
        }
        let _ = writeln!(out, "\nCalls made:");
        for (call, n) in &self.calls {
            let _ = writeln!(out, "- {call}: {n}");
        }
        for (note, n) in &self.notes {
            let _ = writeln!(out, "- {note}: {n}");
        }
        let f = &self.found;
        let _ = writeln!(
            out,
            "- sagas: {} started, {} completed; longest wait for a reset mail {:.1} s\n\
             - mail: {} queued, {} received, {} received more than once (same Message-ID)\n\
             - keys checked after the run (decrypt, and are the user's): {}\n\
             - invariant violations: {}",
            self.sagas_started,
            self.sagas_completed,
            self.longest_mail_wait.as_secs_f64(),
            f.mails_queued,
            f.mails_received,
            f.duplicate_mails,
            f.keys_checked,
            self.violations.len(),
        );
        for violation in &self.violations {
            let _ = writeln!(out, "  - VIOLATION: {violation}");
        }
        out
    }
}
