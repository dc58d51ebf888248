//! Limits on attempts that cost a password check: StartReset and the portal's local login
//! each count per client IP and per account ID, on counters of their own, before any
//! argon2 work is spent on the caller. An attempt whose password was right is taken back
//! (failures are what the limits are for), and a refused one is never recorded.

use std::net::IpAddr;

use crate::error::Error;
use crate::store::{Db, RateOutcome};

/// An attempt the limits let through, recorded until it is refunded.
#[derive(Debug)]
#[must_use = "a successful attempt is refunded"]
pub struct Admission {
    attempt: String,
}

/// Per-account and per-IP limits on password-checking attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_account_max: u32,
    pub per_account_window_ms: i64,
    pub per_ip_max: u32,
    pub per_ip_window_ms: i64,
    /// Reissues an account may start per hour (each mails a code and up to `max_resends`
    /// more): what keeps the reset flow inside the notifier's per-recipient mail cap.
    pub starts_per_hour: u32,
}

/// The window of [`RateLimits::starts_per_hour`].
const HOUR_MS: i64 = 3_600_000;

/// Which attempts a limit counts: resets and portal logins have separate counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateScope {
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

/// The counters in the database and the limits they are held to.
#[derive(Debug, Clone)]
pub struct AttemptLimiter {
    db: Db,
    limits: RateLimits,
}

impl AttemptLimiter {
    pub fn new(db: Db, limits: RateLimits) -> Self {
        Self { db, limits }
    }

    /// Admits one attempt: the per-IP limit first (before any argon2 work is spent on the
    /// caller), then the per-account one. The [`Admission`] is handed back with
    /// [`AttemptLimiter::refund`] when the password was right: the limits count failures,
    /// so a user logging in and resetting many times is never locked out by success.
    ///
    /// # Errors
    /// [`Error::RateLimited`] (nothing recorded; with when to try again), storage failures.
    pub async fn admit(
        &self,
        scope: RateScope,
        client_ip: IpAddr,
        account_id: &str,
        now: i64,
    ) -> Result<Admission, Error> {
        let limits = self.limits;
        let (ip_scope, account_scope) = scope.names();
        let ip_subject = rate_subject(client_ip);
        let admission = Admission {
            attempt: uuid::Uuid::new_v4().to_string(),
        };
        let by_ip = self
            .db
            .rate_hit(
                ip_scope,
                &ip_subject,
                &admission.attempt,
                now,
                limits.per_ip_window_ms,
                limits.per_ip_max,
            )
            .await?;
        if let RateOutcome::Refused { retry_at } = by_ip {
            tracing::warn!(client_ip = %ip_subject, scope = ip_scope, "rate-limited by client IP");
            return Err(Error::RateLimited { retry_at });
        }
        let by_account = self
            .db
            .rate_hit(
                account_scope,
                account_id,
                &admission.attempt,
                now,
                limits.per_account_window_ms,
                limits.per_account_max,
            )
            .await?;
        if let RateOutcome::Refused { retry_at } = by_account {
            tracing::warn!(scope = account_scope, "rate-limited by account");
            // The address's row goes too: a refused attempt is not counted anywhere.
            self.db.rate_refund(&admission.attempt).await?;
            return Err(Error::RateLimited { retry_at });
        }
        Ok(admission)
    }

    /// Admits one more reissue for `account_id` (its password already checked) when fewer
    /// than `starts_per_hour` began in the last hour: each mails codes, and the mails a
    /// user can cause must stay within the notifier's hourly cap, so the refusal the user
    /// meets is this one, saying when, instead of a mail that never comes.
    ///
    /// # Errors
    /// [`Error::TooManyStarts`] (with when to try again), storage failures.
    pub async fn admit_start(&self, account_id: &str, now: i64) -> Result<(), Error> {
        let attempt = uuid::Uuid::new_v4().to_string();
        let outcome = self
            .db
            .rate_hit(
                "start",
                account_id,
                &attempt,
                now,
                HOUR_MS,
                self.limits.starts_per_hour,
            )
            .await?;
        if let RateOutcome::Refused { retry_at } = outcome {
            tracing::warn!("reissue refused: too many started this hour");
            return Err(Error::TooManyStarts { retry_at });
        }
        Ok(())
    }

    /// Takes an admitted attempt back: the password was right.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn refund(&self, admission: Admission) -> Result<(), Error> {
        self.db.rate_refund(&admission.attempt).await?;
        Ok(())
    }

    /// Forgets attempts older than every window.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn prune(&self, now: i64) -> Result<(), Error> {
        let limits = self.limits;
        let oldest = now
            - limits
                .per_ip_window_ms
                .max(limits.per_account_window_ms)
                .max(HOUR_MS);
        self.db.prune_rate_events(oldest).await?;
        Ok(())
    }
}

/// IPv6 clients are limited per /64, the block one subscriber usually holds. An IPv4
/// client reaching a dual-stack listener arrives as `::ffff:a.b.c.d`: it is counted as the
/// IPv4 address it is, not in the one /64 every IPv4 client would then share.
fn rate_subject(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::rate_subject;

    #[test]
    fn ipv6_clients_share_a_limit_per_64() {
        assert_eq!(rate_subject("192.0.2.7".parse().unwrap()), "192.0.2.7");
        assert_eq!(
            rate_subject("2001:db8:1:2:aaaa::1".parse().unwrap()),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn ipv4_clients_of_a_dual_stack_listener_are_limited_per_ipv4_address() {
        let mapped = |s: &str| rate_subject(s.parse().unwrap());
        assert_eq!(mapped("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(mapped("::ffff:198.51.100.9"), "198.51.100.9");
        assert_ne!(mapped("::ffff:192.0.2.7"), mapped("::ffff:192.0.2.8"));
        assert_eq!(mapped("::ffff:192.0.2.7"), mapped("192.0.2.7"));
    }
}
