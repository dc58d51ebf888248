//! The menu-2 reset's handle as the portal's database keeps it: sealed with AES-256-GCM
//! under a key derived from the session's cookie value (which only the browser holds; the
//! row is keyed by its hash), with the session's row ID bound as associated data. A copy of
//! the database reveals no reset in progress, a sealed handle copied into another session's
//! row does not open there, and a changed ciphertext is refused, never opened to garbage.
//! Pure: the nonce is passed in.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac as _;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Marks format version 2 (AES-256-GCM; version 1 was a hand-made keystream, no longer
/// opened: a reset sealed that way is simply started again).
const PREFIX: &str = "s2.";

/// Length of the AES-GCM nonce the caller draws from the OS RNG for each sealing.
pub const NONCE_LEN: usize = 12;

/// What the key derivation mixes in, so this key serves no other purpose.
const KEY_LABEL: &[u8] = b"kagi portal reset_id";

/// The cipher for the session whose cookie value is `cookie`: AES-256 under
/// HMAC-SHA256(cookie, label).
fn cipher(cookie: &str) -> Option<Aes256Gcm> {
    let mut mac = <HmacSha256 as hmac::KeyInit>::new_from_slice(cookie.as_bytes()).ok()?;
    mac.update(KEY_LABEL);
    Aes256Gcm::new_from_slice(&mac.finalize().into_bytes()).ok()
}

/// What the tag binds besides the handle: the session row it belongs to.
fn associated_data(row_id: &str) -> Vec<u8> {
    let mut aad = b"kagi portal session row\0".to_vec();
    aad.extend_from_slice(row_id.as_bytes());
    aad
}

/// Seals `handle` for the session row `row_id` whose cookie value is `cookie`, with a
/// fresh random `nonce` (never reuse one).
///
/// # Errors
/// Never in practice: AES-GCM refuses only absurdly long messages.
pub fn seal(
    cookie: &str,
    row_id: &str,
    handle: &str,
    nonce: [u8; NONCE_LEN],
) -> Result<String, SealError> {
    let cipher = cipher(cookie).ok_or(SealError)?;
    let aad = associated_data(row_id);
    let ciphertext = cipher
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: handle.as_bytes(),
                aad: &aad,
            },
        )
        .map_err(|_| SealError)?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(sealed)))
}

/// The handle [`seal`] sealed for this cookie and row; none for anything else (another
/// cookie, another row, a changed or truncated ciphertext, an older format).
pub fn open(cookie: &str, row_id: &str, sealed: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(sealed.strip_prefix(PREFIX)?).ok()?;
    let (nonce, ciphertext) = raw.split_at_checked(NONCE_LEN)?;
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    let aad = associated_data(row_id);
    let plain = cipher(cookie)?
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .ok()?;
    String::from_utf8(plain).ok()
}

/// Sealing failed (it does not, for handles of any sensible length).
#[derive(Debug, thiserror::Error)]
#[error("sealing the reset handle failed")]
pub struct SealError;

#[cfg(test)]
mod tests {
    use super::*;

    const COOKIE: &str = "cookie-value-only-the-browser-has";
    const ROW: &str = "row-hash-1";

    #[test]
    fn a_sealed_handle_opens_with_its_cookie_and_row_only() {
        let sealed = seal(COOKIE, ROW, "reset-handle", [7; NONCE_LEN]).unwrap();
        assert!(!sealed.contains("reset-handle"));
        assert_eq!(open(COOKIE, ROW, &sealed).as_deref(), Some("reset-handle"));
        assert_eq!(open("another-cookie", ROW, &sealed), None, "another cookie");
        assert_eq!(open(COOKIE, "row-hash-2", &sealed), None, "another row");
    }

    #[test]
    fn a_tampered_ciphertext_is_refused_not_opened_to_garbage() {
        let sealed = seal(COOKIE, ROW, "reset-handle", [7; NONCE_LEN]).unwrap();
        let mut raw = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(PREFIX).unwrap())
            .unwrap();
        // Flip one bit of the ciphertext: with a keystream XOR this would open to a
        // handle differing in one bit; AES-GCM's tag refuses it.
        raw[NONCE_LEN] ^= 1;
        let tampered = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(open(COOKIE, ROW, &tampered), None);
        // A cut-off tag, a changed nonce and plain garbage are refused too.
        let truncated = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw[..raw.len() - 1]));
        assert_eq!(open(COOKIE, ROW, &truncated), None);
        raw[NONCE_LEN] ^= 1;
        raw[0] ^= 1;
        let renonced = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw));
        assert_eq!(open(COOKIE, ROW, &renonced), None);
        assert_eq!(open(COOKIE, ROW, "s2.!!"), None);
        assert_eq!(open(COOKIE, ROW, "s1.AAAA"), None, "the old format");
    }

    #[test]
    fn each_sealing_differs_with_its_nonce() {
        let a = seal(COOKIE, ROW, "reset-handle", [1; NONCE_LEN]).unwrap();
        let b = seal(COOKIE, ROW, "reset-handle", [2; NONCE_LEN]).unwrap();
        assert_ne!(a, b);
        assert_eq!(open(COOKIE, ROW, &b).as_deref(), Some("reset-handle"));
    }
}
