//! The gRPC server every kagi service runs: bound before it serves (port 0 allowed, the real
//! address exposed), with per-call trace spans, caller authentication, health, reflection,
//! TLS (with client certificates: mTLS), and a graceful shutdown that finishes in-flight calls.
//!
//! Certificates are read once at start: tonic's `ServerTlsConfig` is fixed when the server
//! starts, and swapping it would mean a hand-written rustls acceptor. A renewed certificate
//! therefore takes a restart (a rolling restart of the Deployment after cert-manager renews
//! the Secret); caller tokens, by contrast, are re-read while serving.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::CallerAuthLayer;
use crate::health::{self, Readiness, ReadinessProbe};
use crate::metrics::{
    GrpcMetricsLayer, GrpcServerMetrics, Metrics, MetricsEndpoint, MetricsSettings,
};
use crate::shutdown::{Stopping, with_grace};
use crate::telemetry;

/// Where and how a service listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// PEM certificate chain; with `tls_key`, serve TLS (rustls) instead of plaintext.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): with TLS, clients must present a certificate chaining to it
    /// (mTLS); `auth.certificate_callers` may then name callers by their certificate.
    pub tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address. Only for a mesh whose sidecar terminates
    /// TLS in front of this port; otherwise passwords, setup keys and codes cross the
    /// network in clear, so without TLS such an address is refused.
    pub allow_plaintext: bool,
    /// Calls still running this long after SIGTERM are abandoned.
    pub shutdown_grace_secs: u64,
}

impl ServerSettings {
    /// Settings listening on `listen_addr`, plaintext.
    pub fn on(listen_addr: SocketAddr) -> Self {
        Self {
            listen_addr,
            ..Self::default()
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 50051)),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            allow_plaintext: false,
            shutdown_grace_secs: 20,
        }
    }
}

/// A bound, not yet serving, gRPC server.
#[derive(Debug)]
pub struct GrpcServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<ServerTlsConfig>,
    grace: Duration,
    metrics: Option<(GrpcServerMetrics, MetricsEndpoint)>,
    readiness: Option<ReadinessProbe>,
}

impl GrpcServer {
    /// Binds the listener and loads TLS material, so errors surface before serving.
    ///
    /// # Errors
    /// The address is taken, the certificate, key or client CA cannot be read, or a
    /// non-loopback address would serve plaintext without `allow_plaintext`.
    pub async fn bind(settings: &ServerSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let tls = tls_config(settings)?;
        if tls.is_none() && !settings.listen_addr.ip().is_loopback() && !settings.allow_plaintext {
            anyhow::bail!(
                "refusing to serve plaintext on {}: set server.tls_cert and server.tls_key \
                 (and server.tls_client_ca for mTLS), or server.allow_plaintext = true when a \
                 service mesh terminates TLS in front of this port",
                settings.listen_addr
            );
        }
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            local_addr,
            tls,
            grace: Duration::from_secs(settings.shutdown_grace_secs),
            metrics: None,
            readiness: None,
        })
    }

    /// Serves `metrics`, plus RED metrics of every call, on `settings.listen_addr` (when set).
    ///
    /// # Errors
    /// The metrics address is taken.
    pub async fn with_metrics(
        mut self,
        settings: &MetricsSettings,
        mut metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let red = metrics.grpc_server();
        self.metrics = MetricsEndpoint::bind(settings, metrics)
            .await?
            .map(|endpoint| (red, endpoint));
        Ok(self)
    }

    /// Where `/metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
            .as_ref()
            .map(|(_, endpoint)| endpoint.local_addr())
    }

    /// Readiness follows `probe` (see [`crate::health`]); liveness does not.
    #[must_use]
    pub fn with_readiness(mut self, probe: ReadinessProbe) -> Self {
        self.readiness = Some(probe);
        self
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How long in-flight work may run on after shutdown begins.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Serves `routes` plus health and reflection until `shutdown` resolves, then reports
    /// NOT_SERVING, stops accepting and waits for in-flight calls (up to the grace period).
    ///
    /// `services` are the fully-qualified names reported as SERVING by the health service;
    /// `descriptor_set` is the encoded `FileDescriptorSet` reflection serves, filtered to
    /// `services` (see [`crate::health`]).
    ///
    /// # Errors
    /// A broken descriptor set, TLS setup or transport failure.
    pub async fn serve(
        self,
        routes: Routes,
        services: &[&str],
        descriptor_set: &[u8],
        auth: CallerAuthLayer,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (health, health_service) = tonic_health::server::health_reporter();
        set_all(&health, services, ServingStatus::Serving).await;
        let (descriptor_set, methods) = health::own_descriptors(descriptor_set, services)?;
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(&descriptor_set)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both versions: grpcurl before 1.9 and many other tools only speak v1alpha.
        let (reflection_v1, reflection_v1alpha) =
            (reflection().build_v1()?, reflection().build_v1alpha()?);

        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let stopping = Stopping::on(shutdown);
        // Caller tokens follow their files (a rotated Kubernetes Secret) while serving.
        tokio::spawn(auth.authorizer().watch(stopping.clone().begun()));
        let (metrics_layer, readiness) = match self.metrics {
            Some((red, endpoint)) => {
                let readiness = endpoint.readiness();
                tokio::spawn(endpoint.serve(stopping.clone().begun()));
                (red.layer(methods), readiness)
            }
            None => (GrpcMetricsLayer::default(), Readiness::default()),
        };
        if let Some(probe) = self.readiness {
            let names = services.iter().map(|s| (*s).to_owned()).collect();
            tokio::spawn(health::watch_readiness(
                readiness.clone(),
                Some((health.clone(), names)),
                probe,
                stopping.clone(),
            ));
        }
        tokio::spawn({
            let stopping = stopping.clone();
            let names: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
            async move {
                stopping.begun().await;
                // Readiness drops, so load balancers stop sending new calls.
                readiness.set(false);
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                set_all(&health, &names, ServingStatus::NotServing).await;
            }
        });

        let incoming = TcpIncoming::from(self.listener).with_nodelay(Some(true));
        let serving = builder
            .trace_fn(telemetry::server_span)
            .layer(metrics_layer)
            .layer(auth)
            .layer(telemetry::AccessLogLayer)
            .add_routes(routes)
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, stopping.clone().begun());
        // Once shutdown begins, in-flight calls get the grace period to finish.
        if let Some(result) = with_grace(serving, stopping, self.grace, "in-flight calls").await {
            result?;
        }
        tracing::info!("server stopped");
        Ok(())
    }
}

/// The server's TLS configuration from its files, `None` for plaintext.
fn tls_config(settings: &ServerSettings) -> anyhow::Result<Option<ServerTlsConfig>> {
    use anyhow::Context as _;
    let read =
        |path: &PathBuf| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    let mut tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            ServerTlsConfig::new().identity(Identity::from_pem(read(cert)?, read(key)?))
        }
        (None, None) if settings.tls_client_ca.is_some() => {
            anyhow::bail!("tls_client_ca needs tls_cert and tls_key (mTLS is TLS first)")
        }
        (None, None) => return Ok(None),
        _ => anyhow::bail!("tls_cert and tls_key must be set together"),
    };
    if let Some(ca) = &settings.tls_client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

async fn set_all(health: &HealthReporter, services: &[&str], status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in services {
        health.set_service_status(*service, status).await;
    }
}
