//! The per-account allowance of "check my authenticator": one row per account, a window
//! anchored at its first check and the checks used in it, moved by one statement.

use super::Db;

/// Whether a check may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckAdmission {
    /// Counted; `used` checks of the window so far, this one included.
    Admitted { used: u32 },
    /// The window's checks are used up until `retry_at` (Unix ms); nothing was counted.
    Refused { retry_at: i64 },
}

impl Db {
    /// Counts one check of `account_id` at `now` when fewer than `max` were made in the
    /// window (of `window_ms`, anchored at the first check once the last window is over).
    /// One upsert whose `WHERE` refuses a full window, so replicas racing on an account
    /// cannot together exceed `max` (PostgreSQL re-checks the `WHERE` on the row it locked;
    /// SQLite writes one at a time).
    ///
    /// # Errors
    /// Database failures.
    pub async fn admit_check(
        &self,
        account_id: &str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> Result<CheckAdmission, sqlx::Error> {
        let expired_before = now.saturating_sub(window_ms);
        let used: Option<(i64,)> = sqlx::query_as(
            "INSERT INTO authenticator_checks (account_id, window_start, used) VALUES ($1, $2, 1) \
             ON CONFLICT (account_id) DO UPDATE SET \
               window_start = CASE WHEN authenticator_checks.window_start <= $3 THEN $2 \
                 ELSE authenticator_checks.window_start END, \
               used = CASE WHEN authenticator_checks.window_start <= $3 THEN 1 \
                 ELSE authenticator_checks.used + 1 END \
             WHERE authenticator_checks.window_start <= $3 OR authenticator_checks.used < $4 \
             RETURNING used",
        )
        .bind(account_id)
        .bind(now)
        .bind(expired_before)
        .bind(i64::from(max))
        .fetch_optional(self.database.pool())
        .await?;
        if let Some((used,)) = used {
            return Ok(CheckAdmission::Admitted {
                used: u32::try_from(used).unwrap_or(u32::MAX),
            });
        }
        let (window_start,): (i64,) =
            sqlx::query_as("SELECT window_start FROM authenticator_checks WHERE account_id = $1")
                .bind(account_id)
                .fetch_one(self.database.pool())
                .await?;
        Ok(CheckAdmission::Refused {
            retry_at: window_start.saturating_add(window_ms),
        })
    }
}
