//! The reset service's domain metrics: how far resets get, the mail they send, the argon2
//! hashes holding memory, and reissues stuck half-way. Process-wide counters, registered
//! into each server's registry; no label carries an account, address or code.

use std::sync::LazyLock;

use kagi_runtime::metrics::prometheus_client::metrics::counter::Counter;
use kagi_runtime::metrics::prometheus_client::metrics::family::Family;
use kagi_runtime::metrics::prometheus_client::metrics::gauge::Gauge;
use kagi_runtime::{Clock, Metrics};
use std::sync::Arc;

use crate::store::Db;

type Labels = [(&'static str, &'static str); 1];

#[derive(Debug, Default)]
struct ResetMetrics {
    sagas: Family<Labels, Counter>,
    codes_mailed: Counter,
    hashes_in_flight: Gauge,
    admin: Family<Labels, Counter>,
}

static METRICS: LazyLock<ResetMetrics> = LazyLock::new(ResetMetrics::default);

/// A step a reset reached.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SagaEvent {
    Started,
    Verified,
    Completed,
    Expired,
    Locked,
}

/// Adds the reset service's series to a server's registry, with the reissues in
/// CONFIRMING sampled from `db` at each scrape.
pub fn register(metrics: &mut Metrics, db: &Db, clock: Arc<dyn Clock>) {
    let m = &*METRICS;
    let (confirming, oldest) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    let r = metrics.registry();
    r.register(
        "reset_sagas",
        "Resets reaching a step (started, verified, completed, expired, locked)",
        m.sagas.clone(),
    );
    r.register(
        "reset_codes_mailed",
        "Confirmation codes handed to the notifier",
        m.codes_mailed.clone(),
    );
    r.register(
        "reset_argon2_in_flight",
        "Password hashes being computed now (each holds its argon2 memory)",
        m.hashes_in_flight.clone(),
    );
    r.register(
        "reset_admin_actions",
        "Help-desk calls by action (get_account_reset, cancel_reset, notify_operator_action)",
        m.admin.clone(),
    );
    r.register(
        "reset_sagas_confirming",
        "Reissues in CONFIRMING: the keystore was asked, the reset not yet recorded",
        confirming.clone(),
    );
    r.register(
        "reset_saga_confirming_oldest_age_seconds",
        "How long the oldest reissue has been in CONFIRMING (0: none)",
        oldest.clone(),
    );
    let db = db.clone();
    metrics.on_scrape(move || {
        let (db, clock, confirming, oldest) = (
            db.clone(),
            clock.clone(),
            confirming.clone(),
            oldest.clone(),
        );
        async move {
            match db.confirming_summary().await {
                Ok((count, since)) => {
                    confirming.set(count);
                    let age_ms = since.map_or(0, |since| (clock.now_ms() - since).max(0));
                    oldest.set(age_ms / 1000);
                }
                Err(e) => tracing::warn!(error = %e, "sampling reissues in CONFIRMING failed"),
            }
        }
    });
}

pub(crate) fn saga(event: SagaEvent) {
    let step = match event {
        SagaEvent::Started => "started",
        SagaEvent::Verified => "verified",
        SagaEvent::Completed => "completed",
        SagaEvent::Expired => "expired",
        SagaEvent::Locked => "locked",
    };
    METRICS.sagas.get_or_create(&[("step", step)]).inc();
}

pub(crate) fn code_mailed() {
    METRICS.codes_mailed.inc();
}

/// Counts one hash while it runs; the gauge drops when the guard does.
pub(crate) fn hashing() -> impl Drop {
    struct InFlight;
    impl Drop for InFlight {
        fn drop(&mut self) {
            METRICS.hashes_in_flight.dec();
        }
    }
    METRICS.hashes_in_flight.inc();
    InFlight
}

/// One help-desk call that succeeded.
pub(crate) fn admin_action(action: &'static str) {
    METRICS.admin.get_or_create(&[("action", action)]).inc();
}
