//! Wires the notifier together: database, templates, transport, the gRPC server and the
//! delivery worker, started and stopped as one. Tests, the benchmark, the all-in-one
//! launcher and `kagi-notifier serve` all start it through [`Application::build`].

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use kagi_proto::v1::notifier_server::NotifierServer;
use kagi_runtime::auth::Authorizer;
use kagi_runtime::health::database_probe;
use kagi_runtime::{BackgroundTasks, CallerAuthLayer, GrpcServer, Metrics, Stopping};
use tokio::sync::{Notify, watch};

use crate::admin::NotifierAdminService;
use crate::config::Settings;
use crate::grpc::{DEFAULT_ALLOW, NotifierService};
use crate::mail::MailComposer;
use crate::seal::PayloadSeal;
use crate::store::Db;
use crate::transport::Mailer;
use crate::worker::Worker;
use kagi_runtime::{Clock, SystemClock};

/// A notifier bound to its port, ready to run.
#[derive(Debug)]
pub struct Application {
    server: GrpcServer,
    service: NotifierService,
    worker: Option<Arc<Worker>>,
    auth: CallerAuthLayer,
    store: Db,
    max_request_bytes: usize,
}

impl Application {
    /// Builds the notifier on the system clock. Takes `&Settings` like the other services;
    /// an owned `Settings` is still accepted so callers elsewhere in the workspace keep
    /// compiling until they pass a reference.
    ///
    /// # Errors
    /// See [`Application::build_with_clock`].
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    /// Connects the database (migrating it when configured), loads and checks the templates,
    /// prepares the transport and binds the listener, so every configuration error surfaces
    /// before serving.
    ///
    /// # Errors
    /// Any of those steps failing.
    pub async fn build_with_clock(
        settings: &Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let store = Db::open(&settings.database).await?;
        let seal = Arc::new(PayloadSeal::load_or_create(&settings.sealing.key_file)?);
        let institution = settings
            .institution
            .resolve()
            .map_err(|e| e.context("the [institution] settings"))?;
        let composer = MailComposer::new(&settings.mail, &institution)?;
        let mailer = Mailer::from_settings(&settings.transport)?;
        let auth =
            CallerAuthLayer::new(Authorizer::new("/kagi.v1.", &settings.auth, DEFAULT_ALLOW)?);
        let mut metrics = Metrics::new();
        crate::metrics::register(&mut metrics, &store, Arc::clone(&clock));
        metrics.database(&store);
        let server = GrpcServer::bind(&settings.server)
            .await?
            .with_metrics(&settings.metrics, metrics)
            .await?
            .with_readiness(database_probe(&store));
        tracing::info!(addr = %server.local_addr(), "kagi-notifier listening");
        let wake = Arc::new(Notify::new());
        let service = NotifierService {
            store: store.clone(),
            clock: Arc::clone(&clock),
            wake: Arc::clone(&wake),
            settings: settings.delivery.clone(),
            seal: Arc::clone(&seal),
        };
        let worker = settings.delivery.worker_enabled.then(|| {
            let replica = std::env::var("HOSTNAME").unwrap_or_else(|_| "notifier".into());
            let suffix = uuid::Uuid::new_v4().simple().to_string();
            Arc::new(Worker {
                store: store.clone(),
                mailer,
                composer,
                clock,
                settings: settings.delivery.clone(),
                wake,
                seal,
                replica: format!("{replica}-{}", &suffix[..8]),
            })
        });
        Ok(Self {
            server,
            service,
            worker,
            auth,
            store,
            max_request_bytes: settings.limits.max_request_bytes,
        })
    }

    /// The address the gRPC server listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Where `/metrics` is served, when `metrics.listen_addr` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.metrics_addr()
    }

    /// This replica's name in the lease owners its worker writes (`None` without a worker).
    pub fn replica(&self) -> Option<&str> {
        self.worker.as_ref().map(|worker| worker.replica.as_str())
    }

    /// The queue, for tests and tools that inspect it.
    pub fn store(&self) -> &Db {
        &self.store
    }

    /// Serves and delivers (and on SQLite checkpoints the write-ahead log every
    /// [`kagi_runtime::db::WAL_CHECKPOINT_EVERY`]) until `shutdown` resolves; then stops taking
    /// calls, lets calls, sends and a checkpoint in flight finish, and returns.
    ///
    /// # Errors
    /// The server failing.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let server_shutdown = {
            let stop_tx = Arc::clone(&stop_tx);
            let mut stop_rx = stop_rx.clone();
            async move {
                tokio::select! {
                    () = shutdown => { let _ = stop_tx.send(true); }
                    _ = stop_rx.wait_for(|stop| *stop) => {}
                }
            }
        };
        let mut background = BackgroundTasks::new(Stopping::on({
            let mut stop_rx = stop_rx.clone();
            async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }
        }));
        self.store.keep_wal(&mut background);
        let grace = self.server.grace();
        // Its messages are a few hundred bytes; refuse megabytes before decoding them.
        let shared = Arc::new(self.service);
        let service = NotifierServer::from_arc(Arc::clone(&shared))
            .max_decoding_message_size(self.max_request_bytes);
        let admin = NotifierAdminService::new(shared).into_server(self.max_request_bytes);
        let routes = tonic::service::Routes::new(service).add_service(admin);
        let serving = async {
            let result = self
                .server
                .serve(
                    routes,
                    &["kagi.v1.Notifier", "kagi.v1.NotifierAdmin"],
                    kagi_proto::FILE_DESCRIPTOR_SET,
                    self.auth,
                    server_shutdown,
                )
                .await;
            let _ = stop_tx.send(true);
            result
        };
        let delivering = async {
            if let Some(worker) = self.worker {
                worker.run(stop_rx).await;
            }
        };
        let (result, ()) = tokio::join!(serving, delivering);
        background.join(grace).await;
        self.store.close().await;
        result
    }
}
