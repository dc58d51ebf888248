//! The `resets` table: one row per saga, moved between states by conditional UPDATEs.
//! Each transition function returns whether it won; a loser re-reads and decides again.

use crate::domain::ResetState;

use super::{Db, WriteTx, is_unique_violation};

/// The one place a [`ResetState`] becomes the text of the `state` column: every query
/// binds its states through it.
pub(crate) fn state_column(state: ResetState) -> &'static str {
    match state {
        ResetState::CodeSent => "code_sent",
        ResetState::Verified => "verified",
        ResetState::Confirming => "confirming",
        ResetState::Completed => "completed",
        ResetState::Cancelled => "cancelled",
        ResetState::Expired => "expired",
        ResetState::Locked => "locked",
        ResetState::Superseded => "superseded",
    }
}

/// A `state` column this version does not know (a database written by a newer one).
#[derive(Debug, thiserror::Error)]
#[error("unknown reset state {0:?}")]
pub struct UnknownState(String);

impl TryFrom<String> for ResetState {
    type Error = UnknownState;

    fn try_from(column: String) -> Result<Self, UnknownState> {
        [
            Self::CodeSent,
            Self::Verified,
            Self::Confirming,
            Self::Completed,
            Self::Cancelled,
            Self::Expired,
            Self::Locked,
            Self::Superseded,
        ]
        .into_iter()
        .find(|s| state_column(*s) == column)
        .ok_or(UnknownState(column))
    }
}

/// One reset as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct ResetRow {
    pub token_hash: String,
    pub saga_id: String,
    pub account_id: String,
    pub recipient: String,
    pub locale: String,
    pub client_ip: String,
    pub user_agent: String,
    #[sqlx(try_from = "String")]
    pub state: ResetState,
    pub code_hash: Vec<u8>,
    /// The code the last resend replaced, to tell the user so when they type it.
    pub replaced_code_hash: Option<Vec<u8>>,
    pub code_expires_at: i64,
    pub last_sent_at: Option<i64>,
    pub sends: i64,
    pub wrong_attempts: i64,
    pub verified_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub new_key_id: Option<String>,
    pub notice_sent: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

impl std::fmt::Debug for ResetRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResetRow")
            .field("saga", &crate::domain::token::saga_tag(&self.saga_id))
            .field("account_id", &self.account_id)
            .field("state", &self.state)
            .field("sends", &self.sends)
            .field("wrong_attempts", &self.wrong_attempts)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// A reset about to be created.
#[derive(Debug)]
pub struct NewReset<'a> {
    pub token_hash: &'a str,
    pub saga_id: &'a str,
    pub account_id: &'a str,
    pub recipient: &'a str,
    pub locale: &'a str,
    pub client_ip: &'a str,
    pub user_agent: &'a str,
    pub code_hash: &'a [u8],
    pub code_expires_at: i64,
    pub now: i64,
}

/// How creating a reset ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// Created; older live resets of the account (if any) were superseded.
    Started,
    /// A reissue of this account is being completed and cannot be superseded.
    ConfirmingElsewhere,
    /// A concurrent StartReset won the race for the live slot: try again.
    Raced,
}

/// The columns of [`ResetRow`], as a macro so queries stay `&'static str` literals.
macro_rules! reset_columns {
    () => {
        "token_hash, saga_id, account_id, recipient, locale, client_ip, user_agent, state, code_hash, \
         code_expires_at, last_sent_at, sends, wrong_attempts, verified_at, completed_at, new_key_id, \
         notice_sent, created_at, updated_at, version, replaced_code_hash"
    };
}

impl Db {
    /// Supersedes the account's live resets and creates the new one, in one transaction.
    ///
    /// # Errors
    /// Database failures.
    pub async fn start_reset(&self, new: &NewReset<'_>) -> Result<StartOutcome, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        sqlx::query(
            "UPDATE resets SET state = $1, updated_at = $2, version = version + 1 \
             WHERE account_id = $3 AND state IN ($4, $5)",
        )
        .bind(state_column(ResetState::Superseded))
        .bind(new.now)
        .bind(new.account_id)
        .bind(state_column(ResetState::CodeSent))
        .bind(state_column(ResetState::Verified))
        .execute(&mut *tx)
        .await?;
        let (confirming,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM resets WHERE account_id = $1 AND state = $2")
                .bind(new.account_id)
                .bind(state_column(ResetState::Confirming))
                .fetch_one(&mut *tx)
                .await?;
        if confirming > 0 {
            return Ok(StartOutcome::ConfirmingElsewhere);
        }
        let inserted = sqlx::query(
            "INSERT INTO resets (token_hash, saga_id, account_id, recipient, locale, client_ip, user_agent, \
             state, code_hash, code_expires_at, last_sent_at, sends, wrong_attempts, notice_sent, created_at, \
             updated_at, version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $11, $8, $9, $10, 1, 0, 0, $10, $10, 0)",
        )
        .bind(new.token_hash)
        .bind(new.saga_id)
        .bind(new.account_id)
        .bind(new.recipient)
        .bind(new.locale)
        .bind(new.client_ip)
        .bind(new.user_agent)
        .bind(new.code_hash)
        .bind(new.code_expires_at)
        .bind(new.now)
        .bind(state_column(ResetState::CodeSent))
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(StartOutcome::Raced),
            other => other?,
        };
        tx.commit().await?;
        Ok(StartOutcome::Started)
    }

    /// # Errors
    /// Database failures.
    pub async fn find_reset(&self, token_hash: &str) -> Result<Option<ResetRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            reset_columns!(),
            " FROM resets WHERE token_hash = $1"
        ))
        .bind(token_hash)
        .fetch_optional(self.pool())
        .await
    }

    /// # Errors
    /// Database failures.
    pub async fn find_saga(&self, saga_id: &str) -> Result<Option<ResetRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            reset_columns!(),
            " FROM resets WHERE saga_id = $1"
        ))
        .bind(saga_id)
        .fetch_optional(self.pool())
        .await
    }

    /// Moves a reset from `from` to `to` if it is still at `version`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn move_state(
        &self,
        token_hash: &str,
        version: i64,
        from: ResetState,
        to: ResetState,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET state = $1, updated_at = $2, version = version + 1 \
             WHERE token_hash = $3 AND state = $4 AND version = $5",
        )
        .bind(state_column(to))
        .bind(now)
        .bind(token_hash)
        .bind(state_column(from))
        .bind(version)
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Counts a wrong code; the `max`-th locks the reset.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_wrong_code(
        &self,
        token_hash: &str,
        version: i64,
        max: u32,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET wrong_attempts = wrong_attempts + 1, \
             state = CASE WHEN wrong_attempts + 1 >= $1 THEN $5 ELSE state END, \
             updated_at = $2, version = version + 1 \
             WHERE token_hash = $3 AND state = $6 AND version = $4",
        )
        .bind(i64::from(max))
        .bind(now)
        .bind(token_hash)
        .bind(version)
        .bind(state_column(ResetState::Locked))
        .bind(state_column(ResetState::CodeSent))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The code was right: CODE_SENT → VERIFIED.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_verified(
        &self,
        token_hash: &str,
        version: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET state = $4, verified_at = $1, updated_at = $1, version = version + 1 \
             WHERE token_hash = $2 AND state = $5 AND version = $3",
        )
        .bind(now)
        .bind(token_hash)
        .bind(version)
        .bind(state_column(ResetState::Verified))
        .bind(state_column(ResetState::CodeSent))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces the code (a resend): the old code is dead. Its hash moves to
    /// `replaced_code_hash`, which verifies nothing: VerifyCode only recognises it to tell
    /// the user the newest mail's code is the one to type (one replaced code is kept).
    ///
    /// # Errors
    /// Database failures.
    pub async fn reissue_code(
        &self,
        token_hash: &str,
        version: i64,
        code_hash: &[u8],
        code_expires_at: i64,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET replaced_code_hash = code_hash, code_hash = $1, code_expires_at = $2, \
             last_sent_at = $3, updated_at = $3, sends = sends + 1, version = version + 1 \
             WHERE token_hash = $4 AND state = $6 AND version = $5",
        )
        .bind(code_hash)
        .bind(code_expires_at)
        .bind(now)
        .bind(token_hash)
        .bind(version)
        .bind(state_column(ResetState::CodeSent))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The mail of send number `sends` never reached the notifier: lift the cooldown so the
    /// user can resend at once.
    ///
    /// # Errors
    /// Database failures.
    pub async fn mail_not_sent(
        &self,
        token_hash: &str,
        sends: i64,
        now: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE resets SET last_sent_at = NULL, updated_at = $1, version = version + 1 \
             WHERE token_hash = $2 AND sends = $3 AND state = $4",
        )
        .bind(now)
        .bind(token_hash)
        .bind(sends)
        .bind(state_column(ResetState::CodeSent))
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The keystore rotated: CONFIRMING → COMPLETED. `false` when already recorded.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_completed(
        &self,
        saga_id: &str,
        new_key_id: &str,
        now: i64,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET state = $4, new_key_id = $1, completed_at = $2, updated_at = $2, \
             version = version + 1 WHERE saga_id = $3 AND state = $5",
        )
        .bind(new_key_id)
        .bind(now)
        .bind(saga_id)
        .bind(state_column(ResetState::Completed))
        .bind(state_column(ResetState::Confirming))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends a reissue the keystore refused for good (the account has no key, or it was
    /// reissued under another saga), so the user can start over.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_abandoned(&self, saga_id: &str, now: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE resets SET state = $3, updated_at = $1, version = version + 1 \
             WHERE saga_id = $2 AND state = $4",
        )
        .bind(now)
        .bind(saga_id)
        .bind(state_column(ResetState::Cancelled))
        .bind(state_column(ResetState::Confirming))
        .execute(self.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// # Errors
    /// Database failures.
    pub async fn record_notice_sent(&self, saga_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE resets SET notice_sent = 1 WHERE saga_id = $1")
            .bind(saga_id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Sagas left mid-reissue (a crash or an unreachable keystore), oldest first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn confirming_sagas(&self, limit: i64) -> Result<Vec<ResetRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            reset_columns!(),
            " FROM resets WHERE state = $2 ORDER BY updated_at LIMIT $1"
        ))
        .bind(limit)
        .bind(state_column(ResetState::Confirming))
        .fetch_all(self.pool())
        .await
    }

    /// How many sagas are in CONFIRMING, and since when the oldest has been.
    ///
    /// # Errors
    /// Database failures.
    pub async fn confirming_summary(&self) -> Result<(i64, Option<i64>), sqlx::Error> {
        sqlx::query_as("SELECT COUNT(*), MIN(updated_at) FROM resets WHERE state = $1")
            .bind(state_column(ResetState::Confirming))
            .fetch_one(self.pool())
            .await
    }

    /// Completed sagas whose "key reissued" notice is not yet with the notifier.
    ///
    /// # Errors
    /// Database failures.
    pub async fn pending_notices(
        &self,
        completed_since: i64,
        limit: i64,
    ) -> Result<Vec<ResetRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            reset_columns!(),
            " FROM resets WHERE state = $3 AND notice_sent = 0 AND completed_at > $1 \
             ORDER BY completed_at LIMIT $2"
        ))
        .bind(completed_since)
        .bind(limit)
        .bind(state_column(ResetState::Completed))
        .fetch_all(self.pool())
        .await
    }
}

impl Db {
    /// Deletes resets last changed before `before` (ms), except reissues still CONFIRMING
    /// (the sweeper has yet to finish them). A live code is long dead by then.
    ///
    /// # Errors
    /// Database failures.
    pub async fn purge_resets(&self, before: i64) -> Result<u64, sqlx::Error> {
        Ok(
            sqlx::query("DELETE FROM resets WHERE updated_at < $1 AND state <> $2")
                .bind(before)
                .bind(state_column(ResetState::Confirming))
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}

/// Cancels the account's resets not yet confirmed (CODE_SENT, VERIFIED), inside the
/// transaction of an account change: a code mailed to an old address, or won with an old
/// password, dies with the change. A reissue already CONFIRMING is left to finish: the
/// keystore may have rotated already, and its notice goes to the current address too.
pub(super) async fn cancel_unconfirmed(
    conn: &mut sqlx::AnyConnection,
    account_id: &str,
    now: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "UPDATE resets SET state = $1, updated_at = $2, version = version + 1 \
         WHERE account_id = $3 AND state IN ($4, $5)",
    )
    .bind(state_column(ResetState::Cancelled))
    .bind(now)
    .bind(account_id)
    .bind(state_column(ResetState::CodeSent))
    .bind(state_column(ResetState::Verified))
    .execute(conn)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::{ResetState, state_column};

    #[test]
    fn every_state_round_trips_through_its_column_text() {
        for s in [
            ResetState::CodeSent,
            ResetState::Verified,
            ResetState::Confirming,
            ResetState::Completed,
            ResetState::Cancelled,
            ResetState::Expired,
            ResetState::Locked,
            ResetState::Superseded,
        ] {
            assert_eq!(ResetState::try_from(state_column(s).to_owned()).unwrap(), s);
        }
        assert!(ResetState::try_from("paused".to_owned()).is_err());
    }
}
