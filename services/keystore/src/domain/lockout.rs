//! Brute-force protection: consecutive failures lock verification for a while, longer for
//! each repeated lockout.

use std::time::Duration;

/// The persisted counters of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LockState {
    /// Failures since the last success or lockout.
    pub failures: u32,
    /// Lockouts since the last success: each doubles the next one.
    pub lockouts: u32,
    /// Unix milliseconds until which verification is refused.
    pub locked_until_ms: Option<i64>,
}

impl LockState {
    pub fn is_locked(&self, now_ms: i64) -> bool {
        self.locked_until_ms.is_some_and(|until| until > now_ms)
    }
}

/// How many failures lock an account, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    pub max_failures: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures lock for 5 minutes, doubling per repeat, at most a day.
    fn default() -> Self {
        Self {
            max_failures: 5,
            base: Duration::from_secs(300),
            max: Duration::from_secs(86_400),
        }
    }
}

impl LockoutPolicy {
    /// The state after one more failure at `now_ms`.
    pub fn after_failure(&self, state: LockState, now_ms: i64) -> LockState {
        let failures = state.failures + 1;
        if failures < self.max_failures {
            return LockState { failures, ..state };
        }
        let factor = 1_u32.checked_shl(state.lockouts).unwrap_or(u32::MAX);
        let lock = self.base.saturating_mul(factor).min(self.max);
        let lock_ms = i64::try_from(lock.as_millis()).unwrap_or(i64::MAX);
        LockState {
            failures: 0,
            lockouts: state.lockouts + 1,
            locked_until_ms: Some(now_ms.saturating_add(lock_ms)),
        }
    }

    /// Failures left before the next lockout.
    pub fn remaining(&self, state: LockState) -> u32 {
        self.max_failures.saturating_sub(state.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fifth_failure_locks_for_five_minutes() {
        let policy = LockoutPolicy::default();
        let mut state = LockState::default();
        for _ in 0..4 {
            state = policy.after_failure(state, 0);
            assert!(!state.is_locked(0));
        }
        assert_eq!(policy.remaining(state), 1);
        state = policy.after_failure(state, 1_000);
        assert_eq!(state.locked_until_ms, Some(1_000 + 300_000));
        assert!(state.is_locked(300_999));
        assert!(!state.is_locked(301_000));
    }

    #[test]
    fn repeat_offenders_wait_longer_up_to_a_day() {
        let policy = LockoutPolicy::default();
        let mut state = LockState::default();
        let mut locks = Vec::new();
        for _ in 0..10 {
            for _ in 0..5 {
                state = policy.after_failure(state, 0);
            }
            locks.push(state.locked_until_ms.unwrap() / 1000);
        }
        assert_eq!(&locks[..4], &[300, 600, 1200, 2400]);
        assert_eq!(*locks.last().unwrap(), 86_400);
    }
}
