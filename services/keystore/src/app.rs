//! Wires settings, storage, crypto and the gRPC server into a running keystore. Tests, the
//! benchmark and `kagi-keystore serve` all start it through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kagi_runtime::health::database_probe;
use kagi_runtime::{
    Authorizer, BackgroundTasks, CallerAuthLayer, Clock, GrpcServer, Metrics, Stopping, SystemClock,
};

use crate::config::Settings;
use crate::grpc::KeystoreGrpc;
use crate::grpc::admin::KeystoreAdminGrpc;
use crate::retention::{AuditRetention, PURGE_EVERY};
use crate::service::Keystore;
use crate::store::Db;

/// Who may call what unless `auth.allow` says otherwise: only the reset service rotates,
/// the login system verifies, and so does the portal's own login (its second factor,
/// off campus); only the portal shows keys.
pub const DEFAULT_ALLOW: &[(&str, &[&str])] = &[
    ("Enroll", &["onboarding", "admin"]),
    ("GetCurrentKey", &["portal"]),
    ("RotateKey", &["reset"]),
    ("VerifyCode", &["login", "portal"]),
    ("CheckLoginPolicy", &["login", "portal"]),
    ("ListAuditEvents", &["admin"]),
    // "Check my authenticator" answers only the portal, whose session can see the key.
    ("CheckAuthenticator", &["portal"]),
    // kagi.v1.KeystoreAdmin: the help desk's console (portal) and `kagi admin` only.
    ("GetAccount", &["helpdesk"]),
    ("UnlockAccount", &["helpdesk"]),
    ("RevokeKey", &["helpdesk"]),
];

/// The gRPC service name reported by health checks.
pub const SERVICE_NAME: &str = "kagi.v1.Keystore";

/// The help desk's service, served beside it (health and reflection list both).
pub const ADMIN_SERVICE_NAME: &str = "kagi.v1.KeystoreAdmin";

/// A keystore bound to its port, ready to serve.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    keystore: Keystore,
    grpc: KeystoreGrpc,
    auth: CallerAuthLayer,
    retention: AuditRetention,
}

impl Application {
    /// Builds with the system clock.
    ///
    /// # Errors
    /// See [`Application::build_with_clock`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects the database (migrating it when configured), loads the KEKs and binds the
    /// listener.
    ///
    /// # Errors
    /// Invalid settings, an unreachable database, missing KEKs or a taken port.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let keystore = keystore(settings, Arc::clone(&clock)).await?;
        let retention =
            AuditRetention::new(keystore.db().clone(), clock, settings.audit.retention());
        let auth =
            CallerAuthLayer::new(Authorizer::new("/kagi.v1.", &settings.auth, DEFAULT_ALLOW)?);
        let mut metrics = Metrics::new();
        crate::metrics::register(&mut metrics);
        metrics.database(keystore.db());
        let server = GrpcServer::bind(&settings.server)
            .await?
            .with_metrics(&settings.metrics, metrics)
            .await?
            .with_readiness(database_probe(keystore.db()));
        tracing::info!(addr = %server.local_addr(), backend = ?keystore.db().backend(), "keystore listening");
        let grpc = KeystoreGrpc::new(keystore.clone(), &settings.totp.issuer);
        Ok(Self {
            server,
            keystore,
            grpc,
            auth,
            retention,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/metrics` is served, when `metrics.listen_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    pub fn keystore(&self) -> &Keystore {
        &self.keystore
    }

    /// The audit trail's purge, which [`Application::run_until_stopped`] runs hourly.
    pub fn audit_retention(&self) -> &AuditRetention {
        &self.retention
    }

    /// Serves until `shutdown` resolves, purging the audit trail at start and then hourly (and
    /// on SQLite checkpointing the write-ahead log, [`kagi_runtime::Database::keep_wal`]);
    /// then drains in-flight calls, waits up to the grace period for a purge in progress
    /// (one cut short keeps the batches it finished; the next start goes on), and closes
    /// the pool.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stopping = Stopping::on(shutdown);
        let mut background = BackgroundTasks::new(stopping.clone());
        if self.retention.is_on() {
            let retention = self.retention.clone();
            background.every("audit-retention", PURGE_EVERY, move || {
                let retention = retention.clone();
                async move {
                    if let Err(e) = retention.purge().await {
                        tracing::warn!(error = %e, "audit retention purge failed");
                    }
                }
            });
        }
        self.keystore.db().keep_wal(&mut background);
        let grace = self.server.grace();
        let admin = KeystoreAdminGrpc::new(self.keystore.clone());
        let routes =
            tonic::service::Routes::new(self.grpc.into_server()).add_service(admin.into_server());
        let served = self
            .server
            .serve(
                routes,
                &[SERVICE_NAME, ADMIN_SERVICE_NAME],
                kagi_proto::FILE_DESCRIPTOR_SET,
                self.auth,
                stopping.begun(),
            )
            .await;
        background.join(grace).await;
        self.keystore.db().close().await;
        served
    }
}

/// The keystore use cases over a connected database, without a server (for `rekey`).
///
/// # Errors
/// Invalid settings, an unreachable database or missing KEKs.
pub async fn keystore(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<Keystore> {
    let params = settings.totp.params()?;
    let verifier = settings.totp.verifier()?;
    let lockout = settings.lockout.policy()?;
    let keyring = settings.kek.keyring()?;
    let db = Db::open(&settings.database).await?;
    Ok(Keystore::new(
        db,
        keyring,
        clock,
        params,
        verifier,
        lockout,
        settings.campus(),
        settings.check.policy(&verifier)?,
        settings.rotation.replay_window(),
        &settings.institution.resolve()?.otpauth_issuer,
    ))
}
