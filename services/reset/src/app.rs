//! Wires settings, storage, the directory, the downstream clients and the gRPC server into
//! a running reset service. Tests, the benchmark and `kagi-reset serve` all start it
//! through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kagi_runtime::health::database_probe;
use kagi_runtime::{
    Authorizer, BackgroundTasks, CallerAuthLayer, Clock, GrpcServer, Metrics, Stopping, SystemClock,
};

use crate::accounts::AccountAdmin;
use crate::config::Settings;
use crate::directory::{PasswordHasher, SqlDirectory};
use crate::downstream;
use crate::grpc::{DirectoryGrpc, ResetAdminGrpc, ResetGrpc};
use crate::limits::{AttemptLimiter, RateLimits};
use crate::login::LocalLogin;
use crate::saga::ResetSaga;
use crate::store::Db;

/// Only the portal drives resets unless `auth.allow` says otherwise.
pub const DEFAULT_ALLOW: &[(&str, &[&str])] = &[
    ("StartReset", &["portal"]),
    ("ResendCode", &["portal"]),
    ("VerifyCode", &["portal"]),
    ("ConfirmReset", &["portal"]),
    ("CancelReset", &["portal"]),
    ("GetReset", &["portal"]),
    ("Authenticate", &["portal"]),
    ("NotifyKeyDisplayed", &["portal"]),
    // kagi.v1.ResetAdmin: the help desk's console (portal) and `kagi admin` only.
    ("GetAccountReset", &["helpdesk"]),
    ("CancelAccountReset", &["helpdesk"]),
    ("NotifyOperatorAction", &["helpdesk"]),
];

/// The gRPC service names reported by health checks.
pub const SERVICE_NAMES: [&str; 3] = ["kagi.v1.Reset", "kagi.v1.Directory", "kagi.v1.ResetAdmin"];

/// A reset service bound to its port, ready to serve.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    saga: ResetSaga,
    login: LocalLogin,
    accounts: AccountAdmin,
    hasher: Arc<PasswordHasher>,
    auth: CallerAuthLayer,
    sweep_every: Option<Duration>,
}

impl Application {
    /// Builds with the system clock.
    ///
    /// # Errors
    /// See [`Application::build_with_clock`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects (and migrates) the database, prepares the directory, the code key and the
    /// downstream clients, and binds the listener.
    ///
    /// # Errors
    /// Invalid settings, an unreachable database or a taken port.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let db = database(settings).await?;
        let hasher = Arc::new(password_hasher(settings).await?);
        let directory = Arc::new(SqlDirectory::new(db.clone(), Arc::clone(&hasher)));
        let p = &settings.policy;
        let limits = RateLimits {
            per_account_max: p.per_account_max,
            per_account_window_ms: secs_ms(p.per_account_window_secs),
            per_ip_max: p.per_ip_max,
            per_ip_window_ms: secs_ms(p.per_ip_window_secs),
            starts_per_hour: p.starts_per_hour,
        };
        let limiter = AttemptLimiter::new(db.clone(), limits);
        let login = LocalLogin::new(directory.clone(), limiter.clone(), Arc::clone(&clock));
        let mut metrics = Metrics::new();
        crate::metrics::register(&mut metrics, &db, Arc::clone(&clock));
        metrics.database(&db);
        let saga = ResetSaga::new(
            db.clone(),
            directory,
            settings.code_hasher()?,
            clock,
            settings.policy.policy()?,
            limiter,
            downstream::keystore(&settings.keystore)?,
            downstream::notifier(&settings.notifier)?,
        );
        let auth =
            CallerAuthLayer::new(Authorizer::new("/kagi.v1.", &settings.auth, DEFAULT_ALLOW)?);
        let server = GrpcServer::bind(&settings.server)
            .await?
            .with_metrics(&settings.metrics, metrics)
            .await?
            .with_readiness(database_probe(&db));
        tracing::info!(addr = %server.local_addr(), backend = ?db.backend(), "reset service listening");
        let sweep_every = (settings.sweeper.interval_secs > 0)
            .then(|| Duration::from_secs(settings.sweeper.interval_secs));
        Ok(Self {
            server,
            saga,
            login,
            accounts: AccountAdmin::new(db, Arc::clone(&hasher)),
            hasher,
            auth,
            sweep_every,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/metrics` is served, when `metrics.listen_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    pub fn saga(&self) -> &ResetSaga {
        &self.saga
    }

    pub fn accounts(&self) -> &AccountAdmin {
        &self.accounts
    }

    /// The argon2id hasher every password check of this service goes through; its count
    /// of verifications lets tests prove each answer cost exactly one.
    pub fn password_hasher(&self) -> &Arc<PasswordHasher> {
        &self.hasher
    }

    /// Serves until `shutdown` resolves, sweeping at start and then periodically (and on
    /// SQLite checkpointing the write-ahead log, [`kagi_runtime::Database::keep_wal`]), then
    /// drains in-flight calls, lets a sweep in progress finish, and closes the pool.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = Stopping::on(shutdown);
        let mut background = BackgroundTasks::new(stopping.clone());
        if let Some(every) = self.sweep_every {
            let saga = self.saga.clone();
            // The first round is immediate: a restart finishes what a crash left.
            background.every("sweeper", every, move || {
                let saga = saga.clone();
                async move {
                    if let Err(e) = saga.sweep().await {
                        tracing::warn!(error = %e, "sweep failed");
                    }
                }
            });
        }
        self.saga.db().keep_wal(&mut background);
        let grace = self.server.grace();
        let routes = tonic::service::Routes::new(ResetGrpc::new(self.saga.clone()).into_server())
            .add_service(DirectoryGrpc::new(self.login).into_server())
            .add_service(ResetAdminGrpc::new(self.saga.clone()).into_server());
        let served = self
            .server
            .serve(
                routes,
                &SERVICE_NAMES,
                kagi_proto::FILE_DESCRIPTOR_SET,
                self.auth,
                stopping.begun(),
            )
            .await;
        // A sweep in progress finishes its saga before the pool closes.
        background.join(grace).await;
        self.saga.db().close().await;
        served
    }
}

/// The database, migrated when configured.
///
/// # Errors
/// An unreachable database or a failed migration.
pub async fn database(settings: &Settings) -> anyhow::Result<Db> {
    Ok(Db::open(&settings.database).await?)
}

/// The argon2id hasher; building it computes the dummy hash, off the async runtime.
///
/// # Errors
/// Invalid argon2 parameters.
pub async fn password_hasher(settings: &Settings) -> anyhow::Result<PasswordHasher> {
    let params = settings.password;
    tokio::task::spawn_blocking(move || PasswordHasher::new(params)).await?
}

fn secs_ms(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}
