//! The reset's confirmation code: validated, hidden from `Debug`, wiped on drop.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::InvalidInput;

/// The 6-digit confirmation code of a reset. A secret: `Debug` hides it, memory is wiped on
/// drop, and it is only exposed to the template that puts it in the mail.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ConfirmationCode(String);

impl ConfirmationCode {
    /// Accepts a code as the reset service generated it.
    ///
    /// # Errors
    /// [`InvalidInput::Code`] unless `raw` is exactly six ASCII digits.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::Code)
        }
    }

    /// The digits, for the template that puts them in the mail and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConfirmationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmationCode(******)")
    }
}

impl Serialize for ConfirmationCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConfirmationCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_never_shows_in_debug_output() {
        let code = ConfirmationCode::parse("987654").unwrap();
        assert!(!format!("{code:?}").contains("987654"));
    }
}
