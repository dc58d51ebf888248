//! "Check my authenticator": which time step a code the user's device shows now belongs
//! to, told as the manual's answers (ready, clock off by N, another key), and the
//! per-account allowance of such checks. A diagnosis, never a login: nothing here marks a
//! step used or counts a failure.

use std::time::Duration;

use super::{KeyParams, OneTimeCode, SetupKeySecret, TotpVerifier};

/// What a checked code says about the user's device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Diagnosis {
    /// The code matches a step inside the login window: logins will accept it.
    Ready { drift: i32 },
    /// The code matches a step outside the login window but inside the diagnosis window:
    /// the device holds the current key and its clock is `drift` steps off.
    ClockSkewed { drift: i32 },
    /// No step near now has this code: the device holds an old or another key.
    NoMatch,
}

/// The windows a check looks in: the login's (± `login_skew` steps, as `VerifyCode`) and
/// the wider one a clock can be diagnosed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthenticatorCheck {
    pub login_skew: u32,
    pub window: Duration,
}

impl AuthenticatorCheck {
    /// Diagnoses `code` at `unix_secs`. Every step of the diagnosis window is computed and
    /// compared in constant time ([`TotpVerifier::matches`]); the closest match to now
    /// decides, so a code valid for login is always `Ready`.
    pub fn diagnose(
        &self,
        secret: &SetupKeySecret,
        params: KeyParams,
        code: &OneTimeCode,
        unix_secs: u64,
    ) -> Diagnosis {
        let wide = TotpVerifier {
            skew: self.window_steps(params),
        };
        match wide.matches(secret, params, code, unix_secs).first() {
            Some(m) if m.drift.unsigned_abs() <= self.login_skew => {
                Diagnosis::Ready { drift: m.drift }
            }
            Some(m) => Diagnosis::ClockSkewed { drift: m.drift },
            None => Diagnosis::NoMatch,
        }
    }

    /// The diagnosis window in steps of `params.period`, never narrower than the login's.
    pub fn window_steps(&self, params: KeyParams) -> u32 {
        let steps = self.window.as_secs() / u64::from(params.period.max(1));
        u32::try_from(steps)
            .unwrap_or(u32::MAX)
            .max(self.login_skew)
    }
}

/// How many checks an account gets per window: its own allowance, apart from the login's
/// lockout, so diagnosing never locks a user out of logging in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckLimit {
    pub max: u32,
    pub window: Duration,
}

impl Default for CheckLimit {
    /// 5 checks an hour.
    fn default() -> Self {
        Self {
            max: 5,
            window: Duration::from_secs(3600),
        }
    }
}

impl CheckLimit {
    pub fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::super::totp::code_at;
    use super::*;

    const NOW: u64 = 1_700_000_010;

    fn check() -> AuthenticatorCheck {
        AuthenticatorCheck {
            login_skew: 1,
            window: Duration::from_secs(900),
        }
    }

    fn diagnose_offset(offset: i64) -> Diagnosis {
        let key = SetupKeySecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()));
        let params = KeyParams::default();
        let at = u64::try_from(i64::try_from(NOW).unwrap() + offset).unwrap();
        let code = OneTimeCode::parse(&code_at(&key, params, at), 6).unwrap();
        check().diagnose(&key, params, &code, NOW)
    }

    #[test]
    fn a_code_the_login_accepts_is_ready() {
        assert_eq!(diagnose_offset(0), Diagnosis::Ready { drift: 0 });
        assert_eq!(diagnose_offset(-30), Diagnosis::Ready { drift: -1 });
        assert_eq!(diagnose_offset(30), Diagnosis::Ready { drift: 1 });
    }

    #[test]
    fn a_clock_off_by_minutes_is_diagnosed_with_its_sign() {
        assert_eq!(diagnose_offset(120), Diagnosis::ClockSkewed { drift: 4 });
        assert_eq!(diagnose_offset(-600), Diagnosis::ClockSkewed { drift: -20 });
        assert_eq!(diagnose_offset(900), Diagnosis::ClockSkewed { drift: 30 });
    }

    #[test]
    fn beyond_the_diagnosis_window_nothing_matches() {
        assert_eq!(diagnose_offset(3600), Diagnosis::NoMatch);
        assert_eq!(diagnose_offset(-960), Diagnosis::NoMatch);
    }

    #[test]
    fn the_window_is_counted_in_the_keys_own_period() {
        let params = |period| KeyParams {
            period,
            ..KeyParams::default()
        };
        assert_eq!(check().window_steps(params(30)), 30);
        assert_eq!(check().window_steps(params(60)), 15);
        let narrow = AuthenticatorCheck {
            login_skew: 2,
            window: Duration::from_secs(30),
        };
        assert_eq!(
            narrow.window_steps(params(30)),
            2,
            "never below the login's"
        );
    }
}
