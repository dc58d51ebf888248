//! Identifiers that arrive from callers, validated once at the edge.

use std::fmt;

use super::InvalidInput;

/// A university account ID (e.g. an OMUID). Restricted to characters that are safe in an
/// otpauth label, a log line and a SQL parameter alike; `:` is excluded because it separates
/// issuer and account in the otpauth label.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountId(String);

impl AccountId {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// [`InvalidInput::AccountId`] for an empty, overlong or oddly-charactered ID.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        let starts_well = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if raw.len() > Self::MAX_LEN || !starts_well || !raw.chars().all(valid_char) {
            return Err(InvalidInput::AccountId);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The caller's name for one logical rotation; a retry with the same key rotates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// # Errors
    /// [`InvalidInput::IdempotencyKey`] unless 1–128 printable ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.is_empty() || raw.len() > 128 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidInput::IdempotencyKey);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn university_ids_are_accepted() {
        for id in [
            "a12345b",
            "taro.yamada",
            "s_2024-001",
            "user@omu.ac.jp",
            "X",
        ] {
            assert!(AccountId::parse(id).is_ok(), "{id}");
        }
    }

    #[test]
    fn malformed_ids_are_refused() {
        let long = "a".repeat(65);
        for id in [
            "",
            " a",
            "-lead",
            "a:b",
            "a/b",
            "名前",
            "a b",
            "a\n",
            long.as_str(),
        ] {
            assert_eq!(AccountId::parse(id), Err(InvalidInput::AccountId), "{id:?}");
        }
    }

    #[test]
    fn idempotency_keys_are_printable_ascii() {
        assert!(IdempotencyKey::parse("reset-3f2a").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a b").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
    }
}
