//! Accounts, their keys, verification counters and rotations.

use sqlx::Any;

use super::audit::{NewAuditEvent, insert_audit};
use super::{Db, is_unique_violation};
use crate::crypto::Sealed;
use crate::domain::{AccountId, KeyParams, LockState};

/// A stored key. `sealed` is `None` once the key was destroyed by a rotation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub key_id: String,
    pub account_id: String,
    pub created_at: i64,
    pub algorithm: String,
    pub digits: i64,
    pub period: i64,
    pub kek_id: Option<String>,
    pub nonce: Option<Vec<u8>>,
    pub ciphertext: Option<Vec<u8>>,
    pub destroyed_at: Option<i64>,
}

impl KeyRow {
    /// The secret as stored, unless destroyed.
    pub fn sealed(&self) -> Option<Sealed> {
        match (&self.kek_id, &self.nonce, &self.ciphertext) {
            (Some(kek_id), Some(nonce), Some(ciphertext)) => {
                Some(Sealed { kek_id: kek_id.clone(), nonce: nonce.clone(), ciphertext: ciphertext.clone() })
            }
            _ => None,
        }
    }
}

/// What `VerifyCode` needs in one read: the current key and the account's counters.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VerifyRow {
    #[sqlx(flatten)]
    pub key: KeyRow,
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

/// A key still sealed under some KEK other than the active one.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RekeyCandidate {
    pub key_id: String,
    pub account_id: String,
    pub kek_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// A key about to be written.
#[derive(Debug)]
pub struct NewKey<'a> {
    pub key_id: &'a str,
    pub account: &'a AccountId,
    pub created_at: i64,
    pub params: KeyParams,
    pub sealed: &'a Sealed,
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

/// The columns of [`KeyRow`], as a macro so queries stay `&'static str` literals.
macro_rules! key_columns {
    () => {
        "k.key_id, k.account_id, k.created_at, k.algorithm, k.digits, k.period, k.kek_id, k.nonce, k.ciphertext, k.destroyed_at"
    };
}

impl Db {
    /// Creates the account with its first key. `false` when the account already exists.
    ///
    /// # Errors
    /// Database failures.
    pub async fn enroll(&self, key: &NewKey<'_>, audit: &NewAuditEvent<'_>) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO accounts (account_id, current_key_id, created_at) VALUES ($1, $2, $3)")
            .bind(key.account.as_str())
            .bind(key.key_id)
            .bind(key.created_at)
            .execute(&mut *tx)
            .await;
        match inserted {
            Err(e) if is_unique_violation(&e) => return Ok(false),
            other => other?,
        };
        insert_key(&mut tx, key).await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The account's current key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn current_key(&self, account: &AccountId) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            " FROM accounts a JOIN setup_keys k ON k.key_id = a.current_key_id WHERE a.account_id = $1"
        ))
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await
    }

    /// One key by ID, live or destroyed.
    ///
    /// # Errors
    /// Database failures.
    pub async fn key(&self, key_id: &str) -> Result<Option<KeyRow>, sqlx::Error> {
        sqlx::query_as(concat!("SELECT ", key_columns!(), " FROM setup_keys k WHERE k.key_id = $1"))
            .bind(key_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// The current key and counters of an account, in one read.
    ///
    /// # Errors
    /// Database failures.
    pub async fn verify_state(&self, account: &AccountId) -> Result<Option<VerifyRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            key_columns!(),
            ", a.last_step, a.failures, a.lockouts, a.locked_until \
             FROM accounts a JOIN setup_keys k ON k.key_id = a.current_key_id WHERE a.account_id = $1"
        ))
        .bind(account.as_str())
        .fetch_optional(&self.pool)
        .await
    }

    /// Records `step` as used, atomically: `true` only for the one caller that moved
    /// `last_step` forward while `key_id` was current and the account unlocked. Clears
    /// the failure counters.
    ///
    /// # Errors
    /// Database failures.
    pub async fn accept_step(&self, account: &AccountId, key_id: &str, step: i64, now_ms: i64) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE accounts SET last_step = $1, failures = 0, lockouts = 0 \
             WHERE account_id = $2 AND current_key_id = $3 AND last_step < $1 \
             AND (locked_until IS NULL OR locked_until <= $4)",
        )
        .bind(step)
        .bind(account.as_str())
        .bind(key_id)
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Moves the counters from `before` to `after` (compare-and-swap) and writes the audit
    /// events in the same transaction. `false` when another call changed them first.
    ///
    /// # Errors
    /// Database failures.
    pub async fn record_failure(
        &self,
        account: &AccountId,
        before: LockState,
        after: LockState,
        audits: &[NewAuditEvent<'_>],
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE accounts SET failures = $1, lockouts = $2, locked_until = $3 \
             WHERE account_id = $4 AND failures = $5 AND lockouts = $6 AND COALESCE(locked_until, -1) = $7",
        )
        .bind(i64::from(after.failures))
        .bind(i64::from(after.lockouts))
        .bind(after.locked_until_ms)
        .bind(account.as_str())
        .bind(i64::from(before.failures))
        .bind(i64::from(before.lockouts))
        .bind(before.locked_until_ms.unwrap_or(-1))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Ok(false);
        }
        for audit in audits {
            insert_audit(&mut *tx, audit).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// The new key ID of an earlier rotation with this idempotency key.
    ///
    /// # Errors
    /// Database failures.
    pub async fn find_rotation(&self, account: &AccountId, idempotency_key: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT new_key_id FROM rotations WHERE account_id = $1 AND idempotency_key = $2")
            .bind(account.as_str())
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Replaces `previous_key_id` by `new` in one transaction: the new key is stored, made
    /// current, the old ciphertext wiped (metadata kept) and the rotation recorded under
    /// its idempotency key.
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
        let mut tx = self.pool.begin().await?;
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
        insert_key(&mut tx, new).await?;
        let swapped = sqlx::query("UPDATE accounts SET current_key_id = $1 WHERE account_id = $2 AND current_key_id = $3")
            .bind(new.key_id)
            .bind(new.account.as_str())
            .bind(previous_key_id)
            .execute(&mut *tx)
            .await?;
        if swapped.rows_affected() != 1 {
            return Ok(RotateOutcome::CurrentKeyChanged);
        }
        sqlx::query(
            "UPDATE setup_keys SET kek_id = NULL, nonce = NULL, ciphertext = NULL, destroyed_at = $1 WHERE key_id = $2",
        )
        .bind(new.created_at)
        .bind(previous_key_id)
        .execute(&mut *tx)
        .await?;
        insert_audit(&mut *tx, audit).await?;
        tx.commit().await?;
        Ok(RotateOutcome::Rotated)
    }

    /// Up to `limit` live keys sealed under a KEK other than `active_kek`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn rekey_candidates(&self, active_kek: &str, limit: i64) -> Result<Vec<RekeyCandidate>, sqlx::Error> {
        sqlx::query_as(
            "SELECT key_id, account_id, kek_id, nonce, ciphertext FROM setup_keys \
             WHERE ciphertext IS NOT NULL AND kek_id <> $1 ORDER BY key_id LIMIT $2",
        )
        .bind(active_kek)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
    }

    /// Stores a re-sealed secret, unless the key was rotated or re-sealed meanwhile.
    ///
    /// # Errors
    /// Database failures.
    pub async fn replace_sealed(&self, key_id: &str, previous_kek: &str, sealed: &Sealed) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE setup_keys SET kek_id = $1, nonce = $2, ciphertext = $3 \
             WHERE key_id = $4 AND kek_id = $5 AND ciphertext IS NOT NULL",
        )
        .bind(&sealed.kek_id)
        .bind(&sealed.nonce)
        .bind(&sealed.ciphertext)
        .bind(key_id)
        .bind(previous_kek)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

async fn insert_key(tx: &mut sqlx::Transaction<'_, Any>, key: &NewKey<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO setup_keys (key_id, account_id, created_at, algorithm, digits, period, kek_id, nonce, ciphertext) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(key.key_id)
    .bind(key.account.as_str())
    .bind(key.created_at)
    .bind(key.params.algorithm.as_str())
    .bind(i64::from(key.params.digits))
    .bind(i64::from(key.params.period))
    .bind(&key.sealed.kek_id)
    .bind(&key.sealed.nonce)
    .bind(&key.sealed.ciphertext)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
