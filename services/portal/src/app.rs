//! Wires settings, the database, the gRPC clients and the router into a running portal.
//! Tests, `kagi dev` and `kagi-portal serve` all start it through [`Application::build`].

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kagi_runtime::health::{database_probe, watch_readiness};
use kagi_runtime::metrics::{HttpMetrics, MetricsEndpoint, track_http};
use kagi_runtime::shutdown::with_grace;
use kagi_runtime::{BackgroundTasks, Clock, Metrics, Stopping, SystemClock};
use tokio::net::TcpListener;

use crate::clients::Clients;
use crate::config::Settings;
use crate::store::Db;
use crate::web::{self, AppState};

/// A portal bound to its port, ready to serve.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    metrics: Option<(HttpMetrics, MetricsEndpoint)>,
}

impl Application {
    /// Builds with the system clock.
    ///
    /// # Errors
    /// See [`Application::build_with_clock`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects the database (migrating it when configured), prepares the gRPC clients and
    /// binds the listener.
    ///
    /// # Errors
    /// An unreachable database, a missing token or a taken port.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let mut settings = settings.clone();
        settings.institution = settings
            .institution
            .resolve()
            .context("the [institution] settings")?;
        let settings = &settings;
        let db = Db::open(&settings.database)
            .await
            .context("opening the portal database")?;
        let mut clients = Clients::new(&settings.keystore, &settings.reset)?;
        settings.helpdesk.check(settings.login.mode)?;
        clients.helpdesk = crate::clients::HelpdeskClients::new(&settings.helpdesk)?;
        let proxy_secret = settings.login.proxy_secret()?.map(Arc::new);
        settings.login.authn_context()?;
        let listener = TcpListener::bind(settings.server.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.server.listen_addr))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(addr = %local_addr, login = ?settings.login.mode, "portal listening");
        let mut metrics = Metrics::new();
        metrics.database(&db);
        let http = metrics.http_server();
        let metrics = MetricsEndpoint::bind(&settings.metrics, metrics)
            .await?
            .map(|endpoint| (http, endpoint));
        Ok(Self {
            listener,
            local_addr,
            metrics,
            state: AppState {
                db,
                clients,
                clock,
                settings: Arc::new(settings.clone()),
                proxy_secret,
                dev_outbox: None,
            },
        })
    }

    /// `kagi dev` only: list the `.eml` files the notifier writes to `dir` at `/outbox`, so a
    /// newcomer can read the confirmation code without a mail server. No setting switches
    /// this on, so a production portal never shows anybody's mail.
    #[must_use]
    pub fn with_dev_outbox(mut self, dir: std::path::PathBuf) -> Self {
        self.state.dev_outbox = Some(Arc::new(dir));
        self
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served, when `metrics.listen_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(|(_, endpoint)| endpoint.local_addr())
    }

    /// The router, for tests that call it without a socket.
    pub fn router(&self) -> axum::Router {
        web::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves (purging sessions every minute and, on SQLite,
    /// checkpointing the write-ahead log, [`kagi_runtime::Database::keep_wal`]), then
    /// finishes in-flight requests (up to the grace period) and closes the pool.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let state = self.state;
        let grace = Duration::from_secs(state.settings.server.shutdown_grace_secs);
        let stopping = Stopping::on(shutdown);
        let mut background = BackgroundTasks::new(stopping.clone());
        background.every("session purge", Duration::from_secs(60), {
            let state = state.clone();
            move || {
                let state = state.clone();
                async move { purge(&state).await }
            }
        });
        state.db.keep_wal(&mut background);
        let http = match self.metrics {
            Some((http, endpoint)) => {
                // `/readyz` on the metrics port follows the sessions database, like the
                // gRPC services' readiness; the pages' own `/healthz` stays a liveness check.
                tokio::spawn(watch_readiness(
                    endpoint.readiness(),
                    None,
                    database_probe(&state.db),
                    stopping.clone(),
                ));
                tokio::spawn(endpoint.serve(stopping.clone().begun()));
                Some(http)
            }
            None => None,
        };
        let app = web::router(state.clone())
            .layer(axum::middleware::from_fn_with_state(http, track_http))
            .into_make_service_with_connect_info::<SocketAddr>();
        let serving = axum::serve(self.listener, app)
            .with_graceful_shutdown(stopping.clone().begun())
            .into_future();
        if let Some(result) = with_grace(serving, stopping, grace, "in-flight requests").await {
            result?;
        }
        background.join(grace).await;
        state.db.close().await;
        tracing::info!("portal stopped");
        Ok(())
    }
}

/// Deletes idle and expired sessions and spent rate-limit windows (run once a minute).
async fn purge(state: &AppState) {
    let ms = |secs: u64| i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let session = &state.settings.session;
    let (idle, max_age) = (
        ms(session.idle_timeout_secs),
        ms(session.absolute_timeout_secs),
    );
    let window = ms(state.settings.login.window_secs);
    if let Err(e) = state
        .db
        .purge(state.clock.now_ms(), idle, max_age, window)
        .await
    {
        tracing::warn!(error = %e, "purging idle sessions failed");
    }
}
