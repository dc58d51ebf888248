//! Queued payloads sealed at rest: AES-256-GCM under a key read from a file, with the
//! delivery ID as associated data, so the code is never in the database in clear and a
//! sealed payload cannot be moved to another row.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

/// Marks a sealed payload (format version 1: base64 of nonce and ciphertext follows).
const PREFIX: &str = "sealed:v1:";

/// The key that seals and opens queued payloads.
pub struct PayloadSeal {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for PayloadSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PayloadSeal(..)")
    }
}

impl PayloadSeal {
    /// A seal from 32 raw key bytes.
    ///
    /// # Errors
    /// A key of another length.
    pub fn from_key(key: &[u8]) -> anyhow::Result<Self> {
        let cipher = Aes256Gcm::new_from_slice(key)
            .map_err(|_| anyhow::anyhow!("the payload key must be 32 bytes"))?;
        Ok(Self { cipher })
    }

    /// Reads the base64 key in `path`, or creates it (32 bytes from the OS RNG, created with
    /// mode 0600 from the start) when missing. Every replica sharing a queue needs the same
    /// file.
    ///
    /// # Errors
    /// An unreadable or unwritable file, bad base64 or a key of the wrong length.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        let encoded = kagi_runtime::random::read_or_create_secret_file(path, 32)?;
        let key = Zeroizing::new(
            STANDARD
                .decode(encoded.trim().as_bytes())
                .map_err(|_| anyhow::anyhow!("{} is not valid base64", path.display()))?,
        );
        Self::from_key(&key)
    }

    /// Seals `plain` for the row `delivery_id` with a fresh random nonce.
    ///
    /// # Errors
    /// The OS RNG failing.
    pub fn seal(&self, delivery_id: &str, plain: &[u8]) -> anyhow::Result<String> {
        let nonce: [u8; 12] = kagi_runtime::random::bytes()?;
        let aad = associated_data(delivery_id);
        let ciphertext = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("sealing the payload failed"))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(format!("{PREFIX}{}", STANDARD.encode(sealed)))
    }

    /// Opens what [`PayloadSeal::seal`] stored for `delivery_id`.
    ///
    /// # Errors
    /// Not a sealed payload, another key, another row, or altered bytes.
    pub fn open(&self, delivery_id: &str, stored: &str) -> anyhow::Result<Zeroizing<Vec<u8>>> {
        let encoded = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow::anyhow!("the payload is not sealed"))?;
        let sealed = STANDARD
            .decode(encoded.as_bytes())
            .map_err(|_| anyhow::anyhow!("the sealed payload is not valid base64"))?;
        anyhow::ensure!(sealed.len() > 12, "the sealed payload is truncated");
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into()?;
        let aad = associated_data(delivery_id);
        let plain = self
            .cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| anyhow::anyhow!("the sealed payload does not open for this delivery"))?;
        Ok(Zeroizing::new(plain))
    }
}

fn associated_data(delivery_id: &str) -> Vec<u8> {
    let mut aad = b"kagi-notifier payload v1\0".to_vec();
    aad.extend_from_slice(delivery_id.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal() -> PayloadSeal {
        PayloadSeal::from_key(&[7_u8; 32]).unwrap()
    }

    #[test]
    fn a_sealed_payload_opens_for_its_delivery_only() {
        let sealed = seal().seal("d-1", br#"{"code":"482915"}"#).unwrap();
        assert!(!sealed.contains("482915"));
        assert_eq!(
            seal().open("d-1", &sealed).unwrap().as_slice(),
            br#"{"code":"482915"}"#
        );
        assert!(seal().open("d-2", &sealed).is_err(), "moved to another row");
        let other = PayloadSeal::from_key(&[8_u8; 32]).unwrap();
        assert!(other.open("d-1", &sealed).is_err(), "another key");
        assert!(
            seal().open("d-1", r#"{"code":"482915"}"#).is_err(),
            "clear text"
        );
    }

    #[test]
    fn the_key_file_is_created_owner_only_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/payload-key");
        let first = PayloadSeal::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sealed = first.seal("d-1", b"payload").unwrap();
        let again = PayloadSeal::load_or_create(&path).unwrap();
        assert_eq!(again.open("d-1", &sealed).unwrap().as_slice(), b"payload");
    }
}
