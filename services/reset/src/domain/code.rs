//! The 6-digit confirmation code: drawn uniformly from the OS CSPRNG, mailed once, stored
//! only as a keyed hash bound to its reset, and compared in constant time.

use hmac::{KeyInit as _, Mac as _};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::InvalidInput;

type HmacSha256 = hmac::Hmac<Sha256>;

/// A code in plaintext: lives only between generation and the notifier call, or between
/// the request and the comparison.
pub struct ConfirmationCode(Zeroizing<String>);

impl std::fmt::Debug for ConfirmationCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmationCode(..)")
    }
}

/// Largest multiple of 10^6 that fits in a u32: draws at or above it are rejected, so every
/// code is equally likely.
const LIMIT: u32 = 4_294_000_000;

impl ConfirmationCode {
    /// A uniformly distributed code from random `draws` (the OS CSPRNG in production), by
    /// rejection sampling; `None` if every draw was rejected (each is, with p < 0.0002).
    pub fn from_draws(draws: impl IntoIterator<Item = u32>) -> Option<Self> {
        draws
            .into_iter()
            .find(|d| *d < LIMIT)
            .map(|d| Self(Zeroizing::new(format!("{:06}", d % 1_000_000))))
    }

    /// A code the user typed, read as [`kagi_runtime::typed_digits`] reads every code:
    /// full-width digits (a Japanese IME) and spaces or hyphens between groups are fine.
    ///
    /// # Errors
    /// [`InvalidInput::Code`] unless that leaves exactly 6 ASCII digits.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let digits = Zeroizing::new(kagi_runtime::typed_digits(raw));
        if digits.len() != 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidInput::Code);
        }
        Ok(Self(digits))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// HMAC-SHA256 under a service key, over the saga ID and the code: a stolen database
/// cannot be brute-forced offline without the key, and a hash cannot be moved to another
/// reset.
pub struct CodeHasher {
    key: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher(..)")
    }
}

impl CodeHasher {
    /// # Errors
    /// A key shorter than 16 bytes.
    pub fn new(key: Zeroizing<Vec<u8>>) -> Result<Self, &'static str> {
        if key.len() < 16 {
            return Err("the code HMAC key must be at least 16 bytes");
        }
        Ok(Self { key })
    }

    fn mac(&self, saga_id: &str, code: &ConfirmationCode) -> HmacSha256 {
        // HMAC accepts keys of any length; the fallback is unreachable.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| HmacSha256::new(&Default::default()));
        mac.update(saga_id.as_bytes());
        mac.update(b"\0");
        mac.update(code.expose().as_bytes());
        mac
    }

    /// The stored form of `code` for the reset `saga_id`.
    pub fn hash(&self, saga_id: &str, code: &ConfirmationCode) -> Vec<u8> {
        self.mac(saga_id, code).finalize().into_bytes().to_vec()
    }

    /// True when `code` is the one stored as `expected`, compared in constant time.
    pub fn matches(&self, saga_id: &str, code: &ConfirmationCode, expected: &[u8]) -> bool {
        self.mac(saga_id, code).verify_slice(expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> CodeHasher {
        CodeHasher::new(Zeroizing::new(vec![3; 32])).unwrap()
    }

    #[test]
    fn codes_are_six_digits_and_biased_draws_are_rejected() {
        let code = ConfirmationCode::from_draws([u32::MAX, LIMIT, 123]).unwrap();
        assert_eq!(code.expose(), "000123");
        let code = ConfirmationCode::from_draws([LIMIT - 1]).unwrap();
        assert_eq!(code.expose(), "999999");
        assert!(ConfirmationCode::from_draws([LIMIT, u32::MAX]).is_none());
    }

    #[test]
    fn a_hash_matches_only_its_code_and_its_reset() {
        let h = hasher();
        let code = ConfirmationCode::parse("482913").unwrap();
        let stored = h.hash("saga-1", &code);
        assert!(h.matches("saga-1", &code, &stored));
        assert!(!h.matches("saga-2", &code, &stored));
        assert!(!h.matches(
            "saga-1",
            &ConfirmationCode::parse("482914").unwrap(),
            &stored
        ));
        assert!(!stored.windows(6).any(|w| w == b"482913"));
    }

    #[test]
    fn typed_codes_must_be_six_ascii_digits() {
        assert!(ConfirmationCode::parse("12345").is_err());
        assert!(ConfirmationCode::parse("1234567").is_err());
        assert!(ConfirmationCode::parse("12345a").is_err());
        assert!(ConfirmationCode::parse("１２３４５").is_err());
        assert!(ConfirmationCode::parse("12 34 5a").is_err());
        // A Japanese IME's full-width digits, grouped as a phone shows them: the same code.
        assert_eq!(
            ConfirmationCode::parse("１２３ ４５６").unwrap().expose(),
            "123456"
        );
        assert_eq!(
            ConfirmationCode::parse("123-456").unwrap().expose(),
            "123456"
        );
        assert!(CodeHasher::new(Zeroizing::new(vec![1; 8])).is_err());
    }
}
