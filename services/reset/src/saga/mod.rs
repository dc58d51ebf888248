//! The reissue saga: each use case of `kagi.v1.Reset`, over the directory, the store and
//! the two downstream services. Every transition is written before its side effect, and
//! every side effect is idempotent downstream (the saga ID is the keystore's idempotency
//! key and names each notifier message), so retries and crashes rotate once and mail once
//! per send.

mod finish;
mod start;

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
