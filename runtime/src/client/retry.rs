//! Retrying idempotent calls. Only the caller knows whether a call may run twice (RotateKey
//! carries an idempotency key, SendResetCode a message ID, GetCurrentKey only reads), so
//! the channel never retries by itself: the caller wraps such calls in [`Retry::idempotent`].
//!
//! Only `UNAVAILABLE` is retried: the callee was unreachable or is shutting down, the call
//! most likely never ran, and another replica or a reconnect may take it. Every other code
//! is an answer and is returned as is.

use std::future::Future;
use std::time::Duration;

/// How many extra attempts an idempotent call gets, with a short doubling pause between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    retries: u32,
    first_pause: Duration,
}

impl Retry {
    /// `retries` extra attempts, pausing 50 ms, 100 ms, 200 ms, … between them.
    pub fn new(retries: u32) -> Self {
        Self {
            retries,
            first_pause: Duration::from_millis(50),
        }
    }

    /// Never retry.
    pub fn none() -> Self {
        Self::new(0)
    }

    /// Runs `call`, again on `UNAVAILABLE` up to the configured number of times.
    ///
    /// # Errors
    /// The last attempt's status.
    pub async fn idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let mut pause = self.first_pause;
        let mut attempt = 0;
        loop {
            match call().await {
                Err(status)
                    if status.code() == tonic::Code::Unavailable && attempt < self.retries =>
                {
                    attempt += 1;
                    tracing::debug!(attempt, "retrying an idempotent call after UNAVAILABLE");
                    tokio::time::sleep(pause).await;
                    pause = pause.saturating_mul(2);
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn unavailable_is_retried_and_other_codes_are_answers() {
        let calls = AtomicU32::new(0);
        let result = Retry::new(2)
            .idempotent(|| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(tonic::Status::unavailable("down"))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(result.unwrap(), 2);

        calls.store(0, Ordering::SeqCst);
        let refused: Result<(), _> = Retry::new(5)
            .idempotent(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(tonic::Status::permission_denied("no")) }
            })
            .await;
        assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_after_the_configured_count() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = Retry::new(1)
            .idempotent(|| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err(tonic::Status::unavailable("down")) }
            })
            .await;
        assert_eq!(result.unwrap_err().code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
