//! The keystore's use cases, over domain, crypto and store: what each RPC does, without
//! the transport. Handlers in `grpc` only validate shapes and call these.

use std::net::IpAddr;
use std::sync::Arc;

use kagi_runtime::Clock;
use zeroize::Zeroizing;

use crate::crypto::Keyring;
use crate::domain::setup_key::{self, Algorithm};
use crate::domain::{
    AccountId, AuthenticatorCheck, CampusNetworks, CheckLimit, IdempotencyKey, KeyParams,
    LockState, LockoutPolicy, OneTimeCode, SetupKeySecret, TotpVerifier,
};
use crate::error::Error;
use crate::store::{CurrentKey, Db, NewAuditEvent, NewKey, RotateOutcome, ViewQueue, ViewRequest};

mod check;

pub use check::CheckReport;

/// A setup key opened for showing to its owner.
#[derive(Debug)]
pub struct RevealedKey {
    pub account: AccountId,
    pub key_id: String,
    pub created_at_ms: i64,
    pub params: KeyParams,
    pub secret: SetupKeySecret,
    /// The otpauth issuer it was issued with; `None` for keys older than that record.
    pub issuer: Option<String>,
    /// The QR mask pattern chosen when the key was first drawn (see [`crate::render`]).
    pub qr_mask: Option<u8>,
}

/// The outcome of one `VerifyCode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    Accepted {
        drift: i32,
    },
    Rejected {
        attempts_remaining: u32,
        locked_until_ms: Option<i64>,
    },
    Replayed {
        drift: i32,
    },
    LockedOut {
        until_ms: i64,
    },
    NoKey,
}

/// A rotation's result.
#[derive(Debug)]
pub struct Rotation {
    pub key: RevealedKey,
    pub previous_key_id: Option<String>,
    pub replayed: bool,
}

/// The keystore's state and policies, shared by every handler.
#[derive(Debug, Clone)]
pub struct Keystore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    /// Views of the current key, read and recorded in groups (one commit for the views
    /// that queued while the last group was written).
    views: ViewQueue,
    keyring: Keyring,
    clock: Arc<dyn Clock>,
    params: KeyParams,
    verifier: TotpVerifier,
    lockout: LockoutPolicy,
    campus: CampusNetworks,
    /// "Check my authenticator": its windows and its own per-account allowance.
    check: AuthenticatorCheck,
    check_limit: CheckLimit,
    /// How long a retried RotateKey hands out the rotation's secret again (ms).
    replay_window_ms: i64,
    /// The issuer new keys get (the institution's `otpauth_issuer`).
    issuer: String,
}

/// Who is asking, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    pub caller: &'a str,
}

impl Keystore {
    /// `replay_window`: how long after a rotation a retry with its idempotency key gets the
    /// new secret again. New keys are issued under `issuer` (the institution's
    /// `otpauth_issuer`); each key keeps the issuer it was issued with, so its
    /// authenticator entry keeps its name when the institution's changes.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        keyring: Keyring,
        clock: Arc<dyn Clock>,
        params: KeyParams,
        verifier: TotpVerifier,
        lockout: LockoutPolicy,
        campus: CampusNetworks,
        (check, check_limit): (AuthenticatorCheck, CheckLimit),
        replay_window: std::time::Duration,
        issuer: &str,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                views: ViewQueue::start(db.clone()),
                db,
                keyring,
                clock,
                params,
                verifier,
                lockout,
                campus,
                check,
                check_limit,
                replay_window_ms: i64::try_from(replay_window.as_millis()).unwrap_or(i64::MAX),
                issuer: issuer.to_owned(),
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The service's clock (the admin use cases stamp their actions with it).
    pub(crate) fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Creates an account's first key with the configured parameters.
    ///
    /// # Errors
    /// [`Error::AlreadyEnrolled`] when the account has a key; storage or crypto failures.
    pub async fn enroll(&self, actor: Actor<'_>, account: AccountId) -> Result<RevealedKey, Error> {
        let key = self.new_key(account)?;
        let sealed = self
            .inner
            .keyring
            .seal(&key.account, &key.key_id, &key.secret)?;
        let new = NewKey {
            key_id: &key.key_id,
            account: &key.account,
            created_at: key.created_at_ms,
            params: key.params,
            sealed: &sealed,
            issuer: key.issuer.as_deref().unwrap_or_default(),
        };
        let audit = self.audit_event(
            actor,
            "enroll",
            key.account.as_str(),
            &key.key_id,
            String::new(),
        );
        if !self.inner.db.enroll(&new, &audit).await? {
            return Err(Error::AlreadyEnrolled);
        }
        tracing::info!(account = %key.account, key_id = %key.key_id, "enrolled");
        Ok(key)
    }

    /// The account's current key, opened (the manual's menu 1). Audited as a view, in the
    /// same command that reads it; views arriving together share that command's commit
    /// ([`ViewQueue`]). The key is opened only once its view is committed.
    ///
    /// # Errors
    /// [`Error::NoKey`]; storage or crypto failures.
    pub async fn current_key(
        &self,
        actor: Actor<'_>,
        account: AccountId,
    ) -> Result<RevealedKey, Error> {
        // The key ID is the row's, read and audited in one command.
        let view = self.audit_event(actor, "view", account.as_str(), "", String::new());
        let row = self
            .inner
            .views
            .view(ViewRequest::new(account.clone(), &view))
            .await?
            .ok_or(Error::NoKey)?;
        self.reveal(account, &row)
    }

    /// Replaces the current key by a new one and destroys the old; idempotent per key. A
    /// retry within the replay window gets the same new key again, audited as a view.
    ///
    /// # Errors
    /// [`Error::NoKey`], [`Error::RotationSuperseded`] when the idempotency key's rotation
    /// was itself rotated away, [`Error::ReplayWindowClosed`] for a retry after the window,
    /// [`Error::Contended`]; storage or crypto failures.
    pub async fn rotate(
        &self,
        actor: Actor<'_>,
        account: AccountId,
        idempotency: IdempotencyKey,
    ) -> Result<Rotation, Error> {
        for _ in 0..8 {
            if let Some(done) = self.replay_rotation(actor, &account, &idempotency).await? {
                return Ok(done);
            }
            let current = self
                .inner
                .db
                .current_key(&account)
                .await?
                .ok_or(Error::NoKey)?;
            let key = self.new_key(account.clone())?;
            let sealed = self
                .inner
                .keyring
                .seal(&key.account, &key.key_id, &key.secret)?;
            let new = NewKey {
                key_id: &key.key_id,
                account: &key.account,
                created_at: key.created_at_ms,
                params: key.params,
                sealed: &sealed,
                issuer: key.issuer.as_deref().unwrap_or_default(),
            };
            let detail = format!("previous_key_id={}", current.key_id);
            let audit = self.audit_event(actor, "rotate", account.as_str(), &key.key_id, detail);
            match self
                .inner
                .db
                .rotate(idempotency.as_str(), &current.key_id, &new, &audit)
                .await?
            {
                RotateOutcome::Rotated => {
                    tracing::info!(account = %account, key_id = %key.key_id, previous_key_id = %current.key_id, "rotated");
                    return Ok(Rotation {
                        key,
                        previous_key_id: Some(current.key_id),
                        replayed: false,
                    });
                }
                // Lost a race: the next round reads the winner's result or the new current key.
                RotateOutcome::DuplicateIdempotencyKey | RotateOutcome::CurrentKeyChanged => {}
            }
        }
        Err(Error::Contended)
    }

    /// The result of an earlier rotation with this idempotency key, if there was one. The
    /// secret goes out again only within the replay window, and every time it does is
    /// audited as a view of the key: an idempotency key is not a standing licence to read
    /// the current secret.
    async fn replay_rotation(
        &self,
        actor: Actor<'_>,
        account: &AccountId,
        idempotency: &IdempotencyKey,
    ) -> Result<Option<Rotation>, Error> {
        let Some((key_id, rotated_at)) = self
            .inner
            .db
            .find_rotation(account, idempotency.as_str())
            .await?
        else {
            return Ok(None);
        };
        let current = self
            .inner
            .db
            .current_key(account)
            .await?
            .ok_or(Error::NoKey)?;
        // A revoked key was replaced too, by nothing: its secret is gone.
        if current.key_id != key_id || current.revoked_at.is_some() {
            return Err(Error::RotationSuperseded);
        }
        let now = self.inner.clock.now_ms();
        if now.saturating_sub(rotated_at) >= self.inner.replay_window_ms {
            tracing::warn!(account = %account, key_id = %key_id, "rotation replay refused: past the replay window");
            return Err(Error::ReplayWindowClosed);
        }
        let key = self.reveal(account.clone(), &current)?;
        let audit = self.audit_event(
            actor,
            "view",
            account.as_str(),
            &key.key_id,
            "rotation_replay".into(),
        );
        self.inner.db.audit(&audit).await?;
        tracing::info!(account = %account, key_id = %key.key_id, "rotation replayed");
        Ok(Some(Rotation {
            key,
            previous_key_id: None,
            replayed: true,
        }))
    }

    /// Checks a login's one-time password: accepted at most once per time step, with
    /// failures counted towards a lockout. `raw_code` must already be 6–8 digits.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when the code's length is not the key's; storage or crypto
    /// failures.
    pub async fn verify(
        &self,
        actor: Actor<'_>,
        account: AccountId,
        raw_code: &str,
    ) -> Result<Verification, Error> {
        let inner = &self.inner;
        let state = inner.db.verify_state(&account).await?;
        // A key an operator revoked answers like no key until the user reissues one.
        let Some(mut state) = state.filter(|s| s.key.revoked_at.is_none()) else {
            let audit = self.audit_event(
                actor,
                "verify_failed",
                account.as_str(),
                "",
                "no_key".into(),
            );
            inner.db.audit(&audit).await?;
            return Ok(Verification::NoKey);
        };
        let params = row_params(&state.key)?;
        let code = OneTimeCode::parse(raw_code, params.digits)?;
        let now_ms = inner.clock.now_ms();
        let unix_secs = u64::try_from(now_ms / 1000).unwrap_or(0);
        for _ in 0..32 {
            let lock = state.lock_state();
            if let Some(until_ms) = lock.locked_until_ms.filter(|_| lock.is_locked(now_ms)) {
                return Ok(Verification::LockedOut { until_ms });
            }
            let secret = inner
                .keyring
                .open(&account, &state.key.key_id, &state.key.sealed())?;
            let matches = inner.verifier.matches(&secret, params, &code, unix_secs);
            if let Some(fresh) = matches.iter().find(|m| m.step > state.last_step) {
                let audit = self.audit_event(
                    actor,
                    "verify",
                    account.as_str(),
                    &state.key.key_id,
                    format!("accepted drift={}", fresh.drift),
                );
                if inner
                    .db
                    .accept_step(&account, &state.key.key_id, fresh.step, now_ms, &audit)
                    .await?
                {
                    return Ok(Verification::Accepted { drift: fresh.drift });
                }
            } else if let Some(used) = matches.first() {
                let audit = self.audit_event(
                    actor,
                    "verify_failed",
                    account.as_str(),
                    &state.key.key_id,
                    "replayed".into(),
                );
                inner.db.audit(&audit).await?;
                return Ok(Verification::Replayed { drift: used.drift });
            } else if let Some(outcome) = self
                .record_failure(actor, &account, &state.key.key_id, lock, now_ms)
                .await?
            {
                return Ok(outcome);
            }
            // Another call changed the account meanwhile: decide again on fresh state.
            match inner.db.verify_state(&account).await? {
                Some(fresh) if fresh.key.revoked_at.is_none() => state = fresh,
                _ => return Ok(Verification::NoKey),
            }
        }
        Err(Error::Contended)
    }

    /// Counts one failure; `None` when another call moved the counters first.
    async fn record_failure(
        &self,
        actor: Actor<'_>,
        account: &AccountId,
        key_id: &str,
        before: LockState,
        now_ms: i64,
    ) -> Result<Option<Verification>, Error> {
        let policy = self.inner.lockout;
        let after = policy.after_failure(before, now_ms);
        let locked = after.is_locked(now_ms);
        let rejected = self.audit_event(
            actor,
            "verify_failed",
            account.as_str(),
            key_id,
            "rejected".into(),
        );
        let lockout = locked.then(|| {
            format!(
                "lockout={} until_ms={}",
                after.lockouts,
                after.locked_until_ms.unwrap_or_default()
            )
        });
        if !self
            .inner
            .db
            .record_failure(account, before, after, &rejected, lockout.as_deref())
            .await?
        {
            return Ok(None);
        }
        if locked {
            crate::metrics::lockout_begun();
            tracing::warn!(account = %account, lockouts = after.lockouts, "verification locked after repeated failures");
        }
        Ok(Some(Verification::Rejected {
            attempts_remaining: if locked { 0 } else { policy.remaining(after) },
            locked_until_ms: after.locked_until_ms.filter(|_| locked),
        }))
    }

    /// Remembers the QR mask pattern first drawn for the account's key `key_id`, so its
    /// later views skip the mask search. Best effort: a failure is logged and costs only
    /// the next view a search.
    pub async fn remember_qr_mask(&self, account: &AccountId, key_id: &str, mask: u8) {
        if let Err(e) = self.inner.db.remember_qr_mask(account, key_id, mask).await {
            tracing::warn!(error = %e, "could not remember the key's QR mask");
        }
    }

    /// The campus network containing `ip`, if the login needs no one-time password.
    pub fn campus_network(&self, ip: IpAddr) -> Option<String> {
        self.inner.campus.containing(ip).map(ToString::to_string)
    }

    /// Re-seals every live key still under another KEK with the active one, in batches,
    /// while the service keeps serving. Returns how many keys were re-sealed.
    ///
    /// # Errors
    /// A key sealed under a KEK that is not loaded; storage failures.
    pub async fn rekey(&self, actor: Actor<'_>) -> Result<u64, Error> {
        let keyring = &self.inner.keyring;
        let mut done = 0;
        loop {
            let batch = self
                .inner
                .db
                .rekey_candidates(keyring.active_id(), 500)
                .await?;
            if batch.is_empty() {
                break;
            }
            for key in batch {
                let account =
                    AccountId::parse(&key.account_id).map_err(crate::domain::InvalidInput::from)?;
                let secret = keyring.open(&account, &key.key_id, &key.sealed())?;
                let sealed = keyring.seal(&account, &key.key_id, &secret)?;
                // A key rotated meanwhile already carries the active KEK: skipped.
                if self.inner.db.replace_sealed(&key, &sealed).await? {
                    crate::metrics::rekeyed_one();
                    done += 1;
                }
            }
        }
        let audit = self.audit_event(
            actor,
            "rekey",
            "",
            "",
            format!("kek={} keys={done}", keyring.active_id()),
        );
        self.inner.db.audit(&audit).await?;
        Ok(done)
    }

    fn new_key(&self, account: AccountId) -> Result<RevealedKey, Error> {
        let secret = SetupKeySecret::generate()
            .map_err(|e| anyhow::anyhow!("OS random generator failed: {e}"))?;
        Ok(RevealedKey {
            account,
            key_id: uuid::Uuid::new_v4().to_string(),
            created_at_ms: self.inner.clock.now_ms(),
            params: self.inner.params,
            secret,
            issuer: Some(self.inner.issuer.clone()),
            qr_mask: None,
        })
    }

    fn reveal(&self, account: AccountId, row: &CurrentKey) -> Result<RevealedKey, Error> {
        let secret = self
            .inner
            .keyring
            .open(&account, &row.key_id, &row.sealed())?;
        Ok(RevealedKey {
            account,
            key_id: row.key_id.clone(),
            created_at_ms: row.created_at,
            params: row_params(row)?,
            secret,
            issuer: row.issuer.clone(),
            qr_mask: row.qr_mask.and_then(|m| u8::try_from(m).ok()),
        })
    }

    pub(crate) fn audit_event<'a>(
        &self,
        actor: Actor<'a>,
        action: &'a str,
        account_id: &'a str,
        key_id: &'a str,
        detail: String,
    ) -> NewAuditEvent<'a> {
        NewAuditEvent {
            at_ms: self.inner.clock.now_ms(),
            caller: actor.caller,
            action,
            account_id,
            key_id,
            detail,
            trace_id: kagi_runtime::telemetry::current_trace_id().unwrap_or_default(),
        }
    }
}

/// The parameters recorded with a key, not today's defaults.
fn row_params(row: &CurrentKey) -> Result<KeyParams, Error> {
    let algorithm: Algorithm = row
        .algorithm
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let digits = u32::try_from(row.digits).map_err(|e| anyhow::anyhow!("stored digits: {e}"))?;
    let period = u32::try_from(row.period).map_err(|e| anyhow::anyhow!("stored period: {e}"))?;
    Ok(KeyParams {
        algorithm,
        digits,
        period,
    })
}

/// The otpauth URI of a revealed key, under the issuer the key was issued with, or
/// `older_keys_issuer` for a key issued before that was recorded (its QR codes:
/// [`crate::render`]).
pub fn otpauth_uri(older_keys_issuer: &str, key: &RevealedKey) -> Zeroizing<String> {
    let issuer = key.issuer.as_deref().unwrap_or(older_keys_issuer);
    setup_key::otpauth_uri(issuer, &key.account, &key.secret, key.params)
}
