//! Encryption at rest: every secret is sealed with AES-256-GCM under a key-encryption key
//! (KEK), with the account and key ID as associated data, so a ciphertext copied onto
//! another row fails to open. Several KEKs can be loaded at once: the active one seals,
//! any of them opens, which is what lets `rekey` run while the service serves.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

use crate::domain::{AccountId, SetupKeySecret};

/// A secret as stored: which KEK, the nonce and the ciphertext with its tag.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub kek_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("no key-encryption key with id {0:?} is loaded")]
    UnknownKek(String),
    #[error("a stored key failed authentication (wrong KEK, or the row was tampered with)")]
    Tampered,
    #[error("encryption failed")]
    Seal,
    #[error("key-encryption key {0:?} must be 32 bytes, base64-encoded")]
    BadKek(String),
    #[error("the active key-encryption key {0:?} is not among the loaded keys")]
    NoActiveKek(String),
}

/// The loaded KEKs and which one seals new secrets.
pub struct Keyring {
    active: String,
    ciphers: BTreeMap<String, Aes256Gcm>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("loaded", &self.ciphers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Keyring {
    /// `keys` maps KEK id → 32 raw bytes.
    ///
    /// # Errors
    /// A key of the wrong length, or `active` not among `keys`.
    pub fn new(
        active: &str,
        keys: BTreeMap<String, Zeroizing<Vec<u8>>>,
    ) -> Result<Self, CryptoError> {
        let mut ciphers = BTreeMap::new();
        for (id, bytes) in keys {
            let cipher =
                Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKek(id.clone()))?;
            ciphers.insert(id, cipher);
        }
        if !ciphers.contains_key(active) {
            return Err(CryptoError::NoActiveKek(active.to_owned()));
        }
        Ok(Self {
            active: active.to_owned(),
            ciphers,
        })
    }

    pub fn active_id(&self) -> &str {
        &self.active
    }

    /// Seals `secret` under the active KEK with a fresh random nonce.
    ///
    /// # Errors
    /// Only if the AEAD itself fails.
    pub fn seal(
        &self,
        account: &AccountId,
        key_id: &str,
        secret: &SetupKeySecret,
    ) -> Result<Sealed, CryptoError> {
        let cipher = self
            .ciphers
            .get(&self.active)
            .ok_or_else(|| CryptoError::UnknownKek(self.active.clone()))?;
        let nonce: [u8; 12] = kagi_runtime::random::bytes().map_err(|_| CryptoError::Seal)?;
        let aad = associated_data(account, key_id);
        let ciphertext = cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Seal)?;
        Ok(Sealed {
            kek_id: self.active.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed secret of `account`'s key `key_id`.
    ///
    /// # Errors
    /// An unknown KEK id, or a ciphertext that does not authenticate for this row.
    pub fn open(
        &self,
        account: &AccountId,
        key_id: &str,
        sealed: &Sealed,
    ) -> Result<SetupKeySecret, CryptoError> {
        let cipher = self
            .ciphers
            .get(&sealed.kek_id)
            .ok_or_else(|| CryptoError::UnknownKek(sealed.kek_id.clone()))?;
        let nonce: [u8; 12] = sealed
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Tampered)?;
        let aad = associated_data(account, key_id);
        let plain = cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| CryptoError::Tampered)?;
        Ok(SetupKeySecret::from_bytes(Zeroizing::new(plain)))
    }
}

fn associated_data(account: &AccountId, key_id: &str) -> Vec<u8> {
    format!("kagi.keystore.v1\0{account}\0{key_id}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring(active: &str) -> Keyring {
        let keys = [("k1", [1_u8; 32]), ("k2", [2_u8; 32])]
            .into_iter()
            .map(|(id, k)| (id.to_owned(), Zeroizing::new(k.to_vec())))
            .collect();
        Keyring::new(active, keys).unwrap()
    }

    fn secret() -> SetupKeySecret {
        SetupKeySecret::from_bytes(Zeroizing::new(b"12345678901234567890".to_vec()))
    }

    #[test]
    fn sealed_secrets_open_with_any_loaded_kek() {
        let account = AccountId::parse("taro").unwrap();
        let sealed = keyring("k1").seal(&account, "key-1", &secret()).unwrap();
        assert_eq!(sealed.kek_id, "k1");
        assert!(
            !sealed
                .ciphertext
                .windows(20)
                .any(|w| w == b"12345678901234567890")
        );
        let opened = keyring("k2").open(&account, "key-1", &sealed).unwrap();
        assert_eq!(opened.as_bytes(), b"12345678901234567890");
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_does_not_open() {
        let ring = keyring("k1");
        let taro = AccountId::parse("taro").unwrap();
        let hanako = AccountId::parse("hanako").unwrap();
        let sealed = ring.seal(&taro, "key-1", &secret()).unwrap();
        assert!(matches!(
            ring.open(&hanako, "key-1", &sealed),
            Err(CryptoError::Tampered)
        ));
        assert!(matches!(
            ring.open(&taro, "key-2", &sealed),
            Err(CryptoError::Tampered)
        ));
    }

    #[test]
    fn the_active_kek_must_be_loaded() {
        let keys = BTreeMap::from([("k1".to_owned(), Zeroizing::new(vec![0_u8; 32]))]);
        assert!(matches!(
            Keyring::new("k9", keys),
            Err(CryptoError::NoActiveKek(_))
        ));
        let short = BTreeMap::from([("k1".to_owned(), Zeroizing::new(vec![0_u8; 16]))]);
        assert!(matches!(
            Keyring::new("k1", short),
            Err(CryptoError::BadKek(_))
        ));
    }
}
