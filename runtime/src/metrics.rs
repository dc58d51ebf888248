//! Prometheus metrics, wired once for every service: the `[metrics]` settings section, a
//! plain-HTTP `/metrics` endpoint on its own port, RED metrics per RPC for the gRPC server
//! (a tower layer), outgoing-call metrics for clients, database pool gauges and the waits
//! for a connection, and a place for each service to register its own domain metrics.
//!
//! # Why `prometheus-client`
//! It is the Prometheus project's own Rust client: small (no HTTP stack, no protobuf, a
//! handful of dependencies), typed label sets that make an unbounded label a compile-time
//! decision rather than an accident, OpenMetrics text output, and no global registry, so
//! every server in a process (the all-in-one `kagi dev`, the tests) exposes only its own
//! series. `metrics` + its exporter installs a global recorder (one per process), and
//! OpenTelemetry metrics would add an SDK pipeline for what is, here, a scrape endpoint.
//!
//! # Ports
//! `/metrics` is served on `metrics.listen_addr`, never on the gRPC or portal port (scrapes
//! need no bearer token and must not reach the RPCs). Unset, no endpoint is opened: tests,
//! benchmarks and examples start many servers per process. The shipped manifests and
//! `kagi dev` use the documented ports: keystore 9051, reset 9052, notifier 9053, portal 9080
//! (the service's own port with 9 in front of its last three digits). The same listener
//! answers the kubelet's `GET /livez` and `GET /readyz` (see [`crate::health`]).
//!
//! # Pool waiters
//! The issue asks for the database pool "in use and waiting". sqlx 0.9's `Pool` exposes only
//! `size()` and `num_idle()`: the count of tasks queued in `acquire()` is private to its
//! semaphore. So the runtime counts them itself: [`Database::pool`] is a
//! [`crate::db::MeteredPool`], through which every statement, transaction and connection of
//! the stores is acquired (the stores call it exactly as they called sqlx's pool), and which
//! keeps `db_pool_acquire_waiting` (tasks inside `acquire()` now), the
//! `db_pool_acquire_seconds` histogram (every acquisition, not a sample) and
//! `db_pool_acquire_timeouts_total` (waits that hit the 10 s `acquire_timeout`). No labels:
//! one pool per service process. Waiting includes opening a new connection while the pool
//! is below its maximum; tasks queued for SQLite's write turn (`begin_write`) hold no
//! connection yet and are not counted. The `KagiDatabasePoolExhausted` alert fires on
//! waiters, not on a busy but sufficient pool.
//!
//! # Cardinality
//! No label carries a per-user value: RPC labels come from the served descriptor set (an
//! unknown path is counted as `unknown`), HTTP routes are the matched route template, and
//! domain labels are closed enums.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body as HttpBody, Frame};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::BoxFuture;
use crate::db::Database;
use crate::health::Readiness;

/// The crate the services build their own metrics with, so they share this version.
pub use prometheus_client;

/// The `[metrics]` section of every service's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `/metrics` is served over plain HTTP (port 0 picks a free port). Unset: no
    /// endpoint. Documented ports: keystore 9051, reset 9052, notifier 9053, portal 9080.
    pub listen_addr: Option<SocketAddr>,
}

/// Work a scrape waits for before encoding, e.g. sampling the mail queue from the database.
pub type ScrapeHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One server's registry: its own RED metrics, the process's domain and client metrics it
/// registers, and the hooks run before each scrape.
pub struct Metrics {
    registry: Registry,
    hooks: Vec<ScrapeHook>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("hooks", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry holding the outgoing-call metrics (shared by the process: every
    /// client channel counts into them).
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let client = &*CLIENT;
        registry.register(
            "grpc_client_handled",
            "Outgoing RPCs completed, by target service, method and gRPC code",
            client.handled.clone(),
        );
        registry.register(
            "grpc_client_handling_seconds",
            "Outgoing RPC latency until the status arrived",
            client.seconds.clone(),
        );
        Self {
            registry,
            hooks: Vec::new(),
        }
    }

    /// The registry, for a service's domain metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Runs `hook` before every scrape (keep it quick: the scraper waits for it).
    pub fn on_scrape<F, Fut>(&mut self, hook: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.push(Arc::new(move || Box::pin(hook())));
    }

    /// Pool gauges for `db`, sampled at each scrape: connections open, in use, idle, and the
    /// configured maximum; and, kept live by the pool itself, the tasks waiting for a
    /// connection, how long each acquisition waited, and the waits that timed out (tasks
    /// waiting for minutes is pool exhaustion).
    pub fn database<S: Send + Sync + 'static>(&mut self, db: &Database<S>) {
        let meter = db.pool().meter();
        self.registry.register(
            "db_pool_acquire_waiting",
            "Tasks waiting for a database connection (all lent out, or one being opened)",
            meter.waiting.clone(),
        );
        self.registry.register(
            "db_pool_acquire_seconds",
            "Time each statement, transaction or connection waited for its database connection",
            meter.acquire_seconds.clone(),
        );
        self.registry.register(
            "db_pool_acquire_timeouts",
            "Acquisitions that gave up after the pool's acquire timeout (10 s)",
            meter.timeouts.clone(),
        );
        let gauges: [(&str, &str); 4] = [
            ("db_pool_connections", "Connections open in the pool"),
            ("db_pool_connections_in_use", "Connections lent out"),
            ("db_pool_connections_idle", "Connections open and idle"),
            ("db_pool_connections_max", "The pool's configured maximum"),
        ];
        let [open, in_use, idle, max]: [Gauge; 4] = Default::default();
        for ((name, help), gauge) in gauges.iter().zip([&open, &in_use, &idle, &max]) {
            self.registry.register(*name, *help, gauge.clone());
        }
        let pool = db.pool().unmetered().clone();
        self.on_scrape(move || {
            let size = i64::from(pool.size());
            let free = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
            open.set(size);
            idle.set(free);
            in_use.set((size - free).max(0));
            max.set(i64::from(pool.options().get_max_connections()));
            std::future::ready(())
        });
    }

    /// RED metrics for this server's RPCs, registered here; the layer goes on the server.
    pub fn grpc_server(&mut self) -> GrpcServerMetrics {
        let red = GrpcServerMetrics::default();
        let r = &mut self.registry;
        r.register(
            "grpc_server_started",
            "RPCs started, by service and method",
            red.started.clone(),
        );
        r.register(
            "grpc_server_handled",
            "RPCs completed, by service, method and gRPC code",
            red.handled.clone(),
        );
        r.register(
            "grpc_server_handling_seconds",
            "RPC latency until the status was sent",
            red.seconds.clone(),
        );
        r.register(
            "grpc_server_in_flight",
            "RPCs started and not yet completed",
            red.in_flight.clone(),
        );
        red
    }

    /// Runs the scrape hooks, then renders the registry as OpenMetrics text.
    pub async fn render(&self) -> String {
        for hook in &self.hooks {
            hook().await;
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `/metrics` endpoint, bound before it serves so a taken port fails start-up.
#[derive(Debug)]
pub struct MetricsEndpoint {
    listener: TcpListener,
    local_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl MetricsEndpoint {
    /// Binds `settings.listen_addr`; `None` when metrics are off.
    ///
    /// # Errors
    /// The address is taken.
    pub async fn bind(
        settings: &MetricsSettings,
        metrics: Metrics,
    ) -> anyhow::Result<Option<Self>> {
        use anyhow::Context as _;
        let Some(addr) = settings.listen_addr else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        let local_addr = listener.local_addr()?;
        tracing::info!(addr = %local_addr, "metrics listening");
        Ok(Some(Self {
            listener,
            local_addr,
            metrics: Arc::new(metrics),
            readiness: Readiness::default(),
        }))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What `/readyz` answers: the server's readiness watcher keeps it in step.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves `GET /metrics`, `/livez` and `/readyz` until `shutdown` resolves.
    ///
    /// # Errors
    /// Transport failures.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::extract::State;
        use axum::routing::get;
        async fn scrape(
            State(metrics): State<Arc<Metrics>>,
            headers: http::HeaderMap,
        ) -> impl axum::response::IntoResponse {
            let open_metrics = headers
                .get_all(http::header::ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let text = metrics.render().await;
            if open_metrics {
                ([(http::header::CONTENT_TYPE, OPEN_METRICS)], text)
            } else {
                (
                    [(http::header::CONTENT_TYPE, PROMETHEUS_TEXT)],
                    to_prometheus_text(&text),
                )
            }
        }
        let router = axum::Router::new()
            .route("/metrics", get(scrape))
            .with_state(self.metrics)
            .merge(crate::health::probe_routes(self.readiness));
        axum::serve(self.listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

/// What Prometheus asks for first (its `Accept` header names it).
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The classic text format, for clients that do not ask for OpenMetrics (curl, promtool).
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the classic Prometheus text format: a counter's family is named with
/// its `_total` suffix there, `unknown` is `untyped`, and there is no `# UNIT` or `# EOF`.
pub fn to_prometheus_text(open_metrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = open_metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        match header {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                let suffix = if counters.contains(name) {
                    "_total"
                } else {
                    ""
                };
                out.push_str(&format!("{prefix}{name}{suffix} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandledLabels {
    grpc_service: Arc<str>,
    grpc_method: Arc<str>,
    grpc_code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 8 s (argon2 at full cost takes tens of ms).
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// The server's RED metric families; [`GrpcServerMetrics::layer`] records into them.
#[derive(Debug, Clone)]
pub struct GrpcServerMetrics {
    started: Family<RpcLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    seconds: HistogramFamily<RpcLabels>,
    in_flight: Family<RpcLabels, Gauge>,
}

impl Default for GrpcServerMetrics {
    fn default() -> Self {
        Self {
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
            in_flight: Family::default(),
        }
    }
}

impl GrpcServerMetrics {
    /// The layer recording every call; `methods` are the paths served (`/pkg.Svc/Method`),
    /// any other path is counted as `unknown/unknown` so a scanner cannot mint series.
    pub fn layer(&self, methods: impl IntoIterator<Item = String>) -> GrpcMetricsLayer {
        let known = methods
            .into_iter()
            .filter_map(|path| {
                let (service, method) = split_path(&path)?;
                let labels = RpcLabels {
                    grpc_service: service.into(),
                    grpc_method: method.into(),
                };
                Some((path, labels))
            })
            .collect();
        GrpcMetricsLayer {
            inner: Some(Arc::new(ServerRed {
                metrics: self.clone(),
                known,
                unknown: RpcLabels {
                    grpc_service: "unknown".into(),
                    grpc_method: "unknown".into(),
                },
            })),
        }
    }
}

fn split_path(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix('/')?.split_once('/')
}

#[derive(Debug)]
struct ServerRed {
    metrics: GrpcServerMetrics,
    known: HashMap<String, RpcLabels>,
    unknown: RpcLabels,
}

/// Tower layer for the gRPC server; the default records nothing (metrics off).
#[derive(Debug, Clone, Default)]
pub struct GrpcMetricsLayer {
    inner: Option<Arc<ServerRed>>,
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            red: self.inner.clone(),
        }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    red: Option<Arc<ServerRed>>,
}

impl<S, B> tower::Service<http::Request<B>> for GrpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(red) = self.red.clone() else {
            return Box::pin(self.inner.call(request));
        };
        let labels = red
            .known
            .get(request.uri().path())
            .unwrap_or(&red.unknown)
            .clone();
        red.metrics.started.get_or_create(&labels).inc();
        red.metrics.in_flight.get_or_create(&labels).inc();
        let start = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let on_end = move |code: tonic::Code| {
                let m = &red.metrics;
                m.in_flight.get_or_create(&labels).dec();
                m.seconds
                    .get_or_create(&labels)
                    .observe(start.elapsed().as_secs_f64());
                m.handled
                    .get_or_create(&HandledLabels {
                        grpc_service: labels.grpc_service.clone(),
                        grpc_method: labels.grpc_method.clone(),
                        grpc_code: code_name(code),
                    })
                    .inc();
            };
            let response = call.await?;
            Ok(observe_status(response, on_end))
        })
    }
}

/// Calls `on_end` once with the call's gRPC status: from the headers of a trailers-only
/// response, else from the body's trailers; `CANCELLED` when the body is dropped first.
pub fn observe_status<F>(
    response: http::Response<tonic::body::Body>,
    on_end: F,
) -> http::Response<tonic::body::Body>
where
    F: FnOnce(tonic::Code) + Send + 'static,
{
    if let Some(code) = status_in(response.headers()) {
        on_end(code);
        return response;
    }
    response.map(|body| {
        tonic::body::Body::new(StatusWatch {
            inner: body,
            on_end: Some(Box::new(on_end)),
        })
    })
}

fn status_in(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// The gRPC code's canonical name (`OK`, `INVALID_ARGUMENT`…), as grpc-go's and
/// go-grpc-prometheus's dashboards expect it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "Canceled",
        C::Unknown => "Unknown",
        C::InvalidArgument => "InvalidArgument",
        C::DeadlineExceeded => "DeadlineExceeded",
        C::NotFound => "NotFound",
        C::AlreadyExists => "AlreadyExists",
        C::PermissionDenied => "PermissionDenied",
        C::ResourceExhausted => "ResourceExhausted",
        C::FailedPrecondition => "FailedPrecondition",
        C::Aborted => "Aborted",
        C::OutOfRange => "OutOfRange",
        C::Unimplemented => "Unimplemented",
        C::Internal => "Internal",
        C::Unavailable => "Unavailable",
        C::DataLoss => "DataLoss",
        C::Unauthenticated => "Unauthenticated",
    }
}

type OnEnd = Box<dyn FnOnce(tonic::Code) + Send>;

/// A response body that reports the status in its trailers.
struct StatusWatch {
    inner: tonic::body::Body,
    on_end: Option<OnEnd>,
}

impl StatusWatch {
    fn end(&mut self, code: tonic::Code) {
        if let Some(on_end) = self.on_end.take() {
            on_end(code);
        }
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        self.end(tonic::Code::Cancelled);
    }
}

impl HttpBody for StatusWatch {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.end(code);
            }
            Poll::Ready(None) => self.end(tonic::Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Outgoing calls of the whole process (every [`crate::client::channel`] counts here).
#[derive(Debug)]
struct ClientMetrics {
    handled: Family<HandledLabels, Counter>,
    seconds: HistogramFamily<RpcLabels>,
}

static CLIENT: LazyLock<ClientMetrics> = LazyLock::new(|| ClientMetrics {
    handled: Family::default(),
    seconds: Family::new_with_constructor(latency_histogram),
});

/// Records one outgoing call; paths are this code base's own RPCs, so bounded.
pub(crate) fn client_call_started(path: &str) -> impl FnOnce(tonic::Code) + Send + 'static {
    let (service, method) = split_path(path).unwrap_or(("unknown", "unknown"));
    let labels = RpcLabels {
        grpc_service: service.into(),
        grpc_method: method.into(),
    };
    let start = Instant::now();
    move |code| {
        CLIENT
            .seconds
            .get_or_create(&labels)
            .observe(start.elapsed().as_secs_f64());
        CLIENT
            .handled
            .get_or_create(&HandledLabels {
                grpc_service: labels.grpc_service,
                grpc_method: labels.grpc_method,
                grpc_code: code_name(code),
            })
            .inc();
    }
}

/// A client channel counting every call into `grpc_client_*` by target service, method and
/// the status the target answered (a transport failure counts as `Unavailable`).
///
/// A call whose transport failed also reaches the caller as the status gRPC's spec names
/// ([`transport_status`]), not as the `UNKNOWN` or `CANCELLED` tonic would make of a broken
/// pipe or a connection closed mid-call: a replica killed under a call must look
/// retryable (`UNAVAILABLE`) to the caller, as the chaos run showed it did not.
#[derive(Debug, Clone)]
pub struct MeteredChannel<C>(pub C);

impl<C> tower::Service<http::Request<tonic::body::Body>> for MeteredChannel<C>
where
    C: tower::Service<
            http::Request<tonic::body::Body>,
            Response = http::Response<tonic::body::Body>,
        >,
    C::Future: Send + 'static,
    C::Error: Into<tower::BoxError> + Send + 'static,
{
    type Response = C::Response;
    type Error = tower::BoxError;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| transport_status(e.into()).into())
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let on_end = client_call_started(request.uri().path());
        let call = self.0.call(request);
        Box::pin(async move {
            match call.await {
                Ok(response) => Ok(observe_status(response, on_end)),
                Err(e) => {
                    on_end(tonic::Code::Unavailable);
                    Err(transport_status(e.into()).into())
                }
            }
        })
    }
}

/// The status of a call whose transport failed (the callee never answered): its timeout
/// is `DEADLINE_EXCEEDED`; anything else — refused, reset, broken pipe, closed mid-call —
/// is `UNAVAILABLE`, which callers retry on another replica. A status already in the
/// error is kept. The transport error stays the status's source, which is how a caller
/// tells "never reached the server" from a status the server sent.
pub fn transport_status(error: tower::BoxError) -> tonic::Status {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
    let mut status = None;
    while let Some(e) = source {
        if let Some(sent) = e.downcast_ref::<tonic::Status>() {
            status = Some(tonic::Status::new(sent.code(), sent.message()));
            break;
        }
        if e.is::<tonic::TimeoutExpired>() {
            status = Some(tonic::Status::deadline_exceeded(format!(
                "the call timed out: {error}"
            )));
            break;
        }
        source = e.source();
    }
    let mut status = status
        .unwrap_or_else(|| tonic::Status::unavailable(format!("the connection failed: {error}")));
    status.set_source(std::sync::Arc::from(error));
    status
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: Arc<str>,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: Arc<str>,
}

/// HTTP RED metrics for an axum server (the portal), by matched route template.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    seconds: HistogramFamily<RouteLabels>,
}

impl Metrics {
    /// Registers the HTTP metric families; add [`track_http`] to the router with them.
    pub fn http_server(&mut self) -> HttpMetrics {
        let http = HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(latency_histogram),
        };
        self.registry.register(
            "http_server_requests",
            "HTTP requests answered, by method, matched route template and status",
            http.requests.clone(),
        );
        self.registry.register(
            "http_server_request_duration_seconds",
            "HTTP request latency until the response head, by method and route template",
            http.seconds.clone(),
        );
        http
    }
}

/// A closed set, so a client inventing methods cannot mint series.
fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::HEAD => "HEAD",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Axum middleware (`axum::middleware::from_fn_with_state(metrics, track_http)`): counts
/// the request under its route template (never the raw path, which carries whatever a
/// client typed) and writes the access line. `None` metrics: the access line only.
pub async fn track_http(
    axum::extract::State(metrics): axum::extract::State<Option<HttpMetrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let start = Instant::now();
    let method = method_label(request.method());
    let route: Arc<str> = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".into(), |p| p.as_str().into());
    let client = request
        .extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let span = crate::telemetry::http_span(request.headers(), method, &route);
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    let _entered = span.enter();
    let elapsed = start.elapsed();
    let status = response.status().as_u16();
    if let Some(m) = metrics {
        m.seconds
            .get_or_create(&RouteLabels {
                method,
                route: route.clone(),
            })
            .observe(elapsed.as_secs_f64());
        m.requests
            .get_or_create(&HttpLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
    }
    tracing::info!(
        target: "access",
        method,
        route = &*route,
        status,
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        client = client.map(|ip| ip.to_string()),
        "http request"
    );
    response
}
