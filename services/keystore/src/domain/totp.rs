//! RFC 6238 codes and how a typed code is matched against the clock, with skew.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::{InvalidInput, KeyParams, SetupKeySecret};

/// A one-time password as typed by the user: only ASCII digits, of the key's length.
pub struct OneTimeCode(Zeroizing<String>);

impl fmt::Debug for OneTimeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneTimeCode(<redacted>)")
    }
}

impl OneTimeCode {
    /// A code as the user typed it into the login page, read as
    /// [`kagi_runtime::typed_digits`] reads every code: full-width digits (a Japanese IME)
    /// and spaces or hyphens between groups are the digits meant.
    ///
    /// # Errors
    /// [`InvalidInput::Code`] unless that leaves exactly `digits` ASCII digits.
    pub fn parse(raw: &str, digits: u32) -> Result<Self, InvalidInput> {
        let typed = Zeroizing::new(kagi_runtime::typed_digits(raw));
        if typed.len() != digits as usize || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::Code(digits));
        }
        Ok(Self(typed))
    }

    /// Shape check before the key (and so its digit count) is known: 6 to 8 digits, read
    /// as [`OneTimeCode::parse`] reads them.
    ///
    /// # Errors
    /// [`InvalidInput::Code`] for anything but 6–8 digits.
    pub fn check_shape(raw: &str) -> Result<(), InvalidInput> {
        let typed = Zeroizing::new(kagi_runtime::typed_digits(raw));
        if !(6..=8).contains(&typed.len()) || !typed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::Code(6));
        }
        Ok(())
    }
}

/// The code of `secret` for the time step containing `unix_secs` (RFC 6238).
pub fn code_at(secret: &SetupKeySecret, params: KeyParams, unix_secs: u64) -> Zeroizing<String> {
    Zeroizing::new(generator(secret, params).generate(unix_secs).to_string())
}

/// `params` are validated when keys are issued (6–8 digits, period ≥ 15 s), which is what
/// `build_noncompliant` needs to never panic; RFC 6238's vectors use 8-digit SHA256/512
/// seeds that `build` would also accept.
fn generator(secret: &SetupKeySecret, params: KeyParams) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_algorithm(params.algorithm.to_totp())
        .with_digits(u8::try_from(params.digits).unwrap_or(6))
        .with_step_duration(u64::from(params.period))
        .with_secret(secret.as_bytes().to_vec())
        .build_noncompliant()
}

/// A time step whose code equals the typed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeMatch {
    /// The absolute time step (Unix time / period).
    pub step: i64,
    /// `step` minus the server's current step: negative when the device runs behind.
    pub drift: i32,
}

/// Matches codes within ± `skew` steps of the server's clock.
#[derive(Debug, Clone, Copy)]
pub struct TotpVerifier {
    pub skew: u32,
}

impl TotpVerifier {
    /// Every step in the window whose code equals `code`, closest to the current step first.
    /// All steps are computed and compared in constant time, so the time taken does not
    /// depend on the code or on which step matched.
    pub fn matches(
        &self,
        secret: &SetupKeySecret,
        params: KeyParams,
        code: &OneTimeCode,
        unix_secs: u64,
    ) -> Vec<CodeMatch> {
        let now_step = i64::try_from(unix_secs / u64::from(params.period)).unwrap_or(i64::MAX);
        let skew = i64::from(self.skew);
        let generator = generator(secret, params);
        let mut found = Vec::new();
        for drift in -skew..=skew {
            let step = now_step + drift;
            let Ok(step_u) = u64::try_from(step) else {
                continue;
            };
            let expected = Zeroizing::new(
                generator
                    .generate(step_u * u64::from(params.period))
                    .to_string(),
            );
            if bool::from(expected.as_bytes().ct_eq(code.0.as_bytes())) {
                found.push(CodeMatch {
                    step,
                    drift: i32::try_from(drift).unwrap_or(0),
                });
            }
        }
        found.sort_by_key(|m| (m.drift.unsigned_abs(), -m.drift));
        found
    }
}

#[cfg(test)]
mod tests {
    use super::super::setup_key::Algorithm;
    use super::*;

    fn secret(bytes: &[u8]) -> SetupKeySecret {
        SetupKeySecret::from_bytes(Zeroizing::new(bytes.to_vec()))
    }

    /// RFC 6238 Appendix B. The seeds are the ASCII digits repeated to the hash's size:
    /// 20 bytes for SHA1, 32 for SHA256, 64 for SHA512.
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = secret(b"12345678901234567890");
        let sha256 = secret(b"12345678901234567890123456789012");
        let sha512 = secret(b"1234567890123456789012345678901234567890123456789012345678901234");
        let vectors: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        let params = |algorithm| KeyParams {
            algorithm,
            digits: 8,
            period: 30,
        };
        for (time, c1, c256, c512) in vectors {
            assert_eq!(
                code_at(&sha1, params(Algorithm::Sha1), time).as_str(),
                c1,
                "SHA1 at {time}"
            );
            assert_eq!(
                code_at(&sha256, params(Algorithm::Sha256), time).as_str(),
                c256,
                "SHA256 at {time}"
            );
            assert_eq!(
                code_at(&sha512, params(Algorithm::Sha512), time).as_str(),
                c512,
                "SHA512 at {time}"
            );
        }
    }

    #[test]
    fn codes_within_the_skew_match_and_report_their_drift() {
        let key = secret(b"12345678901234567890");
        let params = KeyParams::default();
        let verifier = TotpVerifier { skew: 1 };
        let now = 1_700_000_000;
        for (offset, drift) in [(-30_i64, -1), (0, 0), (30, 1)] {
            let at = u64::try_from(i64::try_from(now).unwrap() + offset).unwrap();
            let code = OneTimeCode::parse(&code_at(&key, params, at), 6).unwrap();
            let found = verifier.matches(&key, params, &code, now);
            assert_eq!(
                found.first().map(|m| m.drift),
                Some(drift),
                "offset {offset}"
            );
        }
        let late = OneTimeCode::parse(&code_at(&key, params, now - 60), 6).unwrap();
        assert!(verifier.matches(&key, params, &late, now).is_empty());
    }

    #[test]
    fn code_shape_is_checked() {
        assert!(OneTimeCode::parse("123456", 6).is_ok());
        // A Japanese IME's full-width digits and grouped codes are the digits meant.
        for typed in ["１２３４５６", "123 456", "１２３－４５６"] {
            assert!(OneTimeCode::parse(typed, 6).is_ok(), "{typed}");
        }
        for bad in ["12345", "1234567", "12345a", "+12345", "１２３４５", ""] {
            assert_eq!(
                OneTimeCode::parse(bad, 6).unwrap_err(),
                InvalidInput::Code(6),
                "{bad}"
            );
        }
    }
}
