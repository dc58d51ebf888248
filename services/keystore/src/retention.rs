//! The audit trail's retention: events older than `[audit] retention_days` are deleted
//! hourly, the age measured on the service's clock (the injected one in tests), in batches
//! (see [`Db::purge_audit_before`]). The same pattern as the reset service's and the
//! notifier's 30-day purges, with a longer default (see [`crate::config::AuditSettings`]).

use std::sync::Arc;
use std::time::Duration;

use kagi_runtime::Clock;

use crate::store::Db;

/// How often the purge runs (and once at start-up).
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);

/// Rows per DELETE: a few milliseconds of SQLite's write lock, so logins queued behind a
/// batch barely notice it.
pub const PURGE_BATCH: i64 = 1_000;

/// Deletes the audit events past their retention.
#[derive(Debug, Clone)]
pub struct AuditRetention {
    db: Db,
    clock: Arc<dyn Clock>,
    /// `None`: kept forever.
    retention: Option<Duration>,
}

impl AuditRetention {
    pub fn new(db: Db, clock: Arc<dyn Clock>, retention: Option<Duration>) -> Self {
        Self {
            db,
            clock,
            retention,
        }
    }

    /// Whether there is anything to run: `false` when events are kept forever.
    pub fn is_on(&self) -> bool {
        self.retention.is_some()
    }

    /// One pass: deletes every event recorded more than the retention period before now.
    /// Returns how many; 0 when events are kept forever.
    ///
    /// # Errors
    /// Database failures (the batches already deleted stay deleted; the next pass goes on).
    pub async fn purge(&self) -> Result<u64, sqlx::Error> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let before = self.clock.now_ms().saturating_sub(retention_ms);
        let purged = self.db.purge_audit_before(before, PURGE_BATCH).await?;
        crate::metrics::audit_purged(purged);
        if purged > 0 {
            tracing::info!(purged, "audit events past their retention deleted");
        }
        Ok(purged)
    }
}
