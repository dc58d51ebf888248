//! The short chaos run README's test command includes: every fault type at least once
//! (a SIGKILLed replica of each service, a primary failover, a PostgreSQL restart, the SMTP
//! server down then greylisting) under load, and every invariant holds. Seed 13 is the
//! schedule that found the UNKNOWN-instead-of-UNAVAILABLE bug of a reset replica killed
//! under ConfirmReset (fixed in `kagi_runtime::metrics::transport_status`).

use std::time::Duration;

use kagi_stack::Storage;
use kagi_stack::chaos::journal::FaultKind;
use kagi_stack::chaos::{Config, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_run_with_every_fault_type_breaks_no_invariant() {
    let _alone = crate::ALONE.write().await;
    let config = Config {
        binary: crate::binary(),
        seconds: 40,
        seed: 13,
        replicas: 2,
        storage: Storage::PostgresReplicated,
        accounts: 150,
        saga_workers: 2,
        smtp_down: Duration::from_secs(15),
        smtp_4xx: Duration::from_secs(8),
    };
    let outcome = run(&config).await.unwrap();
    let report = outcome.report.markdown();
    assert!(
        outcome.report.violations.is_empty(),
        "invariants broken (logs kept in {:?}):\n{report}",
        outcome.kept
    );
    for kind in [
        FaultKind::KillKeystore,
        FaultKind::KillNotifier,
        FaultKind::KillReset,
        FaultKind::KillPortal,
        FaultKind::PrimaryFailover,
        FaultKind::PostgresRestart,
        FaultKind::SmtpOutage,
    ] {
        let injected = outcome.report.rows.get(&kind).map_or(0, |r| r.injected);
        assert!(injected >= 1, "{kind:?} never injected:\n{report}");
    }
    // The load really ran: logins accepted, sagas completed, mail delivered.
    assert!(outcome.report.sagas_completed > 0, "{report}");
    assert!(outcome.report.found.mails_received > 0, "{report}");
    assert!(
        outcome.report.found.keys_checked > config.accounts,
        "{report}"
    );
}
