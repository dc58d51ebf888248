//! Accounts, their keys, verification counters and rotations.

use sqlx::Any;

use super::audit::{NewAuditEvent, insert_audit};
use kagi_runtime::db::WriteTx;

use super::{Db, is_unique_violation};
use crate::crypto::Sealed;
use crate::domain::{AccountId, KeyParams, LockState};

/// An account's current key, sealed, as stored in its account row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CurrentKey {
    pub account_id: String,
    #[sqlx(rename = "current_key_id")]
    pub key_id: String,
    #[sqlx(rename = "key_created_at")]
    pub created_at: i64,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub kek_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The otpauth issuer it was issued with; `None` for keys older than the column.
    pub issuer: Option<String>,
    /// Set when an operator revoked the key: its secret is wiped and it opens nothing.
    pub revoked_at: Option<i64>,
    /// The QR mask pattern (0–7) chosen when the key was first drawn; `None` before that.
    pub qr_mask: Option<i64>,
}

impl CurrentKey {
    /// The secret as stored.
    pub fn sealed(&self) -> Sealed {
        Sealed {
            kek_id: self.kek_id.clone(),
            nonce: self.nonce.clone(),
            ciphertext: self.ciphertext.clone(),
        }
    }
}

/// What is kept of every key ever issued: no secret, only when and how, and when it was
/// destroyed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRecord {
    pub key_id: String,
    pub account_id: String,
    pub created_at: i64,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub destroyed_at: Option<i64>,
}

/// What `VerifyCode` needs in one read: the current key and the account's counters.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VerifyRow {
    #[sqlx(flatten)]
    pub key: CurrentKey,
    pub last_step: i64,
    pub failures: i64,
    pub lockouts: i64,
    pub locked_until: Option<i64>,
}

impl VerifyRow {
    pub fn lock_state(&self) -> LockState {
        LockState {
            failures: u32::try_from(self.failures).unwrap_or(u32::MAX),
            lockouts: u32::try_from(self.lockouts).unwrap_or(u32::MAX),
            locked_until_ms: self.locked_until,
        }
    }
}

/// A key about to be written.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub key_id: &'a str,
    pub account: &'a AccountId,
    pub created_at: i64,
    pub params: KeyParams,
    pub sealed: &'a Sealed,
    /// The otpauth issuer the key is issued with.
    pub issuer: &'a str,
}

/// How a rotation attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    Rotated,
    /// Another call with this idempotency key won: read its result instead.
    DuplicateIdempotencyKey,
    /// The current key changed since it was read: start again.
    CurrentKeyChanged,
}

/// The shared head of `record_failure`'s statements: the compare-and-swap of the counters,
/// then the start of the audit insert that only happens when the swap did. The two
/// columns `action`, `detail` come from a `VALUES` list of one or two events, numbered so
/// the lockout is recorded after the failure that caused it.
macro_rules! record_failure_sql {
    (postgres_head) => {
        "WITH moved AS (UPDATE accounts SET failures = $1, lockouts = $2, locked_until = $3 \
           WHERE account_id = $4 AND failures = $5 AND lockouts = $6 \
           AND COALESCE(locked_until, -1) = $7 RETURNING account_id) \
         INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
         SELECT $8, $9, v.action, moved.account_id, $10, v.detail, $11 "
    };
    (sqlite_head) => {
        "BEGIN IMMEDIATE; \
         UPDATE accounts SET failures = $1, lockouts = $2, locked_until = $3 \
           WHERE account_id = $4 AND failures = $5 AND lockouts = $6 \
           AND COALESCE(locked_until, -1) = $7; \
         INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
         SELECT $8, $9, column2, $4, $10, column3, $11 "
    };
}

impl Db {
    /// Creates the account with its first key. `false` when the account already exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn enroll(
        &self,
        key: &NewKey<'_>,
        audit: &NewAuditEvent<'_>,
    ) -> Result<bool, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO accounts (account_id, current_key_id, key_created_at, algorithm, digits, period, \
             kek_id, nonce, ciphertext, created_at, issuer) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $3, $10)",
        )
        .bind(key.account.as_str())
        .bind(key.key_id)
        .bind(key.created_at)
        .bind(key.params.algorithm.as_str())
        .bind(i64::from(key.params.digits))
        .bind(i64::from(key.params.period))
        .bind(&key.sealed.kek_id)
        .bind(&key.sealed.nonce)
        .bind(&key.sealed.ciphertext)
        .bind(key.issuer)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(false),
            other => other?,
        };
        insert_key_record(&mut tx, key).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The account's current key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn current_key(
        &self,
        account: &AccountId,
    ) -> Result<Option<CurrentKey>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM accounts WHERE account_id = $1"
        ))
        .bind(account.as_str())
        .fetch_optional(self.database.pool())
        .await
    }

    /// The record of one key by ID, live or destroyed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn key_record(&self, key_id: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT key_id, account_id, created_at, algorithm, digits, period, destroyed_at FROM setup_keys WHERE key_id = $1",
        )
            .bind(key_id)
            .fetch_optional(self.database.pool())
            .await
    }

    /// The current key and counters of an account, in one read.
    ///
    /// # Errors
    /// Database failures.
    pub async fn verify_state(
        &self,
        account: &AccountId,
    ) -> Result<Option<VerifyRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            ", last_step, failures, lockouts, locked_until FROM accounts WHERE account_id = $1"
        ))
        .bind(account.as_str())
        .fetch_optional(self.database.pool())
        .await
    }

    /// Records `step` as used, atomically: `true` only for the one caller that moved
    /// `last_step` forward while `key_id` was current and the account unlocked. Clears
    /// the failure counters, and writes `audit` (the accepted verification) with the move,
    /// in the same commit: on PostgreSQL in the very statement (the update feeds the
    /// insert), on SQLite in one transaction sent as one command
    /// ([`Db::sqlite_one_shot`]). No accepted step goes unaudited, and the audit costs
    /// neither an extra commit nor an extra round trip.
    ///
    /// # Errors
    /// Database failures.
    pub async fn accept_step(
        &self,
        account: &AccountId,
        key_id: &str,
        step: i64,
        now_ms: i64,
        audit: &NewAuditEvent<'_>,
    ) -> Result<bool, sqlx::Error> {
        let sql = match self.backend() {
            super::Backend::Postgres => {
                "WITH moved AS (UPDATE accounts SET last_step = $1, failures = 0, lockouts = 0 \
                   WHERE account_id = $2 AND current_key_id = $3 AND last_step < $1 AND revoked_at IS NULL \
                   AND (locked_until IS NULL OR locked_until <= $4) RETURNING account_id) \
                 INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
                 SELECT $5, $6, $7, account_id, $3, $8, $9 FROM moved"
            }
            super::Backend::Sqlite => {
                "BEGIN IMMEDIATE; \
                 UPDATE accounts SET last_step = $1, failures = 0, lockouts = 0 \
                   WHERE account_id = $2 AND current_key_id = $3 AND last_step < $1 AND revoked_at IS NULL \
                   AND (locked_until IS NULL OR locked_until <= $4); \
                 INSERT INTO audit_events (at, caller, action, account_id, key_id, detail, trace_id) \
                 SELECT $5, $6, $7, $2, $3, $8, $9 WHERE changes() = 1 RETURNING seq; \
                 COMMIT;"
            }
        };
        let query = sqlx::query(sql)
            .bind(step)
            .bind(account.as_str())
            .bind(key_id)
            .bind(now_ms)
            .bind(audit.at_ms)
            .bind(audit.caller)
            .bind(audit.action)
            .bind(&audit.detail)
            .bind(&audit.trace_id);
        self.write_with_audit(query).await
    }

    /// Moves the counters from `before` to `after` (compare-and-swap) and, in the same
    /// commit, writes `rejected` (the failure) and, when `lockout` gives its detail, a
    /// `lockout` event beside it: one statement on PostgreSQL, one command on SQLite, as
    /// for an accepted code, so a flood of wrong codes costs no more than honest logins.
    /// `false` when another call changed the counters first (nothing is written).
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_failure(
        &self,
        account: &AccountId,
        before: LockState,
        after: LockState,
        rejected: &NewAuditEvent<'_>,
        lockout: Option<&str>,
    ) -> Result<bool, sqlx::Error> {
        // $12/$13: the rejection's action and detail; $14/$15: the lockout's, when locked.
        let sql = match (self.backend(), lockout.is_some()) {
            (super::Backend::Postgres, false) => concat!(
                record_failure_sql!(postgres_head),
                "FROM moved CROSS JOIN (VALUES (1, $12, $13)) AS v (n, action, detail)"
            ),
            (super::Backend::Postgres, true) => concat!(
                record_failure_sql!(postgres_head),
                "FROM moved CROSS JOIN (VALUES (1, $12, $13), (2, $14, $15)) AS v (n, action, detail) ORDER BY v.n"
            ),
            (super::Backend::Sqlite, false) => concat!(
                record_failure_sql!(sqlite_head),
                "FROM (VALUES (1, $12, $13)) WHERE changes() = 1 RETURNING seq; COMMIT;"
            ),
            (super::Backend::Sqlite, true) => concat!(
                record_failure_sql!(sqlite_head),
                "FROM (VALUES (1, $12, $13), (2, $14, $15)) WHERE changes() = 1 \
                 ORDER BY column1 RETURNING seq; COMMIT;"
            ),
        };
        let mut query = sqlx::query(sql)
            .bind(i64::from(after.failures))
            .bind(i64::from(after.lockouts))
            .bind(after.locked_until_ms)
            .bind(account.as_str())
            .bind(i64::from(before.failures))
            .bind(i64::from(before.lockouts))
            .bind(before.locked_until_ms.unwrap_or(-1))
            .bind(rejected.at_ms)
            .bind(rejected.caller)
            .bind(rejected.key_id)
            .bind(&rejected.trace_id)
            .bind(rejected.action)
            .bind(&rejected.detail);
        if let Some(detail) = lockout {
            query = query.bind("lockout").bind(detail);
        }
        self.write_with_audit(query).await
    }

    /// Runs a conditional change that writes its audit rows only when the change happened
    /// (see [`Db::accept_step`], [`Db::record_failure`]): whether it did.
    async fn write_with_audit(
        &self,
        query: sqlx::query::Query<'static, Any, sqlx::any::AnyArguments>,
    ) -> Result<bool, sqlx::Error> {
        match self.backend() {
            super::Backend::Postgres => {
                let done = query.execute(self.database.pool()).await?;
                Ok(done.rows_affected() > 0)
            }
            super::Backend::Sqlite => Ok(!self.sqlite_one_shot(query).await?.is_empty()),
        }
    }

    /// The new key ID of an earlier rotation with this idempotency key, and when it was
    /// made (Unix milliseconds).
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_rotation(
        &self,
        account: &AccountId,
        idempotency_key: &str,
    ) -> Result<Option<(String, i64)>, sqlx::Error> {
        sqlx::query_as(
            "SELECT new_key_id, created_at FROM rotations WHERE account_id = $1 AND idempotency_key = $2",
        )
        .bind(account.as_str())
        .bind(idempotency_key)
        .fetch_optional(self.database.pool())
        .await
    }

    /// Replaces `previous_key_id` by `new` in one transaction: the new key overwrites the
    /// old one's secret in the account row, the old key's record is marked destroyed, and
    /// the rotation is recorded under its idempotency key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rotate(
        &self,
        idempotency_key: &str,
        previous_key_id: &str,
        new: &NewKey<'_>,
        audit: &NewAuditEvent<'_>,
    ) -> Result<RotateOutcome, sqlx::Error> {
        let WriteTx {
            mut tx,
            turn: _turn,
        } = self.begin_write().await?;
        let recorded = sqlx::query(
            "INSERT INTO rotations (account_id, idempotency_key, new_key_id, previous_key_id, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(new.account.as_str())
        .bind(idempotency_key)
        .bind(new.key_id)
        .bind(previous_key_id)
        .bind(new.created_at)
        .execute(&mut *tx)
        .await;
        match recorded {
            Err(e) if is_unique_violation(&e) => return Ok(RotateOutcome::DuplicateIdempotencyKey),
            other => other?,
        };
        insert_key_record(&mut tx, new).await?;
        let swapped = sqlx::query(
            "UPDATE accounts SET current_key_id = $1, key_created_at = $2, algorithm = $3, digits = $4, period = $5, \
             kek_id = $6, nonce = $7, ciphertext = $8, issuer = $11, revoked_at = NULL, qr_mask = NULL \
             WHERE account_id = $9 AND current_key_id = $10",
        )
        .bind(new.key_id)
        .bind(new.created_at)
        .bind(new.params.algorithm.as_str())
        .bind(i64::from(new.params.digits))
        .bind(i64::from(new.params.period))
        .bind(&new.sealed.kek_id)
        .bind(&new.sealed.nonce)
        .bind(&new.sealed.ciphertext)
        .bind(new.account.as_str())
        .bind(previous_key_id)
        .bind(new.issuer)
        .execute(&mut *tx)
        .await?;
        if swapped.rows_affected() != 1 {
            return Ok(RotateOutcome::CurrentKeyChanged);
        }
        sqlx::query("UPDATE setup_keys SET destroyed_at = $1 WHERE key_id = $2")
            .bind(new.created_at)
            .bind(previous_key_id)
            .execute(&mut *tx)
            .await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        self.flush_old_pages().await;
        Ok(RotateOutcome::Rotated)
    }

    /// Remembers the QR mask pattern drawn for `key_id` while it is the account's current
    /// key (a key rotated away meanwhile is left alone).
    ///
    /// # Errors
    /// Database failures.
    pub async fn remember_qr_mask(
        &self,
        account: &AccountId,
        key_id: &str,
        mask: u8,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE accounts SET qr_mask = $1 WHERE account_id = $2 AND current_key_id = $3",
        )
        .bind(i64::from(mask))
        .bind(account.as_str())
        .bind(key_id)
        .execute(self.database.pool())
        .await?;
        Ok(())
    }

    /// Up to `limit` current keys sealed under a KEK other than `active_kek`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rekey_candidates(
        &self,
        active_kek: &str,
        limit: i64,
    ) -> Result<Vec<CurrentKey>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM accounts WHERE kek_id <> $1 AND revoked_at IS NULL ORDER BY account_id LIMIT $2"
        ))
        .bind(active_kek)
        .bind(limit)
        .fetch_all(self.database.pool())
        .await
    }

    /// Stores a re-sealed secret, unless the key was rotated or re-sealed meanwhile.
    ///
    /// # Errors
    /// Database failures.
    pub async fn replace_sealed(
        &self,
        key: &CurrentKey,
        sealed: &Sealed,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE accounts SET kek_id = $1, nonce = $2, ciphertext = $3 \
             WHERE account_id = $4 AND current_key_id = $5 AND kek_id = $6",
        )
        .bind(&sealed.kek_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(&key.account_id)
        .bind(&key.key_id)
        .bind(&key.kek_id)
        .execute(self.database.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// The secret-free record of a newly issued key.
async fn insert_key_record(
    tx: &mut sqlx::Transaction<'_, Any>,
    key: &NewKey<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO setup_keys (key_id, account_id, created_at, algorithm, digits, period, issuer) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(key.key_id)
    .bind(key.account.as_str())
    .bind(key.created_at)
    .bind(key.params.algorithm.as_str())
    .bind(i64::from(key.params.digits))
    .bind(i64::from(key.params.period))
    .bind(key.issuer)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
