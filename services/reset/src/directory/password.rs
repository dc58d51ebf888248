//! argon2id password hashing at production strength, off the async runtime.

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// argon2id cost. The defaults are OWASP's minimum for argon2id (19 MiB, 2 passes, 1 lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Hashes new passwords and verifies presented ones; holds a dummy hash made with the same
/// parameters, verified when there is no real one so every answer costs the same.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy: String,
}

impl PasswordHasher {
    /// # Errors
    /// Parameters argon2 refuses.
    pub fn new(params: PasswordParams) -> anyhow::Result<Self> {
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let dummy = hash_with(&params, b"kagi-reset dummy password")?;
        Ok(Self { params, dummy })
    }

    /// A PHC string for `password`, with a fresh random salt. Blocking: call from
    /// `spawn_blocking` on a runtime.
    ///
    /// # Errors
    /// OS RNG failure.
    pub fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        hash_with(&self.params, password.expose_secret().as_bytes())
    }

    /// True when `password` matches `stored`; with `stored` `None`, verifies against the
    /// dummy hash and returns false. Blocking, like [`PasswordHasher::hash`].
    pub fn verify(&self, password: &SecretString, stored: Option<&str>) -> bool {
        let (phc, real) = match stored {
            Some(s) => (s, true),
            None => (self.dummy.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(phc) else {
            // A corrupt stored hash: still spend the time, then refuse.
            let _ = self.verify(password, None);
            return false;
        };
        let ok = argon2(&self.params)
            .verify_password(password.expose_secret().as_bytes(), &parsed)
            .is_ok();
        ok && real
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn hash_with(params: &Params, password: &[u8]) -> anyhow::Result<String> {
    let salt: [u8; 16] = kagi_runtime::random::bytes()?;
    let hash = argon2(params)
        .hash_password_with_salt(password, &salt)
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::new(PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
    }

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = cheap();
        let stored = h.hash(&SecretString::from("correct horse")).unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
        assert!(h.verify(&SecretString::from("correct horse"), Some(&stored)));
        assert!(!h.verify(&SecretString::from("wrong"), Some(&stored)));
        assert!(!h.verify(&SecretString::from("kagi-reset dummy password"), None));
        assert!(!h.verify(&SecretString::from("x"), Some("not a phc string")));
    }

    #[test]
    fn defaults_are_owasp_strength() {
        let p = PasswordParams::default();
        assert!(p.memory_kib >= 19_456 && p.iterations >= 2);
    }
}
