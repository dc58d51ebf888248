//! Limits on attempts that cost a password check: StartReset and the portal's local login
//! each count per client IP and per account ID, on counters of their own, before any
//! argon2 work is spent on the caller.

use std::net::IpAddr;

use crate::error::Error;
use crate::store::Db;

/// Per-account and per-IP limits on password-checking attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    pub per_account_max: u32,
    pub per_account_window_ms: i64,
    pub per_ip_max: u32,
    pub per_ip_window_ms: i64,
}

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

    /// Counts one attempt against the per-IP limit first (before any argon2 work is spent
    /// on the caller), then the per-account one.
    ///
    /// # Errors
    /// [`Error::RateLimited`], storage failures.
    pub async fn admit(
        &self,
        scope: RateScope,
        client_ip: IpAddr,
        account_id: &str,
        now: i64,
    ) -> Result<(), Error> {
        let limits = self.limits;
        let (ip_scope, account_scope) = scope.names();
        let ip_subject = rate_subject(client_ip);
        if !self
            .db
            .rate_hit(
                ip_scope,
                &ip_subject,
                now,
                limits.per_ip_window_ms,
                limits.per_ip_max,
            )
            .await?
        {
            tracing::warn!(client_ip = %ip_subject, scope = ip_scope, "rate-limited by client IP");
            return Err(Error::RateLimited);
        }
        if !self
            .db
            .rate_hit(
                account_scope,
                account_id,
                now,
                limits.per_account_window_ms,
                limits.per_account_max,
            )
            .await?
        {
            tracing::warn!(scope = account_scope, "rate-limited by account");
            return Err(Error::RateLimited);
        }
        Ok(())
    }

    /// Forgets attempts older than every window.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn prune(&self, now: i64) -> Result<(), Error> {
        let limits = self.limits;
        let oldest = now - limits.per_ip_window_ms.max(limits.per_account_window_ms);
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
