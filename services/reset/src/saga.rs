//! The reissue saga: each use case of `kagi.v1.Reset`, over the directory, the store and
//! the two downstream services. Every transition is written before its side effect, and
//! every side effect is idempotent downstream (the saga ID is the keystore's idempotency
//! key and names each notifier message), so retries and crashes rotate once and mail once
//! per send.

use std::net::IpAddr;
use std::sync::Arc;

use kagi_proto::v1 as pb;
use kagi_runtime::Clock;
use secrecy::SecretString;
use tonic::Code;

use crate::directory::Directory;
use crate::domain::state::ms;
use crate::domain::{CodeHasher, ConfirmationCode, Policy, ResetState, ResetToken, mask_email};
use crate::downstream::{KeystoreClient, NotifierClient, timestamp};
use crate::error::Error;
use crate::store::{Db, NewReset, ResetRow, StartOutcome};

/// Per-account and per-IP limits on StartReset attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_account_max: u32,
    pub per_account_window_ms: i64,
    pub per_ip_max: u32,
    pub per_ip_window_ms: i64,
}

/// What StartReset hands back.
#[derive(Debug)]
pub struct Started {
    pub token: ResetToken,
    pub masked_recipient: String,
    pub code_expires_at: i64,
    pub resend_after: i64,
}

/// What ResendCode hands back.
#[derive(Debug, Clone, Copy)]
pub struct Resent {
    pub code_expires_at: i64,
    pub resend_after: i64,
    pub resends_remaining: u32,
}

/// The outcome of one VerifyCode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeOutcome {
    Verified { confirm_by: i64 },
    WrongCode { attempts_remaining: u32 },
    Expired,
    Locked,
}

/// A reset as GetReset shows it.
#[derive(Debug, Clone)]
pub struct ResetView {
    pub state: ResetState,
    pub masked_recipient: String,
    pub code_expires_at: i64,
    pub resend_after: i64,
    pub resends_remaining: u32,
    pub attempts_remaining: u32,
    pub confirm_by: Option<i64>,
}

/// What StartReset is given.
#[derive(Debug)]
pub struct StartRequest<'a> {
    pub account_id: &'a str,
    pub password: SecretString,
    pub client_ip: IpAddr,
    pub user_agent: &'a str,
    pub locale: &'static str,
}

/// The saga and everything it talks to.
#[derive(Debug, Clone)]
pub struct ResetSaga {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    directory: Arc<dyn Directory>,
    hasher: CodeHasher,
    clock: Arc<dyn Clock>,
    policy: Policy,
    limits: RateLimits,
    keystore: KeystoreClient,
    notifier: NotifierClient,
}

/// Which attempts a rate limit counts: resets and portal logins have separate counters.
#[derive(Debug, Clone, Copy)]
enum RateScope {
    Reset,
    Login,
}

impl RateScope {
    /// The `rate_events.scope` names for the per-IP and per-account counters.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Self::Reset => ("ip", "account"),
            Self::Login => ("login_ip", "login_account"),
        }
    }
}

/// How many times a step re-reads after losing a race before giving up.
const ROUNDS: usize = 8;

impl ResetSaga {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: Db,
        directory: Arc<dyn Directory>,
        hasher: CodeHasher,
        clock: Arc<dyn Clock>,
        policy: Policy,
        limits: RateLimits,
        keystore: KeystoreClient,
        notifier: NotifierClient,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                db,
                directory,
                hasher,
                clock,
                policy,
                limits,
                keystore,
                notifier,
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The portal's `local` login: is this the account's password? Rate-limited like
    /// StartReset (on counters of its own), and as silent about why as StartReset.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// directory or storage failures.
    pub async fn check_password(&self, account_id: &str, password: &SecretString, client_ip: IpAddr) -> Result<(), Error> {
        self.admit(RateScope::Login, client_ip, account_id, self.now()).await?;
        match self.inner.directory.authenticate(account_id, password).await? {
            Some(_) => Ok(()),
            None => {
                tracing::info!("login refused: bad credentials");
                Err(Error::BadCredentials)
            }
        }
    }

    /// Counts one attempt against the per-IP limit first (before any argon2 work is spent
    /// on the caller), then the per-account one.
    async fn admit(&self, scope: RateScope, client_ip: IpAddr, account_id: &str, now: i64) -> Result<(), Error> {
        let limits = self.inner.limits;
        let (ip_scope, account_scope) = scope.names();
        let ip_subject = rate_subject(client_ip);
        if !self.inner.db.rate_hit(ip_scope, &ip_subject, now, limits.per_ip_window_ms, limits.per_ip_max).await? {
            tracing::warn!(client_ip = %ip_subject, scope = ip_scope, "rate-limited by client IP");
            return Err(Error::RateLimited);
        }
        if !self
            .inner
            .db
            .rate_hit(account_scope, account_id, now, limits.per_account_window_ms, limits.per_account_max)
            .await?
        {
            tracing::warn!(scope = account_scope, "rate-limited by account");
            return Err(Error::RateLimited);
        }
        Ok(())
    }

    /// "1. 二要素認証のリセット": check the password, create the reset, mail the first code.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// [`Error::MailUnavailable`] (the reset is cancelled; start again), storage failures.
    pub async fn start(&self, request: StartRequest<'_>) -> Result<Started, Error> {
        let now = self.now();
        self.admit(RateScope::Reset, request.client_ip, request.account_id, now).await?;
        let Some(account) = self
            .inner
            .directory
            .authenticate(request.account_id, &request.password)
            .await?
        else {
            tracing::info!("StartReset refused: bad credentials");
            return Err(Error::BadCredentials);
        };

        let token = ResetToken::from_random(&random_bytes::<{ ResetToken::BYTES }>()?);
        let token_hash = token.digest();
        let saga_id = uuid::Uuid::new_v4().to_string();
        tracing::Span::current().record("saga_id", saga_id.as_str());
        let code = new_code()?;
        let code_expires_at = now + ms(self.inner.policy.code_ttl);
        let code_hash = self.inner.hasher.hash(&saga_id, &code);
        let new = NewReset {
            token_hash: &token_hash,
            saga_id: &saga_id,
            account_id: &account.account_id,
            recipient: &account.recovery_email,
            locale: request.locale,
            client_ip: &request.client_ip.to_string(),
            user_agent: request.user_agent,
            code_hash: &code_hash,
            code_expires_at,
            now,
        };
        let mut outcome = StartOutcome::Raced;
        for _ in 0..ROUNDS {
            outcome = self.inner.db.start_reset(&new).await?;
            if outcome != StartOutcome::Raced {
                break;
            }
        }
        match outcome {
            StartOutcome::Started => {}
            StartOutcome::ConfirmingElsewhere => {
                return Err(Error::IllegalStep(
                    "a reissue for this account is being completed; try again in a minute",
                ));
            }
            StartOutcome::Raced => return Err(Error::Contended),
        }
        tracing::info!("reset started");

        let sent = self
            .send_code(
                &saga_id,
                1,
                &account.recovery_email,
                &account.account_id,
                &code,
                code_expires_at,
                request.locale,
            )
            .await;
        if let Err(e) = sent {
            // Nothing half-done: the reset whose first mail failed is over.
            self.inner
                .db
                .move_state(&token_hash, 0, "code_sent", "cancelled", self.now())
                .await?;
            return Err(e);
        }
        Ok(Started {
            token,
            masked_recipient: mask_email(&account.recovery_email),
            code_expires_at,
            resend_after: now + ms(self.inner.policy.resend_after),
        })
    }

    /// "メールを再送信する": a new code, the old one dead.
    ///
    /// # Errors
    /// [`Error::ResendTooSoon`], [`Error::ResendLimit`], [`Error::IllegalStep`] outside
    /// CODE_SENT, [`Error::MailUnavailable`] (the user may resend at once).
    pub async fn resend(&self, token: &ResetToken) -> Result<Resent, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            let state = effective(&row, now, policy)?;
            if state != ResetState::CodeSent {
                return Err(Error::IllegalStep(state.refusal()));
            }
            let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
            if resends_done >= policy.max_resends {
                return Err(Error::ResendLimit);
            }
            if let Some(last) = row.last_sent_at {
                let allowed_at = last + ms(policy.resend_after);
                if now < allowed_at {
                    return Err(Error::ResendTooSoon {
                        wait_secs: (allowed_at - now + 999) / 1000,
                    });
                }
            }
            let code = new_code()?;
            let code_expires_at = now + ms(policy.code_ttl);
            let code_hash = self.inner.hasher.hash(&row.saga_id, &code);
            if !self
                .inner
                .db
                .reissue_code(
                    &row.token_hash,
                    row.version,
                    &code_hash,
                    code_expires_at,
                    now,
                )
                .await?
            {
                continue;
            }
            let send = row.sends + 1;
            tracing::info!(send, "code reissued");
            if let Err(e) = self
                .send_code(
                    &row.saga_id,
                    send,
                    &row.recipient,
                    &row.account_id,
                    &code,
                    code_expires_at,
                    &row.locale,
                )
                .await
            {
                self.inner
                    .db
                    .mail_not_sent(&row.token_hash, send, self.now())
                    .await?;
                return Err(e);
            }
            return Ok(Resent {
                code_expires_at,
                resend_after: now + ms(policy.resend_after),
                resends_remaining: policy.max_resends.saturating_sub(resends_done + 1),
            });
        }
        Err(Error::Contended)
    }

    /// "コードを確認する": right code → VERIFIED; wrong → one attempt fewer; the last
    /// wrong one locks the reset.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once past CODE_SENT (except LOCKED and EXPIRED, which are
    /// outcomes), storage failures.
    pub async fn verify(
        &self,
        token: &ResetToken,
        code: &ConfirmationCode,
    ) -> Result<CodeOutcome, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match stored_state(&row)? {
                ResetState::CodeSent => {}
                ResetState::Locked => return Ok(CodeOutcome::Locked),
                ResetState::Expired => return Ok(CodeOutcome::Expired),
                other => return Err(Error::IllegalStep(other.refusal())),
            }
            if now >= row.code_expires_at {
                self.inner
                    .db
                    .move_state(&row.token_hash, row.version, "code_sent", "expired", now)
                    .await?;
                return Ok(CodeOutcome::Expired);
            }
            // Every outcome is decided only once its write wins, so parallel guesses cannot
            // get past the cap.
            if self
                .inner
                .hasher
                .matches(&row.saga_id, code, &row.code_hash)
            {
                if self
                    .inner
                    .db
                    .record_verified(&row.token_hash, row.version, now)
                    .await?
                {
                    tracing::info!("code verified");
                    return Ok(CodeOutcome::Verified {
                        confirm_by: now + ms(policy.confirm_within),
                    });
                }
            } else if self
                .inner
                .db
                .record_wrong_code(&row.token_hash, row.version, policy.max_wrong_codes, now)
                .await?
            {
                let wrong = u32::try_from(row.wrong_attempts + 1).unwrap_or(u32::MAX);
                tracing::info!(wrong_attempts = wrong, "wrong code");
                if wrong >= policy.max_wrong_codes {
                    tracing::warn!("reset locked after too many wrong codes");
                    return Ok(CodeOutcome::Locked);
                }
                return Ok(CodeOutcome::WrongCode {
                    attempts_remaining: policy.max_wrong_codes - wrong,
                });
            }
        }
        Err(Error::Contended)
    }

    /// "セットアップキーを再発行する": VERIFIED → CONFIRMING → keystore rotation →
    /// COMPLETED → notice. A retry (CONFIRMING after a crash, or COMPLETED within the view
    /// window) replays the same rotation and returns the same key.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] before a verify or after the windows,
    /// [`Error::KeystoreUnavailable`] (retry), storage failures.
    pub async fn confirm(&self, token: &ResetToken) -> Result<pb::SetupKey, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match stored_state(&row)? {
                ResetState::Verified => {
                    let deadline = row.verified_at.unwrap_or(0) + ms(policy.confirm_within);
                    if now >= deadline {
                        self.inner
                            .db
                            .move_state(&row.token_hash, row.version, "verified", "expired", now)
                            .await?;
                        return Err(Error::IllegalStep(
                            "the 10 minutes to confirm have passed; start again",
                        ));
                    }
                    if !self
                        .inner
                        .db
                        .move_state(&row.token_hash, row.version, "verified", "confirming", now)
                        .await?
                    {
                        continue;
                    }
                    tracing::info!("reissue confirmed");
                    return self.finish(&row).await;
                }
                ResetState::Confirming => return self.finish(&row).await,
                ResetState::Completed => {
                    let until = row.completed_at.unwrap_or(0) + ms(policy.completed_view);
                    if now >= until {
                        return Err(Error::IllegalStep(
                            "the new key was issued and can no longer be shown here; view it with 現在のセットアップキーを表示する",
                        ));
                    }
                    return self.finish(&row).await;
                }
                other => return Err(Error::IllegalStep(other.refusal())),
            }
        }
        Err(Error::Contended)
    }

    /// "最初からやり直す": ends a reset not yet confirmed. Already-over resets stay as
    /// they are.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once confirmed.
    pub async fn cancel(&self, token: &ResetToken) -> Result<ResetState, Error> {
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            let stored = stored_state(&row)?;
            match effective(&row, now, &self.inner.policy)? {
                ResetState::CodeSent | ResetState::Verified => {
                    if self
                        .inner
                        .db
                        .move_state(
                            &row.token_hash,
                            row.version,
                            stored.as_str(),
                            "cancelled",
                            now,
                        )
                        .await?
                    {
                        tracing::info!("reset cancelled");
                        return Ok(ResetState::Cancelled);
                    }
                }
                ResetState::Confirming | ResetState::Completed => {
                    return Err(Error::IllegalStep(
                        "the reissue was already confirmed and cannot be cancelled",
                    ));
                }
                over => return Ok(over),
            }
        }
        Err(Error::Contended)
    }

    /// Where a reset stands, for a page reload.
    ///
    /// # Errors
    /// [`Error::UnknownReset`], storage failures.
    pub async fn get(&self, token: &ResetToken) -> Result<ResetView, Error> {
        let row = self.load(token).await?;
        let now = self.now();
        let policy = &self.inner.policy;
        let state = effective(&row, now, policy)?;
        let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
        let wrong = u32::try_from(row.wrong_attempts).unwrap_or(u32::MAX);
        Ok(ResetView {
            state,
            masked_recipient: mask_email(&row.recipient),
            code_expires_at: row.code_expires_at,
            resend_after: row
                .last_sent_at
                .map_or(now, |l| l + ms(policy.resend_after)),
            resends_remaining: policy.max_resends.saturating_sub(resends_done),
            attempts_remaining: policy.max_wrong_codes.saturating_sub(wrong),
            confirm_by: row.verified_at.map(|v| v + ms(policy.confirm_within)),
        })
    }

    /// Finishes what a crash or an outage left: reissues stuck in CONFIRMING, notices not
    /// yet queued; forgets old rate-limit events. Returns the number of sagas completed.
    ///
    /// # Errors
    /// Storage failures (downstream failures are logged and retried next time).
    pub async fn sweep(&self) -> Result<usize, Error> {
        let mut completed = 0;
        for row in self.inner.db.confirming_sagas(50).await? {
            match self.finish(&row).await {
                Ok(_) => completed += 1,
                Err(e) => {
                    tracing::warn!(saga_id = %row.saga_id, error = %e, "interrupted reissue not finished yet");
                }
            }
        }
        let now = self.now();
        let day = 24 * 3600 * 1000;
        for row in self.inner.db.pending_notices(now - day, 50).await? {
            self.send_notice(&row).await;
        }
        let limits = self.inner.limits;
        let oldest = now - limits.per_ip_window_ms.max(limits.per_account_window_ms);
        self.inner.db.prune_rate_events(oldest).await?;
        Ok(completed)
    }

    async fn load(&self, token: &ResetToken) -> Result<ResetRow, Error> {
        let row = self
            .inner
            .db
            .find_reset(&token.digest())
            .await?
            .ok_or(Error::UnknownReset)?;
        let span = tracing::Span::current();
        span.record("saga_id", row.saga_id.as_str());
        span.record("account_id", row.account_id.as_str());
        Ok(row)
    }

    /// The rotation (replayed when it already happened), its record, and the notice.
    async fn finish(&self, row: &ResetRow) -> Result<pb::SetupKey, Error> {
        let request = pb::RotateKeyRequest {
            account_id: row.account_id.clone(),
            idempotency_key: row.saga_id.clone(),
        };
        let reply = self
            .inner
            .keystore
            .clone()
            .rotate_key(request)
            .await
            .map_err(keystore_error)?
            .into_inner();
        let key = reply
            .key
            .ok_or_else(|| anyhow::anyhow!("the keystore returned no key"))?;
        if let Some(recorded) = &row.new_key_id
            && *recorded != key.key_id
        {
            return Err(
                anyhow::anyhow!("the keystore replayed a different key for this saga").into(),
            );
        }
        if self
            .inner
            .db
            .record_completed(&row.saga_id, &key.key_id, self.now())
            .await?
        {
            tracing::info!(saga_id = %row.saga_id, key_id = %key.key_id, replayed = reply.replayed, "setup key reissued");
        }
        // The notice names the time the completion was recorded, whoever recorded it.
        if let Some(done) = self.inner.db.find_saga(&row.saga_id).await? {
            self.send_notice(&done).await;
        }
        Ok(key)
    }

    /// Queues the "key reissued" notice once; a failure is logged and left to the sweeper,
    /// the confirmation itself has succeeded.
    async fn send_notice(&self, row: &ResetRow) {
        if row.notice_sent != 0 {
            return;
        }
        let request = pb::SendKeyReissuedNoticeRequest {
            message_id: format!("{}:notice", row.saga_id),
            recipient: row.recipient.clone(),
            account_id: row.account_id.clone(),
            reissued_at: Some(timestamp(row.completed_at.unwrap_or(row.updated_at))),
            client_ip: row.client_ip.clone(),
            locale: row.locale.clone(),
        };
        match self
            .inner
            .notifier
            .clone()
            .send_key_reissued_notice(request)
            .await
        {
            Ok(_) => {
                if let Err(e) = self.inner.db.record_notice_sent(&row.saga_id).await {
                    tracing::warn!(error = %e, "notice queued but not recorded; it will be queued again (same message ID)");
                }
            }
            Err(status) => {
                tracing::warn!(saga_id = %row.saga_id, code = ?status.code(), "reissue notice not queued yet");
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_code(
        &self,
        saga_id: &str,
        send: i64,
        recipient: &str,
        account_id: &str,
        code: &ConfirmationCode,
        expires_at: i64,
        locale: &str,
    ) -> Result<(), Error> {
        let request = pb::SendResetCodeRequest {
            message_id: format!("{saga_id}:code:{send}"),
            recipient: recipient.to_owned(),
            account_id: account_id.to_owned(),
            code: code.expose().to_owned(),
            expires_at: Some(timestamp(expires_at)),
            locale: locale.to_owned(),
        };
        match self.inner.notifier.clone().send_reset_code(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::ResourceExhausted => Err(Error::MailRateLimited),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "reset code mail not queued");
                Err(Error::MailUnavailable)
            }
        }
    }
}

fn keystore_error(status: tonic::Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::IllegalStep(
            "the setup key was reissued again since; view it with 現在のセットアップキーを表示する",
        ),
        Code::NotFound => Error::IllegalStep("this account has no setup key to reissue"),
        code => {
            tracing::warn!(code = ?code, "keystore RotateKey failed");
            Error::KeystoreUnavailable
        }
    }
}

fn stored_state(row: &ResetRow) -> Result<ResetState, Error> {
    ResetState::parse(&row.state).map_err(|e| Error::Internal(anyhow::anyhow!(e)))
}

fn effective(row: &ResetRow, now: i64, policy: &Policy) -> Result<ResetState, Error> {
    Ok(stored_state(row)?.effective(now, row.code_expires_at, row.verified_at, policy))
}

/// IPv6 clients are limited per /64, the block one subscriber usually holds.
fn rate_subject(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    let mut out = [0_u8; N];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut out)
        .map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    Ok(out)
}

fn new_code() -> Result<ConfirmationCode, Error> {
    let bytes = zeroize::Zeroizing::new(random_bytes::<64>()?);
    let draws = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    ConfirmationCode::from_draws(draws)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no usable random draw")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_share_a_limit_per_64() {
        assert_eq!(rate_subject("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            rate_subject("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn codes_come_from_the_os_rng() {
        let a = new_code().unwrap();
        assert_eq!(a.expose().len(), 6);
    }
}
