//! The front: one Debian HAProxy process playing the parts Kubernetes plays in production.
//!
//! - `pg-rw` follows the PostgreSQL primary as CloudNativePG's `-rw` Service does. Its
//!   check speaks the PostgreSQL protocol (`tcp-check`): it sends a startup message for
//!   `postgres` and expects the server's `ParameterStatus` `in_hot_standby = off`, which
//!   PostgreSQL ≥ 14 reports at every connection start. A standby reports `on`, a dead
//!   node answers nothing, so only the primary is up. (`option pgsql-check` only proves a
//!   server answers, which a standby also does.) A node marked down has its sessions cut
//!   (`on-marked-down shutdown-sessions`), so no client keeps writing to a demoted node.
//! - one TCP listener per service with N replicas, balancing connections round-robin over
//!   the replicas that pass a TCP check, as a Kubernetes `ClusterIP` Service (kube-proxy)
//!   does; a connection refused by a dead replica is sent to another (`option redispatch`).
//!   Two failed checks in a row mark a server down: one slow answer on a busy machine must
//!   not take a healthy replica out.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// The startup message HAProxy sends, in hex: protocol 3.0, `user=postgres
/// database=postgres` (trust authentication on loopback).
fn pg_startup() -> String {
    let params = b"user\0postgres\0database\0postgres\0\0";
    let length = u32::try_from(8 + params.len()).unwrap_or(u32::MAX);
    let mut message = length.to_be_bytes().to_vec();
    message.extend_from_slice(&0x0003_0000_u32.to_be_bytes());
    message.extend_from_slice(params);
    hex(&message)
}

/// `in_hot_standby\0off\0` inside the server's `ParameterStatus` message, in hex.
fn pg_primary() -> String {
    hex(b"in_hot_standby\0off\0")
}

/// `Terminate`: the check says goodbye instead of dropping the connection.
const PG_TERMINATE: &str = "5800000004";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// One listener of the front.
#[derive(Debug, Clone)]
pub struct Listener {
    pub name: String,
    pub bind: SocketAddr,
    pub servers: Vec<SocketAddr>,
    /// Check servers as PostgreSQL primaries, not only for a TCP answer.
    pub postgres_primary: bool,
}

/// The HAProxy process; killed when dropped.
#[derive(Debug)]
pub struct Front {
    child: Child,
    /// The runtime API socket (`show stat`), to see what the checks decided.
    socket: std::path::PathBuf,
}

impl Front {
    /// Writes the configuration under `dir` and starts HAProxy in the foreground.
    ///
    /// # Errors
    /// HAProxy is missing (`apt-get install haproxy`) or refuses the configuration.
    pub async fn start(dir: &Path, listeners: &[Listener]) -> anyhow::Result<Self> {
        let config = dir.join("haproxy.cfg");
        let socket = dir.join("haproxy.sock");
        std::fs::write(&config, render(listeners, &socket))?;
        let haproxy = std::env::var_os("KAGI_STACK_HAPROXY").unwrap_or_else(|| "haproxy".into());
        let check = Command::new(&haproxy)
            .args(["-c", "-q", "-f"])
            .arg(&config)
            .output()
            .await
            .context("running haproxy (Debian: apt-get install haproxy)")?;
        anyhow::ensure!(
            check.status.success(),
            "haproxy refuses {}: {}",
            config.display(),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = std::fs::File::create(dir.join("haproxy.log"))?;
        let child = Command::new(&haproxy)
            .args(["-db", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting haproxy")?;
        for listener in listeners {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(listener.bind).await.is_err() {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "haproxy did not listen on {}",
                    listener.bind
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(Self { child, socket })
    }

    /// Waits until exactly `servers` servers of listener `name` are up, each after a
    /// passed check, and every other one is down. HAProxy assumes servers up before their
    /// first check (a standby would take writes) and marks a dead one down only after two
    /// failed checks; a freshly started replica is down until its first check passes.
    ///
    /// # Errors
    /// Not within `within`.
    pub async fn wait_up(
        &self,
        name: &str,
        servers: usize,
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.servers_up(name).await.ok().flatten() == Some(servers) {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "haproxy did not mark {servers} servers of {name} up within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How many servers of listener `name` are up now after a passed check (`show stat`
    /// on the runtime API); `None` while a server is up without one (not yet checked, or
    /// failing but not yet down).
    ///
    /// # Errors
    /// The runtime API did not answer.
    pub async fn servers_up(&self, name: &str) -> anyhow::Result<Option<usize>> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::net::UnixStream::connect(&self.socket).await?;
        stream.write_all(b"show stat\n").await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |n: &str| header.iter().position(|h| *h == n);
        let (Some(px), Some(sv), Some(status), Some(check)) = (
            column("pxname"),
            column("svname"),
            column("status"),
            column("check_status"),
        ) else {
            anyhow::bail!("unexpected show stat header");
        };
        let mut up = 0;
        for fields in lines.map(|l| l.split(',').collect::<Vec<_>>()) {
            if fields.get(px) != Some(&name)
                || matches!(fields.get(sv), Some(&"FRONTEND" | &"BACKEND"))
            {
                continue;
            }
            let is_up = fields.get(status).is_some_and(|s| s.starts_with("UP"));
            let checked_ok = fields.get(check).is_some_and(|c| c.ends_with("OK"));
            match (is_up, checked_ok) {
                (true, true) => up += 1,
                (true, false) => return Ok(None),
                (false, _) => {}
            }
        }
        Ok(Some(up))
    }

    /// Stops HAProxy.
    pub async fn stop(mut self) {
        self.child.start_kill().ok();
        let _ = self.child.wait().await;
    }
}

/// The configuration text (one `listen` section per listener).
pub fn render(listeners: &[Listener], socket: &Path) -> String {
    let mut text = format!(
        "global\n    maxconn 8192\n    stats socket {} mode 600 level user\n\n\
         defaults\n    mode tcp\n    timeout connect 1s\n    timeout client 1h\n    \
         timeout server 1h\n    timeout check 1s\n    retries 3\n    option redispatch\n\n",
        socket.display()
    );
    for l in listeners {
        let _ = writeln!(text, "listen {}\n    bind {}", l.name, l.bind);
        if l.postgres_primary {
            let _ = writeln!(
                text,
                "    option tcp-check\n    tcp-check connect\n    \
                 tcp-check send-binary {}\n    \
                 tcp-check expect binary {}\n    \
                 tcp-check send-binary {PG_TERMINATE}\n    \
                 default-server inter 250ms fall 2 rise 1 on-marked-down shutdown-sessions",
                pg_startup(),
                pg_primary()
            );
        } else {
            let _ = writeln!(
                text,
                "    balance roundrobin\n    default-server inter 250ms fall 2 rise 1"
            );
        }
        for (i, server) in l.servers.iter().enumerate() {
            let _ = writeln!(text, "    server s{i} {server} check");
        }
        text.push('\n');
    }
    text
}
