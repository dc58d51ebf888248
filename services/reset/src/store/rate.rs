//! Sliding-window rate limits over `rate_events`, atomic across replicas: on PostgreSQL
//! every attempt on one subject first takes a transaction-scoped advisory lock keyed by
//! the subject, so concurrent transactions (from any number of service instances) count
//! one after another; on SQLite the INSERT that opens the transaction takes the database's
//! single write lock, which serialises them the same way.

use super::{Backend, Db, WriteTx};

/// What one attempt against a limit came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOutcome {
    /// Within the limit, and recorded.
    Admitted,
    /// Over the limit: not recorded (so hammering a closed door does not keep it closed
    /// longer), and the door opens again at `retry_at` (Unix ms).
    Refused { retry_at: i64 },
}

impl Db {
    /// Admits one attempt by `subject` in `scope` when fewer than `max` were admitted in the
    /// window, recording it under `attempt` (a refused one is not recorded: a lock ends when
    /// it said it would, however often the door is tried). Of any number of simultaneous
    /// attempts, on any number of replicas, at most `max` pass.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rate_hit(
        &self,
        scope: &str,
        subject: &str,
        attempt: &str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> Result<RateOutcome, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // READ COMMITTED alone lets every concurrent COUNT-then-INSERT miss the others'
            // rows; the lock makes each count see every attempt committed before it.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("kagi-reset rate {scope} {subject}"))
                .execute(&mut *tx)
                .await?;
        } else {
            // Take SQLite's write lock before counting, so two counts cannot interleave.
            sqlx::query("DELETE FROM rate_events WHERE scope = $1 AND subject = $2 AND at <= $3")
                .bind(scope)
                .bind(subject)
                .bind(now - window_ms)
                .execute(&mut *tx)
                .await?;
        }
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3",
        )
        .bind(scope)
        .bind(subject)
        .bind(now - window_ms)
        .fetch_one(&mut *tx)
        .await?;
        if count >= i64::from(max) {
            // The window holds fewer than `max` once its (count - max + 1) oldest have aged out.
            let (oldest,): (i64,) = sqlx::query_as(
                "SELECT at FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3 \
                 ORDER BY at LIMIT 1 OFFSET $4",
            )
            .bind(scope)
            .bind(subject)
            .bind(now - window_ms)
            .bind(count - i64::from(max))
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(RateOutcome::Refused {
                retry_at: oldest + window_ms,
            });
        }
        sqlx::query(
            "INSERT INTO rate_events (scope, subject, at, attempt) VALUES ($1, $2, $3, $4)",
        )
        .bind(scope)
        .bind(subject)
        .bind(now)
        .bind(attempt)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RateOutcome::Admitted)
    }

    /// Takes back every row of `attempt`: it turned out not to be one the limits count.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rate_refund(&self, attempt: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM rate_events WHERE attempt = $1")
            .bind(attempt)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets attempts older than `before`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn prune_rate_events(&self, before: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM rate_events WHERE at < $1")
            .bind(before)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
