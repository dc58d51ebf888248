//! The reset handle (`reset_id`): a bearer secret given to the portal, stored only as its
//! SHA-256, so a copy of the database cannot drive anyone's reset.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::InvalidInput;

/// A reset handle as the portal holds it.
#[derive(Clone)]
pub struct ResetToken(Zeroizing<String>);

impl std::fmt::Debug for ResetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetToken(..)")
    }
}

impl ResetToken {
    /// Random bytes in a token: 256 bits.
    pub const BYTES: usize = 32;

    /// A token from `random` (32 bytes from the OS CSPRNG).
    pub fn from_random(random: &[u8; Self::BYTES]) -> Self {
        Self(Zeroizing::new(URL_SAFE_NO_PAD.encode(random)))
    }

    /// Checks the shape of a token a caller sent.
    ///
    /// # Errors
    /// [`InvalidInput::ResetId`] unless 43 base64url characters decoding to 32 bytes.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        let decoded = URL_SAFE_NO_PAD
            .decode(raw.as_bytes())
            .map_err(|_| InvalidInput::ResetId)?;
        if decoded.len() != Self::BYTES {
            return Err(InvalidInput::ResetId);
        }
        Ok(Self(Zeroizing::new(raw.to_owned())))
    }

    /// The string handed to the portal.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the database keys the reset by: hex SHA-256 of the token.
    pub fn digest(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// How a saga is named outside the database: in logs, spans and messages. The saga ID is
/// the keystore's idempotency key for the rotation, so a copy of it could replay the
/// rotation; this is the first 16 hex digits of its SHA-256, enough to tell sagas apart
/// and to find one (`resets` by `saga_id`, hashed the same way), useless for a replay.
pub fn saga_tag(saga_id: &str) -> String {
    let mut tag = saga_message_stem(saga_id);
    tag.truncate(16);
    tag
}

/// The stem of the notifier's message IDs for a saga's mails: the hex SHA-256 of the saga
/// ID, unique per saga, stable across retries (so the notifier deduplicates them), and no
/// use for replaying the rotation.
pub fn saga_message_stem(saga_id: &str) -> String {
    Sha256::digest(saga_id.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saga_is_named_by_a_hash_prefix_never_by_its_id() {
        let id = "0b6f3c1e-5a7d-4f62-9b1e-3c2d4e5f6a7b";
        let tag = saga_tag(id);
        assert_eq!(tag.len(), 16);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(saga_message_stem(id).starts_with(&tag));
        assert_eq!(saga_message_stem(id).len(), 64);
        assert!(!tag.contains("0b6f3c1e") && !saga_message_stem(id).contains("0b6f3c1e"));
        assert_ne!(saga_tag(id), saga_tag("another-saga"));
    }

    #[test]
    fn tokens_round_trip_and_odd_shapes_are_refused() {
        let token = ResetToken::from_random(&[7; 32]);
        assert_eq!(token.expose().len(), 43);
        let parsed = ResetToken::parse(token.expose()).unwrap();
        assert_eq!(parsed.digest(), token.digest());
        assert_eq!(token.digest().len(), 64);
        assert!(ResetToken::parse("short").is_err());
        assert!(ResetToken::parse(&"A".repeat(44)).is_err());
        assert_eq!(format!("{token:?}"), "ResetToken(..)");
    }
}
