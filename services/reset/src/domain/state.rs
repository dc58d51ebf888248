//! Where a reset stands, and the policy knobs that bound each step.

use std::time::Duration;

/// The states of one reset. Live states (`CodeSent`, `Verified`, `Confirming`) are at most
/// one per account; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetState {
    CodeSent,
    Verified,
    Confirming,
    Completed,
    Cancelled,
    Expired,
    Locked,
    Superseded,
}

impl ResetState {
    /// Why a step other than the one a state expects is refused.
    pub fn refusal(self) -> crate::error::Refusal {
        use crate::error::Refusal;
        match self {
            Self::CodeSent => Refusal::NotVerified,
            Self::Verified => Refusal::AlreadyVerified,
            Self::Confirming => Refusal::Confirming,
            Self::Completed => Refusal::Completed,
            Self::Cancelled => Refusal::Cancelled,
            Self::Expired => Refusal::Expired,
            Self::Locked => Refusal::Locked,
            Self::Superseded => Refusal::Superseded,
        }
    }

    /// What a stored state means at `now_ms`: a code past its expiry or a verification past
    /// its confirmation window is expired even before anything wrote that down.
    pub fn effective(
        self,
        now_ms: i64,
        code_expires_at: i64,
        verified_at: Option<i64>,
        policy: &Policy,
    ) -> Self {
        match self {
            Self::CodeSent if now_ms >= code_expires_at => Self::Expired,
            Self::Verified
                if verified_at.is_some_and(|v| now_ms >= v + ms(policy.confirm_within)) =>
            {
                Self::Expired
            }
            other => other,
        }
    }
}

/// The manual's numbers, configurable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A code works this long after it is sent (manual: 30 minutes).
    pub code_ttl: Duration,
    /// "メールを再送信する" only this long after the last send (manual: 3 minutes).
    pub resend_after: Duration,
    /// Resends allowed per reset, after the first send.
    pub max_resends: u32,
    /// Wrong codes before the reset locks.
    pub max_wrong_codes: u32,
    /// ConfirmReset must follow the successful verify within this time.
    pub confirm_within: Duration,
    /// A completed reset shows its new key again (a retried ConfirmReset) this long.
    pub completed_view: Duration,
    /// A reset that is over (and its recovery address, client address and user agent) is
    /// deleted this long after its last change; zero keeps them.
    pub retention: Duration,
    /// Mail the account a notice on every display of its setup key (NotifyKeyDisplayed);
    /// off, the RPC queues nothing.
    pub notify_key_display: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            code_ttl: Duration::from_secs(30 * 60),
            resend_after: Duration::from_secs(3 * 60),
            max_resends: 5,
            max_wrong_codes: 5,
            confirm_within: Duration::from_secs(10 * 60),
            completed_view: Duration::from_secs(10 * 60),
            retention: Duration::from_secs(30 * 24 * 3600),
            notify_key_display: true,
        }
    }
}

/// A duration in the milliseconds kagi stores.
pub fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_expired_at_thirty_minutes_and_a_verification_at_ten() {
        let p = Policy::default();
        let sent = 1_000_000;
        let expires = sent + ms(p.code_ttl);
        assert_eq!(
            ResetState::CodeSent.effective(expires - 1, expires, None, &p),
            ResetState::CodeSent
        );
        assert_eq!(
            ResetState::CodeSent.effective(expires, expires, None, &p),
            ResetState::Expired
        );
        let verified = sent + 5_000;
        assert_eq!(
            ResetState::Verified.effective(verified + 599_999, expires, Some(verified), &p),
            ResetState::Verified
        );
        assert_eq!(
            ResetState::Verified.effective(verified + 600_000, expires, Some(verified), &p),
            ResetState::Expired
        );
    }
}
