//! The delivery worker: a task inside the service that claims due messages with a lease,
//! sends them through the pooled transport a few at a time, and records the outcome. New
//! messages wake it at once; otherwise it polls, which also picks up retries and messages
//! left behind by a replica that died holding a lease. Once an hour it also deletes sent and
//! failed rows older than the retention period.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument as _, instrument};

use crate::config::DeliverySettings;
use crate::domain::{self, AttemptOutcome, NextStep, Payload};
use crate::mail::{Envelope, MailComposer};
use crate::seal::PayloadSeal;
use crate::store::{ClaimedDelivery, Db, DeliveryRecord, Finish};
use crate::transport::Mailer;
use kagi_runtime::Clock;

/// How often finished rows past their retention are looked for: hourly (1 h in ms).
pub const PURGE_EVERY_MS: i64 = 3_600_000;

/// Why a stored payload could not be used.
enum OpenError {
    /// It does not open with this replica's key (or was altered).
    Seal(anyhow::Error),
    /// It opened but is not a payload this version understands (the parser's message is
    /// not kept: it may quote the code).
    Unreadable,
}

/// Everything one delivery needs, shared by the worker's tasks.
#[derive(Debug)]
pub struct Worker {
    pub store: Db,
    pub mailer: Mailer,
    pub composer: MailComposer,
    pub clock: Arc<dyn Clock>,
    pub settings: DeliverySettings,
    /// Notified by the gRPC handlers when a message is queued.
    pub wake: Arc<Notify>,
    /// Opens the sealed payloads.
    pub seal: Arc<PayloadSeal>,
    /// This replica's name in lease owners, for operators reading the table.
    pub replica: String,
}

impl Worker {
    /// Runs until `stop` turns true, then waits (up to the lease time) for sends in flight.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let concurrency = self.settings.concurrency.max(1);
        let permits = Arc::new(Semaphore::new(concurrency));
        tracing::info!(replica = %self.replica, concurrency, "delivery worker started");
        let mut next_purge_ms = i64::MIN;
        while !*stop.borrow() {
            self.purge_if_due(&mut next_purge_ms).await;
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => drop(permit),
                    _ = stop.changed() => {}
                }
                continue;
            }
            let claimed = match self.claim(free).await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim due messages");
                    Vec::new()
                }
            };
            let full = claimed.len() == free;
            for delivery in claimed {
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    break;
                };
                let worker = Arc::clone(&self);
                tokio::spawn(async move {
                    worker.deliver(delivery).await;
                    drop(permit);
                });
            }
            if full {
                // More may be due; claim again as soon as a sender is free.
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll_interval()) => {}
                () = self.wake.notified() => {}
                _ = stop.changed() => {}
            }
        }
        let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
        if tokio::time::timeout(self.settings.lease(), permits.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                "sends still in flight at shutdown; their leases will lapse and another replica retries"
            );
        }
        tracing::info!("delivery worker stopped");
    }

    /// Deletes rows past their retention once per [`PURGE_EVERY_MS`] (on the injected clock).
    async fn purge_if_due(&self, next_purge_ms: &mut i64) {
        let Some(retention) = self.settings.retention() else {
            return;
        };
        let now = self.clock.utc().timestamp_millis();
        if now < *next_purge_ms {
            return;
        }
        *next_purge_ms = now.saturating_add(PURGE_EVERY_MS);
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .purge_finished(now.saturating_sub(retention_ms))
            .await
        {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "finished deliveries past retention deleted"),
            Err(e) => tracing::error!(error = %e, "cannot purge finished deliveries"),
        }
    }

    async fn claim(&self, limit: usize) -> Result<Vec<ClaimedDelivery>, sqlx::Error> {
        let now = self.clock.utc().timestamp_millis();
        let lease_ms = i64::try_from(self.settings.lease().as_millis()).unwrap_or(i64::MAX);
        let owner = format!("{}/{}", self.replica, uuid::Uuid::new_v4());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.store
            .claim_due(&owner, now, now.saturating_add(lease_ms), limit)
            .await
    }

    /// Makes one attempt at one claimed message and records how it ended.
    #[instrument(skip_all, fields(delivery_id = %delivery.record.id, kind = delivery.record.kind.as_str(),
        account_id = %delivery.record.account_id, attempt = delivery.record.attempts + 1))]
    async fn deliver(&self, delivery: ClaimedDelivery) {
        let finish = self.attempt(&delivery).in_current_span().await;
        let record = &delivery.record;
        let now = self.clock.utc().timestamp_millis();
        let recorded = self
            .store
            .finish(&record.id, &delivery.lease_owner, now, &finish)
            .await;
        if matches!(recorded, Ok(true)) {
            crate::metrics::delivered(&finish);
        }
        match recorded {
            Ok(true) => match &finish {
                Finish::Sent { reply } => tracing::info!(%reply, "mail sent"),
                Finish::Retry {
                    reply,
                    next_attempt_at,
                } => {
                    tracing::warn!(%reply, retry_in_ms = next_attempt_at - now, "mail deferred")
                }
                Finish::Failed { reply, .. } => tracing::warn!(%reply, "mail failed"),
            },
            Ok(false) => tracing::warn!("lease lost before the outcome was recorded"),
            Err(e) => {
                tracing::error!(error = %e, "cannot record the outcome; the lease will lapse and it is retried")
            }
        }
    }

    /// The payload stored for `delivery_id`: sealed, or in clear when a version before
    /// sealing queued it.
    fn open_payload(&self, delivery_id: &str, stored: &str) -> Result<Payload, OpenError> {
        if stored.starts_with('{') {
            return serde_json::from_str(stored).map_err(|_| OpenError::Unreadable);
        }
        let json = self
            .seal
            .open(delivery_id, stored)
            .map_err(OpenError::Seal)?;
        serde_json::from_slice(&json).map_err(|_| OpenError::Unreadable)
    }

    async fn attempt(&self, delivery: &ClaimedDelivery) -> Finish {
        let record = &delivery.record;
        let not_after = DateTime::<Utc>::from_timestamp_millis(record.not_after)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if self.clock.utc() >= not_after {
            return Finish::Failed {
                reply: domain::EXPIRED_UNSENT.into(),
                attempted: false,
            };
        }
        let opened = delivery
            .payload
            .as_deref()
            .map(|stored| self.open_payload(&record.id, stored));
        let payload = match opened {
            Some(Ok(payload)) => payload,
            // Sealed under another key: a replica configured with the right one can still
            // send it, so it is retried (until it expires) rather than failed.
            Some(Err(OpenError::Seal(e))) => {
                tracing::error!(error = %format!("{e:#}"), "payload does not open with this replica's key");
                let reply = "the payload does not open with this replica's sealing key; \
                             every replica needs the same sealing.key_file";
                return self.decide(record, not_after, AttemptOutcome::Transient(reply.into()));
            }
            Some(Err(OpenError::Unreadable)) | None => {
                return Finish::Failed {
                    reply: "stored payload missing or unreadable".into(),
                    attempted: false,
                };
            }
        };
        let envelope = Envelope {
            delivery_id: &record.id,
            kind: record.kind,
            recipient: &record.recipient,
            account_id: &record.account_id,
            locale: record.locale,
        };
        let date = self.clock.now();
        let message = match self.composer.compose(&envelope, &payload, date) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot build the mail");
                return Finish::Failed {
                    reply: "the mail could not be built".into(),
                    attempted: false,
                };
            }
        };
        let outcome = self.mailer.send(message).await;
        self.decide(record, not_after, outcome)
    }

    /// Turns how an attempt ended into the row's next state.
    fn decide(
        &self,
        record: &DeliveryRecord,
        not_after: DateTime<Utc>,
        outcome: AttemptOutcome,
    ) -> Finish {
        let attempt = u32::try_from(record.attempts + 1).unwrap_or(u32::MAX);
        let jitter: f64 = rand::random();
        match domain::next_step(
            outcome,
            attempt,
            self.clock.utc(),
            not_after,
            self.settings.backoff(),
            jitter,
        ) {
            NextStep::MarkSent { reply } => Finish::Sent { reply },
            NextStep::MarkFailed { reply } => Finish::Failed {
                reply,
                attempted: true,
            },
            NextStep::RetryAt { at, reply } => Finish::Retry {
                reply,
                next_attempt_at: at.timestamp_millis(),
            },
        }
    }
}
