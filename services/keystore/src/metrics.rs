//! The keystore's domain metrics: what a login wave or a brute-force attempt looks like
//! from outside. Process-wide counters (one keystore per process in production), registered
//! into each server's registry; no label carries an account or a code.

use std::sync::LazyLock;

use kagi_runtime::Metrics;
use kagi_runtime::metrics::prometheus_client::metrics::counter::Counter;
use kagi_runtime::metrics::prometheus_client::metrics::family::Family;

type Labels = [(&'static str, &'static str); 1];

#[derive(Debug, Default)]
struct KeystoreMetrics {
    verify: Family<Labels, Counter>,
    lockouts: Counter,
    drift: Family<Labels, Counter>,
    rotations: Family<Labels, Counter>,
    rekeyed: Counter,
    checks: Family<Labels, Counter>,
    admin: Family<Labels, Counter>,
    audit_purged: Counter,
}

static METRICS: LazyLock<KeystoreMetrics> = LazyLock::new(KeystoreMetrics::default);

/// Adds the keystore's series to a server's registry.
pub fn register(metrics: &mut Metrics) {
    let m = &*METRICS;
    let r = metrics.registry();
    r.register(
        "keystore_verify_results",
        "VerifyCode answers by result (ACCEPTED, REJECTED, REPLAYED, LOCKED_OUT, NO_KEY)",
        m.verify.clone(),
    );
    r.register(
        "keystore_lockouts_begun",
        "Verification lockouts begun after repeated wrong codes",
        m.lockouts.clone(),
    );
    r.register(
        "keystore_verify_drift_steps",
        "Accepted or replayed codes by how many time steps the device clock was off",
        m.drift.clone(),
    );
    r.register(
        "keystore_rotations",
        "RotateKey answers: a new key (rotated) or the same one shown again (replayed)",
        m.rotations.clone(),
    );
    r.register(
        "keystore_rekeyed_keys",
        "Keys re-sealed under the active key-encryption key by rekey",
        m.rekeyed.clone(),
    );
    r.register(
        "keystore_authenticator_checks",
        "CheckAuthenticator answers by outcome (READY, CLOCK_SKEWED, NO_MATCH, NO_KEY, RATE_LIMITED)",
        m.checks.clone(),
    );
    r.register(
        "keystore_admin_actions",
        "Help-desk calls by action (get_account, unlock, revoke_key)",
        m.admin.clone(),
    );
    r.register(
        "keystore_audit_events_purged",
        "Audit events deleted after the retention period (audit.retention_days)",
        m.audit_purged.clone(),
    );
}

/// One VerifyCode answer; `drift` for a code that matched.
pub(crate) fn verified(result: &'static str, drift: Option<i32>) {
    METRICS.verify.get_or_create(&[("result", result)]).inc();
    if let Some(drift) = drift {
        METRICS
            .drift
            .get_or_create(&[("steps", drift_label(drift))])
            .inc();
    }
}

/// Skew is at most 10 steps (settings refuse more), so the labels are bounded.
fn drift_label(drift: i32) -> &'static str {
    const LABELS: [&str; 21] = [
        "-10", "-9", "-8", "-7", "-6", "-5", "-4", "-3", "-2", "-1", "0", "1", "2", "3", "4", "5",
        "6", "7", "8", "9", "10",
    ];
    usize::try_from(drift + 10)
        .ok()
        .and_then(|i| LABELS.get(i))
        .copied()
        .unwrap_or("other")
}

pub(crate) fn lockout_begun() {
    METRICS.lockouts.inc();
}

pub(crate) fn rotated(replayed: bool) {
    let kind = if replayed { "replayed" } else { "rotated" };
    METRICS.rotations.get_or_create(&[("kind", kind)]).inc();
}

pub(crate) fn rekeyed_one() {
    METRICS.rekeyed.inc();
}

/// One CheckAuthenticator answer (or its refusal by the allowance, `RATE_LIMITED`).
pub(crate) fn checked(outcome: &'static str) {
    METRICS.checks.get_or_create(&[("outcome", outcome)]).inc();
}

/// One help-desk call that succeeded.
pub(crate) fn admin_action(action: &'static str) {
    METRICS.admin.get_or_create(&[("action", action)]).inc();
}

/// Audit events deleted by one retention pass.
pub(crate) fn audit_purged(events: u64) {
    METRICS.audit_purged.inc_by(events);
}
