//! The `VerifyCode` benchmark of BENCHMARKS.md: seed, start each server as its own process
//! (so its peak RSS is its own), drive it with the load generator, report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use data_encoding::BASE64;
use kagi_keystore::crypto::Keyring;
use kagi_keystore::store::{Backend, Db};
use sqlx::Connection;
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

use kagi_runtime::client::ClientSettings;
use kagi_runtime::pki::CertAuthority;

use crate::load::{self, CodePath, LoadReport, LoadSpec};
use crate::seed;

pub(crate) const TOKEN: &str = "bench-login-token-0123456789";

/// Knobs of one suite run.
#[derive(Debug, Clone)]
pub struct SuiteSpec {
    pub backend: Backend,
    pub accounts: usize,
    pub calls: usize,
    pub concurrency: usize,
    pub connections: usize,
    pub max_connections: u32,
    pub postgres_url: String,
}

/// One line of the report.
#[derive(Debug)]
pub struct Row {
    pub name: &'static str,
    pub report: LoadReport,
    pub peak_rss_kib: u64,
}

/// Runs the accepted path, the wrong-code path and both ceilings on `spec.backend`.
///
/// # Errors
/// Any failure to seed, spawn or load.
pub async fn run(spec: &SuiteSpec) -> anyhow::Result<Vec<Row>> {
    let Seeded {
        database,
        kek,
        accounts,
    } = Seeded::create(spec, true).await?;
    let accounts = Arc::new(accounts);

    let mut rows = Vec::new();
    let keystore_env = keystore_env(spec, &database, &kek);
    let mut server = Server::spawn(
        "kagi-keystore",
        &["serve"],
        &keystore_env,
        "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
    )
    .await?;
    for (name, path) in [
        ("keystore, accepted", CodePath::Valid),
        ("keystore, wrong code", CodePath::Wrong),
    ] {
        eprintln!("{name}…");
        let report = load::run(&load_spec(spec, server.addr, path), &accounts).await?;
        rows.push(Row {
            name,
            report,
            peak_rss_kib: server.peak_rss_kib(),
        });
    }
    server.stop().await;
    rows.extend(ceilings(spec, &database, &accounts).await?);
    database.drop_if_postgres(spec).await;
    Ok(rows)
}

/// What TLS and mTLS cost the accepted path: the same generator against three keystore
/// processes on the same database in one run (plaintext, TLS, TLS with client
/// certificates), each phase on its own third of the accounts so every code is fresh.
/// Connections and handshakes are made before each phase's clock starts.
///
/// # Errors
/// Any failure to seed, spawn or load.
pub async fn run_tls(spec: &SuiteSpec) -> anyhow::Result<Vec<Row>> {
    let Seeded {
        database,
        kek,
        accounts,
    } = Seeded::create(spec, false).await?;

    let dir =
        std::env::temp_dir().join(format!("kagi-bench-tls-{}", uuid::Uuid::new_v4().simple()));
    let ca = CertAuthority::create(&dir, "kagi bench CA")?;
    let server_cert = ca.server("server", &["localhost", "127.0.0.1"])?;
    let login = ca.client("login", &["login.callers.kagi.test"])?;
    let third = accounts.len() / 3;
    let mut rows = Vec::new();
    for (n, name) in [
        "keystore, accepted, plaintext",
        "keystore, accepted, TLS",
        "keystore, accepted, mTLS",
    ]
    .into_iter()
    .enumerate()
    {
        let mut env = keystore_env(spec, &database, &kek);
        let path = |p: &std::path::Path| p.display().to_string();
        if n >= 1 {
            env.push((
                "KAGI_KEYSTORE_SERVER__TLS_CERT".into(),
                path(&server_cert.cert),
            ));
            env.push((
                "KAGI_KEYSTORE_SERVER__TLS_KEY".into(),
                path(&server_cert.key),
            ));
        }
        if n == 2 {
            env.push((
                "KAGI_KEYSTORE_SERVER__TLS_CLIENT_CA".into(),
                path(ca.ca_file()),
            ));
        }
        let mut server = Server::spawn(
            "kagi-keystore",
            &["serve"],
            &env,
            "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
        )
        .await?;
        let mut load = load_spec(spec, server.addr, CodePath::Valid);
        if n >= 1 {
            load.client.endpoint = format!("https://{}", server.addr);
            load.client.ca_file = Some(ca.ca_file().to_owned());
            load.client.tls_server_name = Some("localhost".into());
        }
        if n == 2 {
            load.client.cert_file = Some(login.cert.clone());
            load.client.key_file = Some(login.key.clone());
        }
        let slice = Arc::new(accounts[n * third..(n + 1) * third].to_vec());
        load.calls = load.calls.min(slice.len());
        eprintln!("{name}…");
        let report = load::run(&load, &slice).await?;
        rows.push(Row {
            name,
            report,
            peak_rss_kib: server.peak_rss_kib(),
        });
        server.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    database.drop_if_postgres(spec).await;
    Ok(rows)
}

/// The keystore's environment: the bench database, KEK and login token, quiet logs.
pub(crate) fn keystore_env(
    spec: &SuiteSpec,
    database: &BenchDatabase,
    kek: &Zeroizing<Vec<u8>>,
) -> Vec<(String, String)> {
    vec![
        (
            "KAGI_KEYSTORE_DATABASE__URL".to_owned(),
            database.url.clone(),
        ),
        (
            "KAGI_KEYSTORE_DATABASE__MAX_CONNECTIONS".to_owned(),
            spec.max_connections.to_string(),
        ),
        (
            "KAGI_KEYSTORE_KEK__KEYS__BENCH".to_owned(),
            BASE64.encode(kek),
        ),
        (
            "KAGI_KEYSTORE_AUTH__TOKENS__LOGIN".to_owned(),
            TOKEN.to_owned(),
        ),
        (
            "KAGI_KEYSTORE_TELEMETRY__LOG_FILTER".to_owned(),
            "warn".to_owned(),
        ),
    ]
}

/// The three ceiling servers on the same database, driven like the keystore.
async fn ceilings(
    spec: &SuiteSpec,
    database: &BenchDatabase,
    accounts: &Arc<Vec<seed::SeededAccount>>,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let ceilings = [
        ("ceiling: bare tonic echo", "echo"),
        ("ceiling: one conditional UPDATE", "update"),
        (
            "reference: one SELECT + one conditional UPDATE",
            "read-update",
        ),
    ];
    for (name, kind) in ceilings {
        eprintln!("{name}…");
        let mut server = spawn_ceiling(spec, database, kind).await?;
        let report = load::run(&load_spec(spec, server.addr, CodePath::Valid), accounts).await?;
        rows.push(Row {
            name,
            report,
            peak_rss_kib: server.peak_rss_kib(),
        });
        server.stop().await;
    }
    Ok(rows)
}

/// Starts `kagi-bench ceiling KIND` (`echo`, `update`, `read-update`) on `database`, with
/// the pool size the keystore under test gets.
pub(crate) async fn spawn_ceiling(
    spec: &SuiteSpec,
    database: &BenchDatabase,
    kind: &str,
) -> anyhow::Result<Server> {
    let env = [
        ("KAGI_BENCH_DATABASE_URL".to_owned(), database.url.clone()),
        (
            "KAGI_BENCH_MAX_CONNECTIONS".to_owned(),
            spec.max_connections.to_string(),
        ),
    ];
    Server::spawn(
        "kagi-bench",
        &["ceiling", kind],
        &env,
        "KAGI_BENCH_LISTEN_ADDR",
    )
    .await
}

pub(crate) fn load_spec(spec: &SuiteSpec, addr: SocketAddr, path: CodePath) -> LoadSpec {
    let mut client = ClientSettings::at(format!("http://{addr}"));
    client.token = Some(TOKEN.into());
    client.timeout_ms = 60_000;
    LoadSpec {
        client,
        concurrency: spec.concurrency,
        connections: spec.connections,
        calls: spec.calls,
        path,
    }
}

/// A server process under test.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    /// Starts `binary` (a sibling of this executable, or a path) on a free port and waits
    /// until it accepts connections.
    pub(crate) async fn spawn(
        binary: &str,
        args: &[&str],
        env: &[(String, String)],
        listen_var: &str,
    ) -> anyhow::Result<Self> {
        let path: PathBuf = if binary.contains('/') {
            PathBuf::from(binary)
        } else {
            std::env::current_exe()?.with_file_name(binary)
        };
        let addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let child = Command::new(&path)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(listen_var, addr.to_string())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(Self { child, addr });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("{binary} did not start listening on {addr}")
    }

    /// The process's ID while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The process's peak resident set (VmHWM), in KiB.
    pub(crate) fn peak_rss_kib(&self) -> u64 {
        let Some(pid) = self.child.id() else { return 0 };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    pub(crate) async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// A run's fresh database with `spec.accounts` enrolled accounts sealed under `kek`, the
/// key-encryption key every keystore under test is given.
pub(crate) struct Seeded {
    pub(crate) database: BenchDatabase,
    pub(crate) kek: Zeroizing<Vec<u8>>,
    pub(crate) accounts: Vec<seed::SeededAccount>,
}

impl Seeded {
    /// Creates and migrates the database and enrolls the accounts; with `ceiling_table`,
    /// also the bare-UPDATE ceiling's table (only the suite's ceilings read it).
    pub(crate) async fn create(spec: &SuiteSpec, ceiling_table: bool) -> anyhow::Result<Self> {
        let database = BenchDatabase::create(spec).await?;
        let kek = Zeroizing::new(vec![7_u8; 32]);
        let keyring = Keyring::new("bench", [("bench".to_owned(), kek.clone())].into())?;
        let db = Db::connect(&database.url, 4).await?;
        db.migrate().await?;
        eprintln!("seeding {} accounts on {:?}…", spec.accounts, spec.backend);
        let accounts = seed::seed_accounts(&db, &keyring, spec.accounts).await?;
        if ceiling_table {
            seed::seed_steps(&db, spec.accounts).await?;
        }
        db.close().await;
        Ok(Self {
            database,
            kek,
            accounts,
        })
    }
}

/// A fresh database for one run: a temporary SQLite file or a new PostgreSQL database.
pub(crate) struct BenchDatabase {
    pub(crate) url: String,
    pg_name: Option<String>,
    _dir: Option<PathBuf>,
}

impl BenchDatabase {
    pub(crate) async fn create(spec: &SuiteSpec) -> anyhow::Result<Self> {
        match spec.backend {
            Backend::Sqlite => {
                let dir = std::env::temp_dir()
                    .join(format!("kagi-bench-{}", uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&dir)?;
                Ok(Self {
                    url: format!("sqlite://{}/keystore.db?mode=rwc", dir.display()),
                    pg_name: None,
                    _dir: Some(dir),
                })
            }
            Backend::Postgres => {
                let name = format!("kagi_bench_{}", uuid::Uuid::new_v4().simple());
                let mut admin = sqlx::PgConnection::connect(&spec.postgres_url).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await?;
                let (path, query) = spec
                    .postgres_url
                    .split_once('?')
                    .unwrap_or((&spec.postgres_url, ""));
                let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
                let url = if query.is_empty() {
                    format!("{base}/{name}")
                } else {
                    format!("{base}/{name}?{query}")
                };
                Ok(Self {
                    url,
                    pg_name: Some(name),
                    _dir: None,
                })
            }
        }
    }

    /// On SQLite, a copy of the database file as it stands (seeded, closed) for one phase of
    /// a comparison, so every phase starts from the same file rather than from the WAL and
    /// free pages its predecessors left — the drift that made one SQLite setting differ
    /// from itself by 15 % between phases. `None` on PostgreSQL (phases share its one
    /// database; its vacuum keeps no such trail).
    ///
    /// # Errors
    /// The copy failed.
    pub(crate) fn sqlite_copy(&self, name: &str) -> anyhow::Result<Option<String>> {
        let Some(dir) = &self._dir else {
            return Ok(None);
        };
        let copy = dir.join(format!("{name}.db"));
        std::fs::copy(dir.join("keystore.db"), &copy)?;
        Ok(Some(format!("sqlite://{}?mode=rwc", copy.display())))
    }

    pub(crate) async fn drop_if_postgres(&self, spec: &SuiteSpec) {
        if let Some(name) = &self.pg_name
            && let Ok(mut admin) = sqlx::PgConnection::connect(&spec.postgres_url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut admin)
            .await;
        }
        if let Some(dir) = &self._dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
