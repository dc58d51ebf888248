//! One replica of one service: a separate process of the multi-call binary
//! (`<binary> keystore serve`, configured only by `KAGI_<SERVICE>_…` variables, as a pod
//! is), on a port it keeps across restarts so the front in front of it needs no change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The four services a stack runs, in the order they start (each calls the ones before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    Keystore,
    Notifier,
    Reset,
    Portal,
}

impl Service {
    pub const ALL: [Self; 4] = [Self::Keystore, Self::Notifier, Self::Reset, Self::Portal];

    /// The name the multi-call binary dispatches on, and the schema / file it stores in.
    pub fn name(self) -> &'static str {
        match self {
            Self::Keystore => "keystore",
            Self::Notifier => "notifier",
            Self::Reset => "reset",
            Self::Portal => "portal",
        }
    }

    /// Its SQLite file's name (`keystore.db`).
    pub fn file(self) -> &'static str {
        match self {
            Self::Keystore => "keystore.db",
            Self::Notifier => "notifier.db",
            Self::Reset => "reset.db",
            Self::Portal => "portal.db",
        }
    }

    /// The prefix of the environment variables its settings are read from.
    fn env_prefix(self) -> String {
        format!("KAGI_{}_", self.name().to_uppercase())
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A service replica process; killed when dropped.
#[derive(Debug)]
pub struct Replica {
    pub service: Service,
    pub index: usize,
    pub addr: SocketAddr,
    binary: PathBuf,
    /// `SECTION__KEY` → value, without the service's prefix.
    settings: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Starts replica `index` of `service` on `addr` and waits until it listens.
    ///
    /// # Errors
    /// The binary cannot be started, or it does not listen within 30 s.
    pub async fn start(
        binary: &Path,
        service: Service,
        index: usize,
        addr: SocketAddr,
        settings: Vec<(String, String)>,
        log_dir: &Path,
    ) -> anyhow::Result<Self> {
        let mut replica = Self {
            service,
            index,
            addr,
            binary: binary.to_owned(),
            settings,
            log: log_dir.join(format!("{}-{index}.log", service.name())),
            child: None,
        };
        replica.spawn().await?;
        Ok(replica)
    }

    /// The process is running (not killed, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        // Someone else on our port would answer our readiness probe (and our callers).
        anyhow::ensure!(
            tokio::net::TcpStream::connect(self.addr).await.is_err(),
            "{} replica {}: {} is taken by another process",
            self.service,
            self.index,
            self.addr
        );
        let prefix = self.service.env_prefix();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .args([self.service.name(), "serve"])
            .envs(
                self.settings
                    .iter()
                    .map(|(k, v)| (format!("{prefix}{k}"), v)),
            )
            .env(
                format!("{prefix}SERVER__LISTEN_ADDR"),
                self.addr.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {} {}", self.binary.display(), self.service))?;
        self.child = Some(child);
        self.wait_listening(Duration::from_secs(30)).await
    }

    async fn wait_listening(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() && self.is_running() {
                return Ok(());
            }
            if !self.is_running() {
                anyhow::bail!(
                    "{} replica {} exited at start; its log ends:\n{}",
                    self.service,
                    self.index,
                    self.log_tail()
                );
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "{} replica {} did not listen on {}",
                    self.service,
                    self.index,
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL: the process ends at once, mid-call, as a pod whose node died.
    ///
    /// # Errors
    /// The kill or the wait failed.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGTERM and wait: the graceful stop a rolling update makes.
    ///
    /// # Errors
    /// The signal could not be sent, or the wait failed.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                signal(pid, "TERM").await?;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                child.start_kill().ok();
                child.wait().await?;
            }
        }
        Ok(())
    }

    /// Starts the process again on the same port (after [`Self::kill`]).
    ///
    /// # Errors
    /// As [`Self::start`].
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill().await?;
        self.spawn().await
    }

    /// The last lines of the replica's log, for an error message (the stack's folder is
    /// gone by the time someone reads it).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2_000);
        text.get(start..).unwrap_or(&text).to_owned()
    }

    /// The replica's own log (stderr), for a failure's message.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// Sends `SIG<name>` to `pid` with `kill(1)` (the workspace forbids `unsafe`, so no libc).
///
/// # Errors
/// `kill` could not run or refused.
pub async fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .await
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// `n` distinct loopback addresses nothing listens on (yet): all bound at once before any
/// is released, since the kernel may hand a just-released port out again.
///
/// # Errors
/// No port could be bound.
pub fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let probes = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(probes
        .iter()
        .map(std::net::TcpListener::local_addr)
        .collect::<Result<Vec<_>, _>>()?)
}

/// A loopback address with a port nothing listens on (yet).
///
/// # Errors
/// No port could be bound.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(probe.local_addr()?)
}
