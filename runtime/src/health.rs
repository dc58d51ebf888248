//! What a server says about itself: health and reflection.
//!
//! # Liveness and readiness
//! The standard `grpc.health.v1.Health` service answers for two names:
//! - `""` (the empty service name) is **liveness**: the process is up and serving gRPC. It
//!   turns NOT_SERVING only when shutdown begins. Point the Kubernetes `livenessProbe` here.
//! - each service's own name (`kagi.v1.Keystore`, `kagi.v1.Reset`…) is **readiness**: it
//!   also needs the database, pinged every [`READINESS_INTERVAL`]; NOT_SERVING while the
//!   database does not answer, SERVING again once it does. Point the `readinessProbe` here,
//!   so a replica cut off from its database stops receiving calls without being restarted.
//!
//! # The kubelet's view: `/livez` and `/readyz`
//! The gRPC ports serve only mTLS in production, which Kubernetes' gRPC probe cannot speak.
//! The same two answers are therefore also served over plain HTTP on the metrics listener
//! (`[metrics] listen_addr`, see [`crate::metrics`]), which carries no secret: `GET /livez`
//! is 200 while the process serves, `GET /readyz` is 200 while [`Readiness`] is ready and
//! 503 otherwise. One [`Readiness`] is shared by the gRPC health names and `/readyz`, so both
//! always tell the same story; the portal, which has no gRPC health, drives it the same way.
//!
//! # Reflection
//! Every service is built from one descriptor set holding all of `kagi.v1`; reflection
//! serves a copy holding only the server's own services (and the files they need), so
//! `grpcurl list` on the keystore shows the keystore, not Reset or Notifier.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prost::Message as _;
use prost_types::FileDescriptorSet;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db::Database;
use crate::shutdown::Stopping;

/// How often readiness is re-checked.
pub const READINESS_INTERVAL: Duration = Duration::from_secs(2);

type Probe = dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync;

/// How readiness is decided: `true` while the service can do its work.
#[derive(Clone)]
pub struct ReadinessProbe(Arc<Probe>);

impl std::fmt::Debug for ReadinessProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadinessProbe")
    }
}

impl ReadinessProbe {
    /// A probe from any async check.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        Self(Arc::new(move || Box::pin(check())))
    }

    async fn ready(&self) -> bool {
        (self.0)().await
    }
}

/// Readiness from the database: a `SELECT 1` answered within two seconds.
pub fn database_probe<S: Send + Sync + 'static>(db: &Database<S>) -> ReadinessProbe {
    let pool = db.pool().clone();
    ReadinessProbe::new(move || {
        let pool = pool.clone();
        async move {
            let ping = sqlx::query("SELECT 1").execute(&pool);
            matches!(
                tokio::time::timeout(Duration::from_secs(2), ping).await,
                Ok(Ok(_))
            )
        }
    })
}

/// Whether the service can do its work right now: what `/readyz` answers, kept in step with
/// the gRPC readiness names. Ready from the start (the database answered at build time).
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Default for Readiness {
    fn default() -> Self {
        Self(Arc::new(AtomicBool::new(true)))
    }
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
}

/// `GET /livez` (200 while the process serves) and `GET /readyz` (200 while `readiness` is
/// ready, 503 otherwise), for the metrics listener. Plain text bodies, no detail: the
/// listener is reachable by whatever may scrape it.
pub fn probe_routes(readiness: Readiness) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (http::StatusCode::OK, "ready")
                    } else {
                        (http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// Keeps `readiness`, and the gRPC readiness names when `health` is given, in step with
/// `probe` until shutdown begins (which then owns the status). Liveness (`""`) is left
/// alone.
pub async fn watch_readiness(
    readiness: Readiness,
    health: Option<(HealthReporter, Vec<String>)>,
    probe: ReadinessProbe,
    stopping: Stopping,
) {
    let mut ready = true;
    loop {
        tokio::select! {
            () = stopping.clone().begun() => return,
            () = tokio::time::sleep(READINESS_INTERVAL) => {}
        }
        let now = probe.ready().await;
        if stopping.has_begun() {
            return;
        }
        if now != ready {
            ready = now;
            readiness.set(ready);
            let status = if ready {
                tracing::info!("database reachable again: ready");
                ServingStatus::Serving
            } else {
                tracing::error!("database unreachable: not ready");
                ServingStatus::NotServing
            };
            if let Some((health, services)) = &health {
                for service in services {
                    health.set_service_status(service, status).await;
                }
            }
        }
    }
}

/// The descriptor set reflection serves for `services`, and the paths of their methods
/// (`/kagi.v1.Keystore/VerifyCode`), which bound the metrics' labels.
///
/// # Errors
/// The descriptor set does not decode.
pub fn own_descriptors(
    descriptor_set: &[u8],
    services: &[&str],
) -> Result<(Vec<u8>, Vec<String>), prost::DecodeError> {
    let mut set = FileDescriptorSet::decode(descriptor_set)?;
    let mut methods = Vec::new();
    let mut needed: BTreeSet<String> = BTreeSet::new();
    for file in &mut set.file {
        let package = file.package.clone().unwrap_or_default();
        let full = |name: &str| {
            if package.is_empty() {
                name.to_owned()
            } else {
                format!("{package}.{name}")
            }
        };
        file.service
            .retain(|s| services.contains(&full(s.name()).as_str()));
        for service in &file.service {
            let name = full(service.name());
            methods.extend(
                service
                    .method
                    .iter()
                    .map(|m| format!("/{name}/{}", m.name())),
            );
        }
        if !file.service.is_empty() {
            needed.insert(file.name().to_owned());
        }
    }
    // The files the kept ones import, transitively.
    loop {
        let before = needed.len();
        for file in &set.file {
            if needed.contains(file.name()) {
                needed.extend(file.dependency.iter().cloned());
            }
        }
        if needed.len() == before {
            break;
        }
    }
    set.file.retain(|f| needed.contains(f.name()));
    for (service, rpcs) in [
        ("grpc.health.v1.Health", &["Check", "Watch"][..]),
        (
            "grpc.reflection.v1.ServerReflection",
            &["ServerReflectionInfo"],
        ),
        (
            "grpc.reflection.v1alpha.ServerReflection",
            &["ServerReflectionInfo"],
        ),
    ] {
        methods.extend(rpcs.iter().map(|m| format!("/{service}/{m}")));
    }
    Ok((set.encode_to_vec(), methods))
}
