//! The whole system in this process, for integration tests: the same four `Application`s
//! production builds, on 127.0.0.1:0, each on a fresh database ([`TestDatabase`]), the
//! notifier delivering to a real SMTP server (the kit's aiosmtpd sink), and two clocks the
//! test moves: the keystore's (one-time passwords) and the one the reset service and the
//! portal share (code lifetimes, resend cooldowns, idle sessions). Log lines go to the kit's
//! capture. [`crate::StackBuilder`] starts the same system as processes for the chaos run.
//! A benchmark asks for the system clock and no log capture instead
//! ([`LocalBuilder::system_clocks`], [`LocalBuilder::without_log_capture`]).
//!
//! ```ignore
//! let system = LocalStack::builder(Backend::Postgres)
//!     .reset(|s| s.policy.max_resends = 1)
//!     .start()
//!     .await?;
//! ```

mod codes;
pub mod settings;
mod sink;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use kagi_runtime::client::ClientSettings;
use kagi_runtime::{Clock, Institution, ManualClock, SystemClock};
use kagi_testkit::tls::TestPki;
use kagi_testkit::{Backend, TestDatabase};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use crate::mailbox::Mail;
pub use codes::{totp, totp_of, wrong};
pub use settings::{CODE_KEY, KEK, token_of};
pub use sink::Sink;

use crate::Service;

type Tweak<'a, S> = Box<dyn FnOnce(&mut S) + Send + 'a>;

/// How to start a [`LocalStack`]: the backend of each service's database, the institution,
/// mTLS, whether a portal runs, the clocks, log capture, and each service's settings over
/// [`settings`]' defaults.
pub struct LocalBuilder<'a> {
    backend: Backend,
    backends: BTreeMap<Service, Backend>,
    institution: Institution,
    tls: Option<TestPki>,
    with_portal: bool,
    system_clocks: bool,
    capture_logs: bool,
    keystore: Vec<Tweak<'a, kagi_keystore::Settings>>,
    notifier: Vec<Tweak<'a, kagi_notifier::Settings>>,
    reset: Vec<Tweak<'a, kagi_reset::Settings>>,
    portal: Vec<Tweak<'a, kagi_portal::Settings>>,
}

impl std::fmt::Debug for LocalBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalBuilder")
            .field("backend", &self.backend)
            .field("backends", &self.backends)
            .field("tls", &self.tls.is_some())
            .field("with_portal", &self.with_portal)
            .field("system_clocks", &self.system_clocks)
            .field("capture_logs", &self.capture_logs)
            .finish_non_exhaustive()
    }
}

impl<'a> LocalBuilder<'a> {
    /// Every service's database on `backend` (override one with [`Self::backend_of`]).
    pub fn backend_of(mut self, service: Service, backend: Backend) -> Self {
        self.backends.insert(service, backend);
        self
    }

    /// The institution, given to the keystore, the notifier and the portal alike (as a
    /// deployment's shared file would).
    pub fn institution(mut self, institution: Institution) -> Self {
        self.institution = institution;
        self
    }

    /// Every gRPC hop (portal → keystore and reset, reset → keystore and notifier) over TLS
    /// with client certificates from `pki`.
    pub fn mtls(mut self, pki: TestPki) -> Self {
        self.tls = Some(pki);
        self
    }

    /// No portal: the reset service's own tests call it as the portal would.
    pub fn without_portal(mut self) -> Self {
        self.with_portal = false;
        self
    }

    /// The services read the system's time, as in production, instead of the two manual
    /// clocks (which then drive nothing): for a run that measures, where codes, cooldowns
    /// and one-time passwords must age by themselves.
    pub fn system_clocks(mut self) -> Self {
        self.system_clocks = true;
        self
    }

    /// No log subscriber: the services log nowhere, as a benchmark wants. The capture a
    /// test reads records every line at trace level, which costs each request CPU and
    /// keeps every line in memory.
    pub fn without_log_capture(mut self) -> Self {
        self.capture_logs = false;
        self
    }

    pub fn keystore(
        mut self,
        tweak: impl FnOnce(&mut kagi_keystore::Settings) + Send + 'a,
    ) -> Self {
        self.keystore.push(Box::new(tweak));
        self
    }

    pub fn notifier(
        mut self,
        tweak: impl FnOnce(&mut kagi_notifier::Settings) + Send + 'a,
    ) -> Self {
        self.notifier.push(Box::new(tweak));
        self
    }

    pub fn reset(mut self, tweak: impl FnOnce(&mut kagi_reset::Settings) + Send + 'a) -> Self {
        self.reset.push(Box::new(tweak));
        self
    }

    pub fn portal(mut self, tweak: impl FnOnce(&mut kagi_portal::Settings) + Send + 'a) -> Self {
        self.portal.push(Box::new(tweak));
        self
    }

    fn backend(&self, service: Service) -> Backend {
        self.backends.get(&service).copied().unwrap_or(self.backend)
    }

    /// Starts the SMTP server, then the keystore, the notifier, the reset service and the
    /// portal, each configured with its neighbours' real addresses.
    ///
    /// # Errors
    /// A service did not build (its settings, its database, its port).
    pub async fn start(self) -> anyhow::Result<LocalStack> {
        if self.capture_logs {
            kagi_testkit::logs::init();
        }
        let sink = Sink::start().await;
        let db = |service: Service| TestDatabase::new(self.backend(service), service.file());
        let (keystore_db, notifier_db, reset_db) = (
            db(Service::Keystore).await,
            db(Service::Notifier).await,
            db(Service::Reset).await,
        );
        let portal_db = match self.with_portal {
            true => Some(db(Service::Portal).await),
            false => None,
        };
        let tls = self.tls;

        let keystore_clock = Arc::new(ManualClock::new(SystemTime::now()));
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let (keystore_time, time) = match self.system_clocks {
            true => (system_clock(), system_clock()),
            false => (
                Arc::clone(&keystore_clock) as Arc<dyn Clock>,
                Arc::clone(&clock) as Arc<dyn Clock>,
            ),
        };
        let mut keystore_settings = settings::keystore(&keystore_db);
        keystore_settings.institution = self.institution.clone();
        if let Some(pki) = &tls {
            let callers = ["login", "reset", "onboarding", "admin", "portal"];
            pki.serve_mtls(
                &mut keystore_settings.server,
                &mut keystore_settings.auth,
                &callers,
            );
        }
        self.keystore
            .into_iter()
            .for_each(|t| t(&mut keystore_settings));
        let keystore = InProcess::keystore(&keystore_settings, keystore_time.clone()).await?;
        // Restarts come back on the same port, where every neighbour calls it.
        keystore_settings.server.listen_addr = keystore.addr;

        let mut notifier_settings = settings::notifier(&notifier_db, sink.port);
        notifier_settings.institution = self.institution.clone();
        if let Some(pki) = &tls {
            pki.serve_mtls(
                &mut notifier_settings.server,
                &mut notifier_settings.auth,
                &["reset"],
            );
        }
        self.notifier
            .into_iter()
            .for_each(|t| t(&mut notifier_settings));
        let notifier = InProcess::notifier(&notifier_settings).await?;

        let mut reset_settings = settings::reset(&reset_db, keystore.addr, notifier.addr);
        if let Some(pki) = &tls {
            pki.serve_mtls(
                &mut reset_settings.server,
                &mut reset_settings.auth,
                &["portal"],
            );
            over_mtls(pki, &mut reset_settings.keystore, keystore.addr, "reset");
            over_mtls(pki, &mut reset_settings.notifier, notifier.addr, "reset");
        }
        self.reset.into_iter().for_each(|t| t(&mut reset_settings));
        let reset = ResetReplica::start(&reset_settings, time.clone()).await?;

        let (portal, portal_settings) = match &portal_db {
            Some(portal_db) => {
                let mut settings =
                    settings::portal(portal_db, keystore.addr, reset.running.addr, notifier.addr);
                settings.institution = self.institution.clone();
                if let Some(pki) = &tls {
                    over_mtls(pki, &mut settings.keystore, keystore.addr, "portal");
                    over_mtls(pki, &mut settings.reset, reset.running.addr, "portal");
                }
                self.portal.into_iter().for_each(|t| t(&mut settings));
                let app = kagi_portal::Application::build_with_clock(&settings, time.clone())
                    .await
                    .context("the portal starts")?;
                let addr = app.local_addr();
                let running = InProcess::spawn(addr, |stop| app.run_until_stopped(stop));
                (Some(running), Some(settings))
            }
            None => (None, None),
        };

        Ok(LocalStack {
            clock,
            keystore_clock,
            time,
            keystore_time,
            sink,
            keystore: Some(keystore),
            keystore_settings,
            notifier,
            reset: Some(reset),
            reset_settings,
            portal,
            portal_settings,
            tls,
            keystore_db,
            notifier_db,
            reset_db,
            portal_db,
        })
    }
}

/// `client` (a plaintext client of `addr` with its token) over TLS, presenting `caller`'s
/// certificate; the token stays.
pub fn over_mtls(pki: &TestPki, client: &mut ClientSettings, addr: SocketAddr, caller: &str) {
    *client = ClientSettings {
        token: client.token.take(),
        ..pki.client_settings(addr, Some(caller))
    };
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// A whole kagi system in this process; every service stops when it is dropped.
#[derive(Debug)]
pub struct LocalStack {
    /// The reset service's and the portal's clock (unused with
    /// [`LocalBuilder::system_clocks`]).
    pub clock: Arc<ManualClock>,
    /// The keystore's clock, for one-time passwords (unused with
    /// [`LocalBuilder::system_clocks`]).
    pub keystore_clock: Arc<ManualClock>,
    /// What the reset service and the portal read the time from: `clock` or the system's.
    time: Arc<dyn Clock>,
    /// What the keystore reads the time from: `keystore_clock` or the system's.
    keystore_time: Arc<dyn Clock>,
    pub sink: Sink,
    /// `None` between [`Self::stop_keystore`] and [`Self::restart_keystore`].
    pub keystore: Option<InProcess>,
    /// The keystore's settings, with the port it keeps across restarts.
    pub keystore_settings: kagi_keystore::Settings,
    pub notifier: InProcess,
    /// `None` once a test took it to stop it.
    pub reset: Option<ResetReplica>,
    /// The reset service's settings, to start more replicas of it.
    pub reset_settings: kagi_reset::Settings,
    pub portal: Option<InProcess>,
    pub portal_settings: Option<kagi_portal::Settings>,
    /// With every gRPC hop on mTLS: the CA and certificates the services use.
    pub tls: Option<TestPki>,
    pub keystore_db: TestDatabase,
    pub notifier_db: TestDatabase,
    pub reset_db: TestDatabase,
    pub portal_db: Option<TestDatabase>,
}

impl LocalStack {
    /// A stack with every service's database on `backend`.
    pub fn builder<'a>(backend: Backend) -> LocalBuilder<'a> {
        LocalBuilder {
            backend,
            backends: BTreeMap::new(),
            institution: Institution::default(),
            tls: None,
            with_portal: true,
            system_clocks: false,
            capture_logs: true,
            keystore: Vec::new(),
            notifier: Vec::new(),
            reset: Vec::new(),
            portal: Vec::new(),
        }
    }

    /// The keystore's address (the same across restarts).
    pub fn keystore_addr(&self) -> SocketAddr {
        self.keystore_settings.server.listen_addr
    }

    /// The reset service's address, while it runs.
    pub fn reset_addr(&self) -> Option<SocketAddr> {
        self.reset.as_ref().map(|r| r.running.addr)
    }

    /// Stops the keystore as on SIGTERM (its neighbours see it gone).
    pub async fn stop_keystore(&mut self) {
        if let Some(keystore) = self.keystore.take() {
            keystore.stop().await;
        }
    }

    /// Starts the keystore again on its port, on the same database and clock.
    ///
    /// # Errors
    /// It did not build (the port taken meanwhile, the database gone).
    pub async fn restart_keystore(&mut self) -> anyhow::Result<()> {
        self.stop_keystore().await;
        self.keystore =
            Some(InProcess::keystore(&self.keystore_settings, self.keystore_time.clone()).await?);
        Ok(())
    }

    /// Another replica of the reset service, on its own port, the same database and clock.
    ///
    /// # Errors
    /// As [`LocalBuilder::start`].
    pub async fn reset_replica(&self) -> anyhow::Result<ResetReplica> {
        ResetReplica::start(&self.reset_settings, self.time.clone()).await
    }
}

/// A reset service replica, with the handles its tests drive directly.
#[derive(Debug)]
pub struct ResetReplica {
    pub running: InProcess,
    pub saga: kagi_reset::saga::ResetSaga,
    pub accounts: kagi_reset::accounts::AccountAdmin,
    /// Its argon2id hasher, which counts the verifications it ran.
    pub hasher: Arc<kagi_reset::directory::PasswordHasher>,
}

impl ResetReplica {
    /// Builds the reset service from `settings` with `clock`, and serves it.
    ///
    /// # Errors
    /// It did not build.
    pub async fn start(
        settings: &kagi_reset::Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let app = kagi_reset::Application::build_with_clock(settings, clock)
            .await
            .context("the reset service starts")?;
        let (saga, accounts) = (app.saga().clone(), app.accounts().clone());
        let hasher = Arc::clone(app.password_hasher());
        let running = InProcess::spawn(app.local_addr(), |stop| app.run_until_stopped(stop));
        Ok(Self {
            running,
            saga,
            accounts,
            hasher,
        })
    }
}

/// A service serving in this process until stopped or dropped.
#[derive(Debug)]
pub struct InProcess {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    /// Runs `serve` (an application's `run_until_stopped`) until [`Self::stop`] or drop.
    pub fn spawn<F>(addr: SocketAddr, serve: impl FnOnce(ShutdownSignal) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(Box::pin(async {
            let _ = stopped.await;
        })));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn keystore(
        settings: &kagi_keystore::Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let app = kagi_keystore::Application::build_with_clock(settings, clock)
            .await
            .context("the keystore starts")?;
        Ok(Self::spawn(app.local_addr(), |stop| {
            app.run_until_stopped(stop)
        }))
    }

    async fn notifier(settings: &kagi_notifier::Settings) -> anyhow::Result<Self> {
        let app = kagi_notifier::Application::build(settings)
            .await
            .context("the notifier starts")?;
        Ok(Self::spawn(app.local_addr(), |stop| {
            app.run_until_stopped(stop)
        }))
    }

    /// Stops as on SIGTERM and waits (up to 10 s) until it has.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// What an application's `run_until_stopped` waits on.
pub type ShutdownSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;
