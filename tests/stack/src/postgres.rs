//! A PostgreSQL primary with a synchronous streaming standby, started by the suite from
//! Debian's binaries (`initdb`, `pg_basebackup -R`) in a temporary directory on ports of its
//! own — never the machine's cluster. Failover is what an operator (or CloudNativePG) does:
//! the primary dies, the standby is promoted, the old primary's directory is rebuilt as the
//! new standby with `pg_basebackup`.
//!
//! Durability: `synchronous_standby_names = '*'` with `synchronous_commit = on`, so a commit
//! is acknowledged only once the standby has flushed its WAL, and a promoted standby has
//! every acknowledged write. Between a promotion and the new standby's first sync the new
//! primary runs alone (`synchronous_standby_names` relaxed, as CloudNativePG's
//! `dataDurability: preferred` does) — a second loss in that window would lose the writes
//! made in it; the chaos schedule never injects a database fault before the standby is
//! back in sync.
//!
//! When the suite runs as root (containers, CI), every PostgreSQL program runs as the
//! `postgres` user through `setpriv`, since PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::Connection as _;
use tokio::process::{Child, Command};

/// Debian's PostgreSQL 15 programs; `KAGI_STACK_PG_BIN` overrides.
fn pg_bin() -> PathBuf {
    std::env::var_os("KAGI_STACK_PG_BIN").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    )
}

/// Settings of both nodes (each also gets `-p <port>` on its command line).
const CONF: &str = "
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 64MB
wal_level = replica
max_wal_senders = 8
wal_keep_size = 512MB
hot_standby = on
synchronous_standby_names = '*'
synchronous_commit = on
wal_receiver_status_interval = 1s
wal_retrieve_retry_interval = 500ms
log_min_messages = warning
";

/// The name of the one database every service shares (each in its own schema).
pub const DATABASE: &str = "kagi";

/// One PostgreSQL server process and its data directory.
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

/// A primary and a synchronous standby; the role of each node changes on failover.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    sockets: PathBuf,
    nodes: [Node; 2],
    primary: usize,
    /// Runs PostgreSQL programs as `postgres` when we are root.
    run_as: Option<(u32, u32)>,
}

impl PgCluster {
    /// Creates, starts and links both nodes under `root` (which must exist), with the
    /// database [`DATABASE`] on the primary, and waits until the standby is in sync.
    ///
    /// # Errors
    /// A PostgreSQL program failed; its output is in the error or in `root/*.log`.
    pub async fn start(root: &Path) -> anyhow::Result<Self> {
        let run_as = postgres_ids_if_root()?;
        let root = root.join("pg");
        std::fs::create_dir_all(&root)?;
        let sockets = root.join("sockets");
        std::fs::create_dir_all(&sockets)?;
        if let Some((uid, gid)) = run_as {
            // The parents must be traversable by `postgres`; the data dirs stay 0700.
            for dir in [root.parent().unwrap_or(&root), &root, &sockets] {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
            }
            std::os::unix::fs::chown(&root, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&sockets, Some(uid), Some(gid))?;
        }
        let ports = crate::replica::free_addrs(2)?;
        let node = |name: &str, i: usize| Node {
            dir: root.join(name),
            port: ports[i].port(),
            child: None,
        };
        let mut cluster = Self {
            nodes: [node("a", 0), node("b", 1)],
            root,
            sockets,
            primary: 0,
            run_as,
        };
        let dir = cluster.nodes[0].dir.display().to_string();
        cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &dir,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                    // A throwaway cluster: no need to wait for the disk at creation.
                    "--no-sync",
                ],
            )
            .await?;
        let conf = cluster.nodes[0].dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str(CONF);
        text.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            cluster.sockets.display()
        ));
        std::fs::write(&conf, text)?;
        cluster.spawn(0).await?;
        // Until the standby exists, commits must not wait for it.
        cluster.set_synchronous(false).await?;
        let mut admin = cluster.connect("postgres").await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {DATABASE}")))
            .execute(&mut admin)
            .await?;
        admin.close().await.ok();
        cluster.rebuild_standby().await?;
        Ok(cluster)
    }

    /// `postgres://…` of the node that is primary now (for checks behind the front).
    pub fn primary_url(&self, database: &str) -> String {
        url(self.nodes[self.primary].port, database)
    }

    /// The ports of both nodes, for the front's checks.
    pub fn ports(&self) -> [u16; 2] {
        [self.nodes[0].port, self.nodes[1].port]
    }

    /// Stops the primary hard (SIGKILL of the postmaster: no checkpoint, no goodbye to
    /// clients), promotes the standby, lets it commit alone, and rebuilds the old primary as
    /// the new synchronous standby.
    ///
    /// # Errors
    /// Promotion or the rebuild failed.
    pub async fn failover(&mut self) -> anyhow::Result<()> {
        let old = self.primary;
        if let Some(mut child) = self.nodes[old].child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        let new = 1 - old;
        let dir = self.nodes[new].dir.display().to_string();
        self.run("pg_ctl", &["promote", "-w", "-t", "60", "-D", &dir])
            .await?;
        self.primary = new;
        self.wait_primary().await?;
        self.set_synchronous(false).await?;
        self.rebuild_standby().await
    }

    /// Restarts the primary with calls in flight: fast shutdown (open sessions are
    /// disconnected, in-flight transactions roll back), then start again.
    ///
    /// # Errors
    /// The stop or the start failed.
    pub async fn restart_primary(&mut self) -> anyhow::Result<()> {
        let primary = self.primary;
        if let Some(mut child) = self.nodes[primary].child.take() {
            if let Some(pid) = child.id() {
                crate::replica::signal(pid, "INT").await?;
            }
            child.wait().await?;
        }
        self.spawn(primary).await?;
        self.wait_in_sync().await
    }

    /// The standby streams and is the synchronous one.
    ///
    /// # Errors
    /// Not so within 60 s.
    pub async fn wait_in_sync(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&self.primary_url("postgres")).await {
                let state: Option<(String,)> = sqlx::query_as(
                    "SELECT sync_state::text FROM pg_stat_replication WHERE state = 'streaming'",
                )
                .fetch_optional(&mut conn)
                .await
                .unwrap_or(None);
                conn.close().await.ok();
                if state.is_some_and(|(s,)| s == "sync") {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the standby did not reach sync within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Makes the standby node a fresh copy of the primary (`pg_basebackup -R`), starts it,
    /// turns synchronous commit back on and waits until it is in sync.
    async fn rebuild_standby(&mut self) -> anyhow::Result<()> {
        let standby = 1 - self.primary;
        if let Some(mut child) = self.nodes[standby].child.take() {
            child.start_kill().ok();
            child.wait().await?;
        }
        let dir = self.nodes[standby].dir.clone();
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let port = self.nodes[self.primary].port.to_string();
        let dir_text = dir.display().to_string();
        self.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &dir_text,
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        )
        .await?;
        self.spawn(standby).await?;
        self.set_synchronous(true).await?;
        self.wait_in_sync().await
    }

    /// Turns synchronous replication on (the configured `'*'`) or off on the primary.
    async fn set_synchronous(&self, on: bool) -> anyhow::Result<()> {
        let mut conn = self.connect("postgres").await?;
        let statement = if on {
            "ALTER SYSTEM RESET synchronous_standby_names"
        } else {
            "ALTER SYSTEM SET synchronous_standby_names = ''"
        };
        sqlx::raw_sql(statement).execute(&mut conn).await?;
        sqlx::raw_sql("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await?;
        conn.close().await.ok();
        Ok(())
    }

    async fn wait_primary(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut conn) = self.connect("postgres").await {
                let (recovering,): (bool,) = sqlx::query_as("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut conn)
                    .await?;
                conn.close().await.ok();
                if !recovering {
                    return Ok(());
                }
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the promoted standby did not leave recovery within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A connection to the primary, retried while it starts.
    async fn connect(&self, database: &str) -> anyhow::Result<sqlx::PgConnection> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match sqlx::PgConnection::connect(&self.primary_url(database)).await {
                Ok(conn) => return Ok(conn),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(e).context("connecting to the primary");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Starts node `index`'s postmaster in the foreground (a child we can signal).
    async fn spawn(&mut self, index: usize) -> anyhow::Result<()> {
        let node = &self.nodes[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join(format!("node-{index}.log")))?;
        let mut command = self.command("postgres");
        command
            .args(["-D", &node.dir.display().to_string()])
            .args(["-p", &node.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().context("starting postgres")?;
        let port = node.port;
        self.nodes[index].child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while sqlx::PgConnection::connect(&url(port, "postgres"))
            .await
            .is_err()
        {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "postgres on {port} did not accept connections; see {}",
                self.root.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    fn command(&self, program: &str) -> Command {
        let path = pg_bin().join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut command = Command::new("setpriv");
                command
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(path);
                command
            }
            None => Command::new(path),
        }
    }

    /// Runs a PostgreSQL program to its end.
    async fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        let output = self
            .command(program)
            .args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("running {program}"))?;
        anyhow::ensure!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                child.start_kill().ok();
            }
        }
    }
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}?sslmode=disable")
}

/// `postgres`'s uid and gid when we run as root (PostgreSQL refuses root).
fn postgres_ids_if_root() -> anyhow::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt as _;
    // Our own uid is the owner of what we create.
    let probe = tempfile::tempfile()?;
    if probe.metadata()?.uid() != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with("postgres:"))
        .context("running as root needs a `postgres` user to run PostgreSQL as")?;
    let fields: Vec<&str> = line.split(':').collect();
    let uid = fields.get(2).context("passwd uid")?.parse()?;
    let gid = fields.get(3).context("passwd gid")?.parse()?;
    Ok(Some((uid, gid)))
}
