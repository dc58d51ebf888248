//! The one account identifier every kagi service accepts, validated once at each edge.

use std::fmt;

/// A university account ID (e.g. an OMUID). Restricted to characters that are safe in an
/// otpauth label, a log line, a mail header and a SQL parameter alike; `:` is excluded
/// because it separates issuer and account in the otpauth label. Every service checks the
/// same rule, so an ID one service accepts is one the others accept too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

/// An account ID that breaks [`AccountId`]'s rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "account_id must be 1 to 64 characters of A-Z a-z 0-9 . _ @ - and start with a letter or digit"
)]
pub struct InvalidAccountId;

impl AccountId {
    pub const MAX_LEN: usize = 64;

    /// # Errors
    /// [`InvalidAccountId`] for an empty, overlong or oddly-charactered ID.
    pub fn parse(raw: &str) -> Result<Self, InvalidAccountId> {
        let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
        let starts_well = raw
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
        if raw.len() > Self::MAX_LEN || !starts_well || !raw.chars().all(valid_char) {
            return Err(InvalidAccountId);
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for AccountId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn university_ids_and_addresses_are_accepted() {
        for ok in [
            "s1234567",
            "taro.yamada",
            "a_b-c",
            "user@example.ac.jp",
            "A",
        ] {
            assert_eq!(AccountId::parse(ok).unwrap().as_str(), ok);
        }
        assert!(AccountId::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn anything_unsafe_in_a_label_a_header_or_a_log_is_refused() {
        for bad in [
            "",
            ".leading-dot",
            "-dash",
            "issuer:account",
            "with space",
            "new\nline",
            "日本語",
            "a/b",
            "<script>",
        ] {
            assert_eq!(AccountId::parse(bad), Err(InvalidAccountId), "{bad:?}");
        }
        assert!(AccountId::parse(&"a".repeat(65)).is_err());
    }
}
