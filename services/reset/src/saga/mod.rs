//! The reissue saga: each use case of `kagi.v1.Reset`, over the directory, the store and
//! the two downstream services, one file per step of the manual's menu 2:
//!
//! - [`start`](ResetSaga::start) — "1. 二要素認証のリセット": password, new reset, first code mail;
//! - [`resend`](ResetSaga::resend) — "メールを再送信する": a new code, the old one dead;
//! - [`verify`](ResetSaga::verify) — "2. 再設定メールを送信" / "コードを確認する";
//! - [`confirm`](ResetSaga::confirm) — "3. 最終確認" → "4. リセット完了": the rotation and
//!   the notice;
//! - [`cancel`](ResetSaga::cancel) and [`get`](ResetSaga::get) — "最初からやり直す" and a
//!   page reload;
//! - [`sweep`](ResetSaga::sweep) — finishing what a crash or an outage interrupted;
//! - [`admin_resets`](ResetSaga::admin_resets), [`admin_cancel`](ResetSaga::admin_cancel),
//!   [`admin_notify`](ResetSaga::admin_notify) — the help desk's `kagi.v1.ResetAdmin`;
//! - [`notify_key_displayed`](ResetSaga::notify_key_displayed) — no reset step: the mail
//!   that the current key was displayed (menus 1 and 3), to the recovery address kept here.
//!
//! Every transition is written before its side effect, and every side effect is idempotent
//! downstream (the saga ID is the keystore's idempotency key and names each notifier
//! message), so retries and crashes rotate once and mail once per send.

mod admin;
mod cancel;
mod confirm;
mod displayed;
mod resend;
mod start;
mod sweep;
mod verify;

use std::net::IpAddr;
use std::sync::Arc;

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_runtime::Clock;
use secrecy::SecretString;
use tonic::Code;

use crate::directory::Directory;
use crate::domain::token::{saga_message_stem, saga_tag};
use crate::domain::{CodeHasher, ConfirmationCode, Policy, ResetState, ResetToken};
use crate::downstream::{KeystoreClient, NotifierClient};
use crate::error::Error;
use crate::limits::AttemptLimiter;
use crate::store::{Db, ResetRow};

pub use admin::{AccountResets, AdminActor, OperatorNotice};
pub use displayed::KeyDisplay;

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
    Verified {
        confirm_by: i64,
    },
    /// Not the current code. `replaced`: it is the code a resend replaced (the user typed
    /// the older mail's); it costs an attempt all the same.
    WrongCode {
        attempts_remaining: u32,
        replaced: bool,
    },
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
    limiter: AttemptLimiter,
    keystore: KeystoreClient,
    notifier: NotifierClient,
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
        limiter: AttemptLimiter,
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
                limiter,
                keystore,
                notifier,
            }),
        }
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The policy's numbers (the help desk shows attempts and resends left).
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// The reset behind a handle, its saga and account recorded on the current span.
    async fn load(&self, token: &ResetToken) -> Result<ResetRow, Error> {
        let row = self
            .inner
            .db
            .find_reset(&token.digest())
            .await?
            .ok_or(Error::UnknownReset)?;
        let span = tracing::Span::current();
        span.record("saga", saga_tag(&row.saga_id).as_str());
        span.record("account_id", row.account_id.as_str());
        Ok(row)
    }

    /// Hands code mail number `send` of a saga to the notifier (StartReset and ResendCode).
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
            message_id: format!("{}:code:{send}", saga_message_stem(saga_id)),
            recipient: recipient.to_owned(),
            account_id: account_id.to_owned(),
            code: code.expose().to_owned(),
            expires_at: Some(timestamp(expires_at)),
            locale: locale.to_owned(),
        };
        match self.inner.notifier.clone().send_reset_code(request).await {
            Ok(_) => {
                crate::metrics::code_mailed();
                Ok(())
            }
            Err(status) if status.code() == Code::ResourceExhausted => Err(Error::MailRateLimited),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "reset code mail not queued");
                Err(Error::MailUnavailable)
            }
        }
    }
}

/// What a reset's stored state means now (a code past its expiry is expired).
fn effective(row: &ResetRow, now: i64, policy: &Policy) -> ResetState {
    row.state
        .effective(now, row.code_expires_at, row.verified_at, policy)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], Error> {
    Ok(kagi_runtime::random::bytes().map_err(anyhow::Error::from)?)
}

/// A fresh confirmation code from the OS CSPRNG.
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
    use super::new_code;

    /// What a guesser would exploit: codes that repeat, or digit positions that favour
    /// some values. 3000 fresh codes: all 6 ASCII digits, almost all distinct (about 4.5
    /// collisions are expected among 10^6 values), and every digit at every position near
    /// its 300 expected draws (±90 is more than 5 standard deviations).
    #[test]
    fn codes_are_six_digits_spread_evenly_over_every_position() {
        const N: usize = 3000;
        let codes: Vec<String> = (0..N)
            .map(|_| new_code().unwrap().expose().to_owned())
            .collect();
        for code in &codes {
            assert_eq!(code.len(), 6, "{code:?}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code:?}");
        }
        let distinct: std::collections::HashSet<&String> = codes.iter().collect();
        assert!(distinct.len() >= N - 20, "only {} distinct", distinct.len());
        for position in 0..6 {
            let mut counts = [0_usize; 10];
            for code in &codes {
                counts[usize::from(code.as_bytes()[position] - b'0')] += 1;
            }
            for (digit, &n) in counts.iter().enumerate() {
                assert!(
                    (210..=390).contains(&n),
                    "digit {digit} at position {position}: {n} of {N} ({counts:?})"
                );
            }
        }
    }
}
