//! How one SMTP attempt ended and what follows: sent, failed for good, or retried after an
//! exponential backoff with jitter while the mail is still useful.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How one SMTP attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The server accepted the message; its reply.
    Accepted(String),
    /// Worth trying again: connection refused, timeout, a 4xx reply.
    Transient(String),
    /// Will never work: a 5xx reply, or a message that cannot be built.
    Permanent(String),
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    MarkSent { reply: String },
    RetryAt { at: DateTime<Utc>, reply: String },
    MarkFailed { reply: String },
}

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `attempt`-th failure (1-based): `initial * 2^(attempt-1)`, capped at
    /// `max`, then scaled into `[1/2, 1)` of itself by `jitter` in `[0, 1)` so replicas retrying
    /// together spread out.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        base.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Decides the next step after the `attempt`-th attempt ended with `outcome` at `now`.
/// A transient failure is retried only if the retry would still happen before `not_after`.
pub fn next_step(
    outcome: AttemptOutcome,
    attempt: u32,
    now: DateTime<Utc>,
    not_after: DateTime<Utc>,
    backoff: Backoff,
    jitter: f64,
) -> NextStep {
    match outcome {
        AttemptOutcome::Accepted(reply) => NextStep::MarkSent { reply },
        AttemptOutcome::Permanent(reply) => NextStep::MarkFailed { reply },
        AttemptOutcome::Transient(reply) => {
            let wait = chrono::Duration::from_std(backoff.delay(attempt, jitter))
                .unwrap_or(chrono::Duration::MAX);
            match now.checked_add_signed(wait) {
                Some(at) if at < not_after => NextStep::RetryAt { at, reply },
                _ => NextStep::MarkFailed {
                    reply: format!("expired before delivery; last reply: {reply}"),
                },
            }
        }
    }
}

/// The reply recorded for a message that was never attempted because it expired first.
pub const EXPIRED_UNSENT: &str = "expired before delivery";

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 7, 8, 7, 15, 52).unwrap()
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert!(b.delay(3, 0.99) < Duration::from_secs(4));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn a_transient_failure_is_not_retried_past_the_expiry() {
        let b = Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let soon = now() + chrono::Duration::seconds(10);
        let step = next_step(
            AttemptOutcome::Transient("451 later".into()),
            1,
            now(),
            soon,
            b,
            0.5,
        );
        assert!(matches!(step, NextStep::MarkFailed { .. }));
        let later = now() + chrono::Duration::minutes(30);
        let step = next_step(
            AttemptOutcome::Transient("451 later".into()),
            1,
            now(),
            later,
            b,
            0.5,
        );
        assert!(matches!(step, NextStep::RetryAt { .. }));
    }
}
