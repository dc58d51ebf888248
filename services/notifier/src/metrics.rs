//! The notifier's domain metrics: the queue an on-call engineer watches (depth and the age
//! of its oldest message, sampled from the database at each scrape) and how deliveries end,
//! by SMTP reply class. Process-wide counters, registered into each server's registry; no
//! label carries an address, account or code.

use std::sync::{Arc, LazyLock};

use kagi_runtime::metrics::prometheus_client::metrics::counter::Counter;
use kagi_runtime::metrics::prometheus_client::metrics::family::Family;
use kagi_runtime::metrics::prometheus_client::metrics::gauge::Gauge;
use kagi_runtime::{Clock, Metrics};

use crate::store::{Db, Finish};

type Labels = [(&'static str, &'static str); 2];

#[derive(Debug, Default)]
struct NotifierMetrics {
    deliveries: Family<Labels, Counter>,
    retries: Counter,
    admin: Family<[(&'static str, &'static str); 1], Counter>,
}

static METRICS: LazyLock<NotifierMetrics> = LazyLock::new(NotifierMetrics::default);

/// Adds the notifier's series to a server's registry, with the queue sampled from `db`.
pub fn register(metrics: &mut Metrics, db: &Db, clock: Arc<dyn Clock>) {
    let m = &*METRICS;
    let (depth, oldest) = (Gauge::<i64>::default(), Gauge::<i64>::default());
    let r = metrics.registry();
    r.register(
        "notifier_deliveries",
        "Delivery attempts recorded, by outcome (sent, deferred, failed) and SMTP reply class",
        m.deliveries.clone(),
    );
    r.register(
        "notifier_delivery_retries",
        "Deliveries deferred for another attempt",
        m.retries.clone(),
    );
    r.register(
        "notifier_admin_actions",
        "Help-desk calls by action (list_recent_mails, send_operator_action_notice)",
        m.admin.clone(),
    );
    r.register(
        "notifier_queue_depth",
        "Messages queued and not yet sent, failed or expired",
        depth.clone(),
    );
    r.register(
        "notifier_queue_oldest_age_seconds",
        "Age of the oldest queued message (0: queue empty)",
        oldest.clone(),
    );
    let db = db.clone();
    metrics.on_scrape(move || {
        let (db, clock, depth, oldest) = (db.clone(), clock.clone(), depth.clone(), oldest.clone());
        async move {
            match db.queue_summary().await {
                Ok((count, since)) => {
                    depth.set(count);
                    let now = clock.utc().timestamp_millis();
                    oldest.set(since.map_or(0, |since| (now - since).max(0)) / 1000);
                }
                Err(e) => tracing::warn!(error = %e, "sampling the mail queue failed"),
            }
        }
    });
}

/// One recorded outcome.
pub(crate) fn delivered(finish: &Finish) {
    let (outcome, reply) = match finish {
        Finish::Sent { reply } => ("sent", reply),
        Finish::Retry { reply, .. } => {
            METRICS.retries.inc();
            ("deferred", reply)
        }
        Finish::Failed { reply, .. } => ("failed", reply),
    };
    METRICS
        .deliveries
        .get_or_create(&[("outcome", outcome), ("smtp_class", reply_class(reply))])
        .inc();
}

/// `2xx`, `4xx` or `5xx` from the first SMTP reply code in a reply or error text (`250 Ok`,
/// `transient error (451): …`); `none` when no server answered (a refused connection, a
/// timeout, a message that expired unsent).
fn reply_class(reply: &str) -> &'static str {
    let bytes = reply.as_bytes();
    let code = (0..bytes.len().saturating_sub(2)).find_map(|i| {
        let run = &bytes[i..i + 3];
        let before = i.checked_sub(1).map(|j| bytes[j]);
        let after = bytes.get(i + 3).copied();
        let isolated = !before.is_some_and(|b| b.is_ascii_alphanumeric())
            && !after.is_some_and(|b| b.is_ascii_alphanumeric());
        (isolated && run.iter().all(u8::is_ascii_digit)).then_some(run[0])
    });
    match code {
        Some(b'2') => "2xx",
        Some(b'3') => "3xx",
        Some(b'4') => "4xx",
        Some(b'5') => "5xx",
        _ => "none",
    }
}

/// One help-desk call that succeeded.
pub(crate) fn admin_action(action: &'static str) {
    METRICS.admin.get_or_create(&[("action", action)]).inc();
}

#[cfg(test)]
mod tests {
    #[test]
    fn reply_classes_come_from_the_first_digit_only() {
        assert_eq!(super::reply_class("250 2.0.0 Ok: queued"), "2xx");
        assert_eq!(super::reply_class("451 4.3.0 try later"), "4xx");
        assert_eq!(super::reply_class("550 5.1.1 no such user"), "5xx");
        assert_eq!(super::reply_class("transient error (421): busy"), "4xx");
        assert_eq!(super::reply_class("connection refused"), "none");
        assert_eq!(
            super::reply_class("Connection refused (os error 111)"),
            "none"
        );
    }
}
