//! Sliding-window rate limits over `rate_events`, atomic across replicas: on PostgreSQL
//! every attempt on one subject first takes a transaction-scoped advisory lock keyed by
//! the subject, so concurrent transactions (from any number of service instances) count
//! one after another; on SQLite the INSERT that opens the transaction takes the database's
//! single write lock, which serialises them the same way.

use super::{Backend, Db, WriteTx};

impl Db {
    /// Records one attempt by `subject` in `scope` and says whether it is within `max` per
    /// window (attempts refused still count, so hammering keeps the door shut). Of any
    /// number of simultaneous attempts, on any number of replicas, at most `max` pass.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rate_hit(
        &self,
        scope: &str,
        subject: &str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> Result<bool, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        if self.backend() == Backend::Postgres {
            // READ COMMITTED alone lets every concurrent INSERT-then-COUNT see only its own
            // row; the lock makes each count see every attempt committed before it.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1))")
                .bind(format!("kagi-reset rate {scope} {subject}"))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("INSERT INTO rate_events (scope, subject, at) VALUES ($1, $2, $3)")
            .bind(scope)
            .bind(subject)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        let (count,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM rate_events WHERE scope = $1 AND subject = $2 AND at > $3",
        )
        .bind(scope)
        .bind(subject)
        .bind(now - window_ms)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(count <= i64::from(max))
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
