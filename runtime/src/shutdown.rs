//! Graceful shutdown, the same in every service: one signal (SIGTERM, Ctrl-C or a test's
//! trigger) seen by the server and every background loop; in-flight work gets a grace
//! period; background loops finish the round they are in instead of being aborted mid-write.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C, shutting down"),
        () = term => tracing::info!("received SIGTERM, shutting down"),
    }
}

/// Whether shutdown has begun; cheap to clone, one per server or loop that must stop.
#[derive(Debug, Clone)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Begins when `trigger` resolves (see [`signal`]).
    pub fn on(trigger: impl Future<Output = ()> + Send + 'static) -> Self {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                () = trigger => { let _ = tx.send(true); }
                // Everyone listening is gone: nothing left to stop.
                () = tx.closed() => {}
            }
        });
        Self(rx)
    }

    /// A shutdown that begins only through [`Trigger::stop`] (or when the trigger is dropped).
    pub fn manual() -> (Trigger, Self) {
        let (tx, rx) = watch::channel(false);
        (Trigger(tx), Self(rx))
    }

    pub fn has_begun(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun.
    pub async fn begun(mut self) {
        // An error means the sender is gone, which also means: stop.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Starts a [`Stopping::manual`] shutdown; dropping it starts it too.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

impl Trigger {
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Runs `serving` (which should itself stop taking new work once `stopping` begins) and
/// gives it `grace` to finish what is in flight after that. `None` when the grace ran out.
pub async fn with_grace<T>(
    serving: impl Future<Output = T>,
    stopping: Stopping,
    grace: Duration,
    what: &'static str,
) -> Option<T> {
    tokio::select! {
        result = serving => Some(result),
        () = async { stopping.begun().await; tokio::time::sleep(grace).await } => {
            tracing::warn!(grace_secs = grace.as_secs(), "{what} outlived the grace period");
            None
        }
    }
}

/// A service's background loops (the reset sweeper, the portal's purge, ...). Each round
/// runs to its end; between rounds a loop notices shutdown and returns.
#[derive(Debug)]
pub struct BackgroundTasks {
    stopping: Stopping,
    running: Vec<(&'static str, JoinHandle<()>)>,
}

impl BackgroundTasks {
    pub fn new(stopping: Stopping) -> Self {
        Self {
            stopping,
            running: Vec::new(),
        }
    }

    /// Runs `round` now and then every `period` until shutdown begins.
    pub fn every<F, Fut>(&mut self, name: &'static str, period: Duration, mut round: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        let handle = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = stopping.clone().begun() => break,
                    _ = ticks.tick() => round().await,
                }
            }
            tracing::debug!(task = name, "background task stopped");
        });
        self.running.push((name, handle));
    }

    /// Waits for every loop to finish its round and return, up to `grace`; a loop still
    /// running then is aborted (and said so). Call it after shutdown has begun.
    pub async fn join(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut handle) in self.running {
            if tokio::time::timeout_at(deadline, &mut handle)
                .await
                .is_err()
            {
                tracing::warn!(
                    task = name,
                    "background task outlived the grace period; aborted"
                );
                handle.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_round_in_progress_finishes_before_the_loop_stops() {
        let (trigger, stopping) = Stopping::manual();
        let started = Arc::new(AtomicU32::new(0));
        let finished = Arc::new(AtomicU32::new(0));
        let mut tasks = BackgroundTasks::new(stopping);
        tasks.every("test", Duration::from_secs(60), {
            let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
            move || {
                let (started, finished) = (Arc::clone(&started), Arc::clone(&finished));
                async move {
                    started.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        // The first round starts at once; stop in its middle.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        trigger.stop();
        tasks.join(Duration::from_secs(30)).await;
        assert_eq!(
            finished.load(Ordering::SeqCst),
            1,
            "the round was cut short"
        );
        assert_eq!(
            started.load(Ordering::SeqCst),
            1,
            "a new round began after stop"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_longer_than_the_grace_is_aborted() {
        let (trigger, stopping) = Stopping::manual();
        let finished = Arc::new(AtomicU32::new(0));
        let mut tasks = BackgroundTasks::new(stopping);
        tasks.every("slow", Duration::from_secs(60), {
            let finished = Arc::clone(&finished);
            move || {
                let finished = Arc::clone(&finished);
                async move {
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        trigger.stop();
        let before = tokio::time::Instant::now();
        tasks.join(Duration::from_secs(10)).await;
        assert!(before.elapsed() <= Duration::from_secs(11));
        assert_eq!(finished.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_work_gets_the_grace_period_and_no_more() {
        let (trigger, stopping) = Stopping::manual();
        trigger.stop();
        let quick = with_grace(
            tokio::time::sleep(Duration::from_secs(2)),
            stopping.clone(),
            Duration::from_secs(5),
            "test",
        );
        assert_eq!(quick.await, Some(()));
        let slow = with_grace(
            tokio::time::sleep(Duration::from_secs(20)),
            stopping,
            Duration::from_secs(5),
            "test",
        );
        assert_eq!(slow.await, None);
    }
}
