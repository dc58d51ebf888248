//! [`StackBuilder`] → [`Stack`]: N replicas of the keystore, notifier, reset service and
//! portal as processes, on one storage, with the SMTP server and (for several replicas, or
//! the replicated database) the HAProxy front; and what a test needs to talk to them:
//! each service's address, the callers' tokens, the mailbox.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use kagi_runtime::random::read_or_create_secret_file;

use crate::haproxy::{Front, Listener};
use crate::mailbox::{MailReader, Mailbox};
use crate::postgres::{self, PgCluster};
use crate::replica::{Replica, Service, free_addrs};

/// Where the services keep their data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// One SQLite file per service (WAL mode, shared by its replicas on this machine).
    Sqlite,
    /// A fresh database on the machine's PostgreSQL (`KAGI_TEST_POSTGRES_URL`), each
    /// service in its own schema.
    Postgres,
    /// The stack's own PostgreSQL primary and synchronous standby, reached through the
    /// front's `pg-rw` listener, which follows the primary (see [`crate::postgres`]).
    PostgresReplicated,
}

impl From<kagi_testkit::Backend> for Storage {
    fn from(backend: kagi_testkit::Backend) -> Self {
        match backend {
            kagi_testkit::Backend::Sqlite => Self::Sqlite,
            kagi_testkit::Backend::Postgres => Self::Postgres,
        }
    }
}

/// The callers the stack issues tokens to, each a file under `callers/`.
pub const CALLERS: [&str; 5] = ["reset", "portal", "login", "admin", "onboarding"];

/// How to start a stack.
#[derive(Debug, Clone)]
pub struct StackBuilder {
    binary: PathBuf,
    storage: Storage,
    replicas: usize,
    settings: Vec<(Service, String, String)>,
}

impl StackBuilder {
    /// A stack of `binary`, the multi-call kagi binary (`<binary> keystore serve` …), on
    /// SQLite with one replica of each service.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            storage: Storage::Sqlite,
            replicas: 1,
            settings: Vec::new(),
        }
    }

    pub fn storage(mut self, storage: impl Into<Storage>) -> Self {
        self.storage = storage.into();
        self
    }

    /// Replicas of every service (at least one).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.max(1);
        self
    }

    /// One setting of one service, as its environment variable without the prefix
    /// (`POLICY__STARTS_PER_HOUR`), over the stack's defaults.
    pub fn setting(mut self, service: Service, key: &str, value: impl ToString) -> Self {
        self.settings
            .push((service, key.to_owned(), value.to_string()));
        self
    }

    /// Starts everything: storage, SMTP server, front, then the replicas service by
    /// service (the first of each alone, so it migrates and creates the shared key files
    /// before the others start). Every address is chosen before anything starts, so each
    /// service is configured with its neighbours' and the front lists every replica.
    ///
    /// # Errors
    /// A part did not start; its log is under [`Stack::dir`].
    pub async fn start(self) -> anyhow::Result<Stack> {
        let dir = tempfile::Builder::new().prefix("kagi-stack-").tempdir()?;
        let root = dir.path().to_owned();
        std::fs::create_dir_all(root.join("logs"))?;
        for caller in CALLERS {
            read_or_create_secret_file(&root.join("callers").join(caller), 24)?;
        }
        read_or_create_secret_file(&root.join("kek").join("k1"), 32)?;
        let mailbox = Mailbox::start(&root.join("mail")).await;

        let (pg, test_db) = match self.storage {
            Storage::PostgresReplicated => (Some(PgCluster::start(&root).await?), None),
            Storage::Postgres => (
                None,
                Some(
                    kagi_testkit::TestDatabase::new(kagi_testkit::Backend::Postgres, "kagi.db")
                        .await,
                ),
            ),
            Storage::Sqlite => (None, None),
        };
        let fronted = self.replicas > 1 || pg.is_some();
        // Every address at once, so no two of them can be the same port.
        let mut free = free_addrs(Service::ALL.len() * (self.replicas + 1) + 1)?.into_iter();
        let mut next = || free.next().context("a free port");
        let mut replica_addrs: BTreeMap<Service, Vec<SocketAddr>> = BTreeMap::new();
        let mut endpoints: BTreeMap<Service, SocketAddr> = BTreeMap::new();
        for service in Service::ALL {
            let addrs = (0..self.replicas)
                .map(|_| next())
                .collect::<anyhow::Result<Vec<_>>>()?;
            endpoints.insert(service, if fronted { next()? } else { addrs[0] });
            replica_addrs.insert(service, addrs);
        }
        let pg_front = match &pg {
            Some(_) => Some(next()?),
            None => None,
        };
        let mut stack = Stack {
            binary: self.binary.clone(),
            replicas: BTreeMap::new(),
            mailbox,
            pg,
            front: None,
            endpoints,
            database_urls: BTreeMap::new(),
            test_db,
            root: root.clone(),
            dir: Some(dir),
        };
        if fronted {
            stack.start_front(pg_front, &replica_addrs).await?;
            if stack.pg.is_some() {
                stack.wait_front_up("pg-rw", 1).await?;
            }
        }
        for service in Service::ALL {
            let url = match (&pg_front, &stack.test_db) {
                (Some(front), _) => format!(
                    "postgres://postgres@{front}/{}?sslmode=disable",
                    postgres::DATABASE
                ),
                (None, Some(db)) => db.url.clone(),
                (None, None) => {
                    format!("sqlite://{}/{}.db?mode=rwc", root.display(), service.name())
                }
            };
            stack.database_urls.insert(service, url.clone());
            let mut settings = stack.defaults(service, &url);
            settings.extend(
                self.settings
                    .iter()
                    .filter(|(s, _, _)| *s == service)
                    .map(|(_, k, v)| (k.clone(), v.clone())),
            );
            let addrs = replica_addrs.get(&service).cloned().unwrap_or_default();
            stack
                .start_replicas(&self.binary, service, &addrs, settings)
                .await?;
        }
        Ok(stack)
    }
}

/// A running kagi system; every process stops when it is dropped.
#[derive(Debug)]
pub struct Stack {
    binary: PathBuf,
    /// Every replica of every service, by service.
    pub replicas: BTreeMap<Service, Vec<Replica>>,
    pub mailbox: Mailbox,
    /// The replicated PostgreSQL, with [`Storage::PostgresReplicated`].
    pub pg: Option<PgCluster>,
    pub(crate) front: Option<Front>,
    endpoints: BTreeMap<Service, SocketAddr>,
    database_urls: BTreeMap<Service, String>,
    test_db: Option<kagi_testkit::TestDatabase>,
    root: PathBuf,
    /// Deleted with the stack unless [`Stack::keep_dir`] took it.
    dir: Option<tempfile::TempDir>,
}

impl Stack {
    /// Where a client reaches `service`: the front's listener with several replicas (or
    /// the replicated database), else the one replica.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.endpoints
            .get(&service)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Every replica's own address (for clients that balance over them themselves).
    pub fn replica_addrs(&self, service: Service) -> Vec<SocketAddr> {
        self.replicas
            .get(&service)
            .map(|r| r.iter().map(|r| r.addr).collect())
            .unwrap_or_default()
    }

    /// The bearer token of `caller` (one of [`CALLERS`]).
    ///
    /// # Errors
    /// The token file cannot be read.
    pub fn token(&self, caller: &str) -> anyhow::Result<String> {
        Ok(read_or_create_secret_file(&self.root.join("callers").join(caller), 24)?.to_string())
    }

    /// The database URL `service` uses (the front's `pg-rw` with the replicated database).
    pub fn database_url(&self, service: Service) -> &str {
        self.database_urls.get(&service).map_or("", String::as_str)
    }

    /// Reads the mail the SMTP server accepted.
    pub fn mail(&self) -> MailReader {
        self.mailbox.reader()
    }

    /// The stack's folder: logs (`logs/<service>-<i>.log`, `haproxy.log`, `pg/`), mail.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The multi-call binary the replicas run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Replica `index` of `service`.
    ///
    /// # Errors
    /// No such replica.
    pub fn replica(&mut self, service: Service, index: usize) -> anyhow::Result<&mut Replica> {
        self.replicas
            .get_mut(&service)
            .and_then(|r| r.get_mut(index))
            .with_context(|| format!("no replica {index} of {service}"))
    }

    /// Starts `service`'s replicas on `addrs`: the first alone (it migrates, and creates
    /// the key files the others share), then the others together; waits until the front
    /// sends calls to all of them.
    async fn start_replicas(
        &mut self,
        binary: &Path,
        service: Service,
        addrs: &[SocketAddr],
        settings: Vec<(String, String)>,
    ) -> anyhow::Result<()> {
        let logs = self.root.join("logs");
        let first = addrs.first().copied().context("no replica address")?;
        let mut replicas =
            vec![Replica::start(binary, service, 0, first, settings.clone(), &logs).await?];
        let others: Vec<_> = addrs
            .iter()
            .enumerate()
            .skip(1)
            .map(|(index, addr)| {
                let (binary, settings, logs, addr) =
                    (binary.to_owned(), settings.clone(), logs.clone(), *addr);
                tokio::spawn(async move {
                    Replica::start(&binary, service, index, addr, settings, &logs).await
                })
            })
            .collect();
        for other in others {
            replicas.push(other.await??);
        }
        let n = replicas.len();
        self.replicas.insert(service, replicas);
        self.wait_front_up(service.name(), n).await
    }

    /// Waits until the front sends calls to `servers` servers of `listener` (a service's
    /// name, or `pg-rw`); at once without a front.
    ///
    /// # Errors
    /// Not within 30 s.
    pub async fn wait_front_up(&self, listener: &str, servers: usize) -> anyhow::Result<()> {
        match &self.front {
            Some(front) => {
                front
                    .wait_up(listener, servers, std::time::Duration::from_secs(30))
                    .await
            }
            None => Ok(()),
        }
    }

    /// The front, with several replicas or the replicated database.
    pub fn front(&self) -> Option<&Front> {
        self.front.as_ref()
    }

    /// Keeps the stack's folder (logs, databases, mail) after the stack stops, for a
    /// failure's post-mortem; returns its path.
    pub fn keep_dir(&mut self) -> PathBuf {
        if let Some(dir) = self.dir.take() {
            return dir.keep();
        }
        self.root.clone()
    }

    async fn start_front(
        &mut self,
        pg_front: Option<SocketAddr>,
        replicas: &BTreeMap<Service, Vec<SocketAddr>>,
    ) -> anyhow::Result<()> {
        let mut listeners = Vec::new();
        if let (Some(bind), Some(pg)) = (pg_front, &self.pg) {
            listeners.push(Listener {
                name: "pg-rw".into(),
                bind,
                servers: pg
                    .ports()
                    .iter()
                    .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
                    .collect(),
                postgres_primary: true,
            });
        }
        for (service, addrs) in replicas {
            listeners.push(Listener {
                name: service.name().into(),
                bind: self.addr(*service),
                servers: addrs.clone(),
                postgres_primary: false,
            });
        }
        self.front = Some(Front::start(&self.root, &listeners).await?);
        Ok(())
    }

    /// Each service's settings, as environment variables without the service's prefix.
    fn defaults(&self, service: Service, database_url: &str) -> Vec<(String, String)> {
        let root = &self.root;
        let callers = root.join("callers");
        let path = |p: PathBuf| p.display().to_string();
        let endpoint = |s: Service| format!("http://{}", self.addr(s));
        let mut env: Vec<(&str, String)> = vec![
            ("DATABASE__URL", database_url.to_owned()),
            ("DATABASE__MAX_CONNECTIONS", "4".into()),
            ("TELEMETRY__LOG_FILTER", "warn".into()),
            ("SERVER__SHUTDOWN_GRACE_SECS", "2".into()),
        ];
        match service {
            Service::Keystore => {
                env.push(("AUTH__TOKENS_DIR", path(callers.clone())));
                env.push(("KEK__KEYS_DIR", path(root.join("kek"))));
            }
            Service::Notifier => {
                env.extend([
                    ("AUTH__TOKENS_DIR", path(callers.clone())),
                    ("SEALING__KEY_FILE", path(root.join("notifier-payload-key"))),
                    ("MAIL__TEMPLATES_DIR", path(root.join("notifier-templates"))),
                    ("TRANSPORT__KIND", "smtp".into()),
                    ("TRANSPORT__SMTP__HOST", "127.0.0.1".into()),
                    ("TRANSPORT__SMTP__PORT", self.mailbox.port().to_string()),
                    ("TRANSPORT__SMTP__TLS", "none".into()),
                    ("TRANSPORT__SMTP__TIMEOUT_MS", "3000".into()),
                    ("TRANSPORT__SMTP__HELLO_NAME", "notifier.test".into()),
                    ("DELIVERY__POLL_INTERVAL_MS", "50".into()),
                    ("DELIVERY__BACKOFF_INITIAL_MS", "200".into()),
                    ("DELIVERY__BACKOFF_MAX_MS", "2000".into()),
                    // A killed replica's claimed messages are retried by another after this.
                    ("DELIVERY__LEASE_SECS", "10".into()),
                ]);
            }
            Service::Reset => {
                env.extend([
                    ("AUTH__TOKENS_DIR", path(callers.clone())),
                    ("CODE_HMAC_KEY_FILE", path(root.join("reset-code-key"))),
                    ("KEYSTORE__ENDPOINT", endpoint(Service::Keystore)),
                    ("KEYSTORE__TOKEN_FILE", path(callers.join("reset"))),
                    ("NOTIFIER__ENDPOINT", endpoint(Service::Notifier)),
                    ("NOTIFIER__TOKEN_FILE", path(callers.join("reset"))),
                    // Cheap hashing: the stack hashes often; production strength has its tests.
                    ("PASSWORD__MEMORY_KIB", "1024".into()),
                    ("PASSWORD__ITERATIONS", "1".into()),
                    // Interrupted sagas are finished within seconds, not the default 30 s.
                    ("SWEEPER__INTERVAL_SECS", "2".into()),
                ]);
            }
            Service::Portal => {
                env.extend([
                    ("KEYSTORE__ENDPOINT", endpoint(Service::Keystore)),
                    ("KEYSTORE__TOKEN_FILE", path(callers.join("portal"))),
                    ("RESET__ENDPOINT", endpoint(Service::Reset)),
                    ("RESET__TOKEN_FILE", path(callers.join("portal"))),
                    ("SERVER__PUBLIC_URL", endpoint(Service::Portal)),
                ]);
            }
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    /// Stops every replica (SIGTERM, drained), the front, the SMTP server and the database.
    pub async fn stop(mut self) {
        for replicas in self.replicas.values_mut().rev() {
            for replica in replicas.iter_mut() {
                let _ = replica.terminate().await;
            }
        }
        if let Some(front) = self.front.take() {
            front.stop().await;
        }
        drop(self.pg.take());
        drop(self.test_db.take());
    }
}
