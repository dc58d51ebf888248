//! argon2id password hashing at production strength, off the async runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// How many hashes may run at once; each holds `memory_kib` of memory, so a flood of
    /// password attempts queues here instead of exhausting the machine's memory.
    pub max_concurrent: u32,
}

impl Default for PasswordParams {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
            max_concurrent: 4,
        }
    }
}

/// Hashes new passwords and verifies presented ones; holds a dummy hash made with the same
/// parameters, verified when there is no real one so every answer costs the same.
#[derive(Debug, Clone)]
pub struct PasswordHasher {
    params: Params,
    dummy: String,
    /// One permit per hash allowed to run ([`PasswordParams::max_concurrent`]).
    permits: Arc<tokio::sync::Semaphore>,
    /// argon2id verifications run so far ([`PasswordHasher::verifications`]).
    verifications: Arc<AtomicU64>,
}

impl PasswordHasher {
    /// # Errors
    /// Parameters argon2 refuses.
    pub fn new(params: PasswordParams) -> anyhow::Result<Self> {
        let permits = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(params.max_concurrent.max(1)).unwrap_or(1),
        ));
        let params = Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| anyhow::anyhow!("invalid argon2 parameters: {e}"))?;
        let dummy = hash_with(&params, b"kagi-reset dummy password")?;
        Ok(Self {
            params,
            dummy,
            permits,
            verifications: Arc::default(),
        })
    }

    /// [`PasswordHasher::verify`] on the blocking pool, waiting for a permit first.
    ///
    /// # Errors
    /// The blocking task failed.
    pub async fn verify_gated(
        self: &Arc<Self>,
        password: SecretString,
        stored: Option<String>,
    ) -> anyhow::Result<bool> {
        self.gated(move |h| Ok(h.verify(&password, stored.as_deref())))
            .await
    }

    /// [`PasswordHasher::hash`] on the blocking pool, waiting for a permit first.
    ///
    /// # Errors
    /// OS RNG failure, or the blocking task failed.
    pub async fn hash_gated(self: &Arc<Self>, password: SecretString) -> anyhow::Result<String> {
        self.gated(move |h| h.hash(&password)).await
    }

    /// Runs one argon2id computation off the async runtime, at most `max_concurrent` at
    /// once, in the caller's span. The permit moves into the blocking task, so a caller
    /// that goes away does not free it while the hash still holds its memory.
    async fn gated<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Self) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let permit = Arc::clone(&self.permits).acquire_owned().await?;
        let hasher = Arc::clone(self);
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _in_flight = crate::metrics::hashing();
            let _entered = span.enter();
            work(&hasher)
        })
        .await?
    }

    /// A PHC string for `password`, with a fresh random salt. Blocking: call from
    /// `spawn_blocking` on a runtime.
    ///
    /// # Errors
    /// OS RNG failure.
    pub fn hash(&self, password: &SecretString) -> anyhow::Result<String> {
        hash_with(&self.params, password.expose_secret().as_bytes())
    }

    /// How many argon2id verifications this hasher (and its clones) computed: what an
    /// answer costs, counted rather than timed, so a test can show that every refusal
    /// costs exactly what an accepted password does, however loaded the machine.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
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
        self.verifications.fetch_add(1, Ordering::Relaxed);
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
            max_concurrent: 2,
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

    /// Unknown and disabled accounts are checked against the dummy: it must cost what a
    /// stored hash costs, i.e. carry the same argon2id parameters (verification takes
    /// them from the PHC string, not from the hasher).
    #[test]
    fn the_dummy_hash_costs_what_a_stored_one_does() {
        let h = cheap();
        let stored = h.hash(&SecretString::from("correct horse")).unwrap();
        let params = |phc: &str| phc.split('$').nth(3).map(str::to_owned);
        assert_eq!(params(&stored).as_deref(), Some("m=64,t=1,p=1"));
        assert_eq!(params(&h.dummy), params(&stored));
    }

    /// Right, wrong, absent and corrupt stored hashes: one argon2id verification each.
    #[test]
    fn every_verification_is_counted_once() {
        let h = cheap();
        let stored = h.hash(&SecretString::from("correct horse")).unwrap();
        assert_eq!(h.verifications(), 0, "hashing is not verifying");
        let pw = |p: &str| SecretString::from(p.to_owned());
        assert!(h.verify(&pw("correct horse"), Some(&stored)));
        assert!(!h.verify(&pw("wrong"), Some(&stored)));
        assert!(!h.verify(&pw("correct horse"), None));
        assert!(!h.verify(&pw("correct horse"), Some("not a phc string")));
        assert_eq!(h.verifications(), 4);
    }

    /// Eight hashes asked for at once with two permits: never more than two run together.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_more_hashes_run_at_once_than_the_setting_allows() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let h = Arc::new(cheap());
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (h, running, most) = (Arc::clone(&h), running.clone(), most.clone());
                tokio::spawn(async move {
                    h.gated(move |_| {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
                    .unwrap();
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(most.load(Ordering::SeqCst) <= 2, "{most:?} ran at once");
        assert_eq!(h.permits.available_permits(), 2);
        let stored = h.hash_gated(SecretString::from("pw")).await.unwrap();
        assert!(
            h.verify_gated(SecretString::from("pw"), Some(stored))
                .await
                .unwrap()
        );
    }

    #[test]
    fn defaults_are_owasp_strength() {
        let p = PasswordParams::default();
        assert!(p.memory_kib >= 19_456 && p.iterations >= 2);
    }
}
