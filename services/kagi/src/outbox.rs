//! `kagi dev`'s outbox: the notifier writes every mail as an `.eml` file here instead of
//! sending it, reset codes included. A code is useful for its 30 minutes only, so the
//! outbox is readable by its owner alone (0700) and a mail older than the code's lifetime is
//! deleted: at start (mails a previous run left behind) and every minute while running.
//! Production has no outbox: the notifier hands mail to SMTP and keeps its sealed queue.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How often the outbox is swept while `kagi dev` runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The outbox folder and how long a mail may stay in it.
#[derive(Debug, Clone)]
pub struct Outbox {
    pub dir: PathBuf,
    /// The reset code's lifetime: after it no mail in the outbox is of use.
    pub keep: Duration,
}

impl Outbox {
    /// Creates the folder (owner only) and deletes the mails past `keep`.
    ///
    /// # Errors
    /// The folder cannot be created or restricted.
    pub fn prepare(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        restrict_to_owner(&self.dir)?;
        self.sweep(SystemTime::now());
        Ok(())
    }

    /// Deletes every `.eml` file last written more than `keep` before `now`; how many.
    /// Best effort: a file that cannot be read or deleted is left for the next sweep.
    pub fn sweep(&self, now: SystemTime) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let stale = |path: &Path| {
            path.extension().is_some_and(|e| e == "eml")
                && std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|at| now.duration_since(at).unwrap_or_default() > self.keep)
        };
        let mut deleted = 0;
        for path in entries.filter_map(Result::ok).map(|e| e.path()) {
            if stale(&path) && std::fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "outbox mails past the code lifetime deleted");
        }
        deleted
    }

    /// Sweeps every minute until `stopped` completes.
    pub async fn sweep_until(self, stopped: impl Future<Output = ()>) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                _ = every.tick() => {
                    let outbox = self.clone();
                    let _ = tokio::task::spawn_blocking(move || outbox.sweep(SystemTime::now())).await;
                }
            }
        }
    }
}

#[cfg(unix)]
fn restrict_to_owner(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn restrict_to_owner(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_mails_older_than_the_code_lifetime_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox {
            dir: dir.path().join("outbox"),
            keep: Duration::from_secs(1800),
        };
        outbox.prepare().unwrap();
        let now = SystemTime::now();
        let write = |name: &str, age_secs: u64| {
            let path = outbox.dir.join(name);
            let file = std::fs::File::create(&path).unwrap();
            file.set_modified(now - Duration::from_secs(age_secs))
                .unwrap();
            path
        };
        let old = write("old.eml", 1801);
        let fresh = write("fresh.eml", 60);
        let other = write("notes.txt", 99_999);

        assert_eq!(outbox.sweep(now), 1);
        assert!(!old.exists() && fresh.exists() && other.exists());
    }
}
