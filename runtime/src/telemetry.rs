//! One subscriber setup for every service: structured logs, OpenTelemetry spans exported
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace context carried in
//! gRPC metadata both ways.
//!
//! The OpenTelemetry layer is installed even without an exporter, so every request has a
//! real trace id to put in logs and audit records: every JSON line written inside a request
//! carries top-level `trace_id` and `span_id` (those of the innermost span), and each RPC
//! ends with one access line (target `access`: method, gRPC code, duration, caller).

use std::sync::OnceLock;

use crate::BoxFuture;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde::Deserialize;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, for log collectors.
    #[default]
    Json,
    /// Human-readable lines, for a terminal.
    Pretty,
}

/// Logging and tracing knobs shared by every service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// `json` or `pretty`.
    pub log_format: LogFormat,
    /// An `EnvFilter` directive; `RUST_LOG` wins when set.
    pub log_filter: String,
    /// OTLP/gRPC collector; `OTEL_EXPORTER_OTLP_ENDPOINT` wins when set. Unset: no export.
    pub otlp_endpoint: Option<String>,
    /// PEM CA the collector's certificate must chain to, for an `https://` endpoint;
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` wins when set.
    pub otlp_ca_file: Option<std::path::PathBuf>,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Json,
            log_filter: "info".into(),
            otlp_endpoint: None,
            otlp_ca_file: None,
        }
    }
}

/// Flushes and stops the span exporter when dropped; keep it alive for the process.
#[must_use = "dropping the guard stops span export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        // Export what is buffered; a dead collector must not hang shutdown.
        let _ = self.provider.force_flush();
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber writing logs to stderr.
///
/// # Errors
/// When a subscriber is already installed, or the OTLP exporter cannot be built.
pub fn init(service: &'static str, settings: &TelemetrySettings) -> anyhow::Result<TelemetryGuard> {
    init_with_writer(service, settings, std::io::stderr)
}

/// Installs the global subscriber writing logs to `writer` (tests capture logs with this).
///
/// # Errors
/// When a subscriber is already installed, or the OTLP exporter cannot be built.
pub fn init_with_writer<W>(
    service: &'static str,
    settings: &TelemetrySettings,
    writer: W,
) -> anyhow::Result<TelemetryGuard>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| settings.otlp_endpoint.clone());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = endpoint {
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
        if endpoint.starts_with("https://") {
            exporter = exporter.with_tls_config(otlp_tls(settings)?);
        }
        let exporter = exporter.with_endpoint(endpoint).build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.log_filter))?
        // The transport's own chatter drowns the service's lines.
        .add_directive("h2=warn".parse()?)
        .add_directive("hyper=warn".parse()?)
        .add_directive("tower=warn".parse()?)
        .add_directive("sqlx::query=warn".parse()?);
    let fmt = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .map_event_format(WithTraceIds)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_writer(writer).boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(otel)
        .with(fmt)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// TLS towards an `https://` collector: its CA from `OTEL_EXPORTER_OTLP_CERTIFICATE` or
/// `otlp_ca_file` (kagi carries no public roots: collectors sit behind a private CA).
fn otlp_tls(settings: &TelemetrySettings) -> anyhow::Result<tonic::transport::ClientTlsConfig> {
    use anyhow::Context as _;
    let ca = std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| settings.otlp_ca_file.clone())
        .context(
            "an https:// OTLP endpoint needs the collector's CA: set telemetry.otlp_ca_file \
             or OTEL_EXPORTER_OTLP_CERTIFICATE",
        )?;
    let pem = std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?;
    Ok(tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(pem)))
}

/// A JSON event format that adds the current span's OpenTelemetry `trace_id` and `span_id`
/// at the top level of each line, so a log search by trace id finds every line of a request
/// (the span's own fields only name the span they were recorded on).
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        let in_span = ctx.lookup_current().is_some() && !event.is_root();
        let ids = in_span
            .then(|| {
                let context = tracing::Span::current().context();
                let span = context.span().span_context().clone();
                span.is_valid().then(|| (span.trace_id(), span.span_id()))
            })
            .flatten();
        match (ids, line.trim_end().strip_suffix('}')) {
            (Some((trace_id, span_id)), Some(object)) => writeln!(
                writer,
                "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}"
            ),
            _ => writer.write_str(&line),
        }
    }
}

/// Writes one access line per RPC (inside the caller authentication, so it knows the
/// caller): method, gRPC code, duration and caller. Never a request field: those may be
/// codes or passwords. Calls refused by authentication are logged by it instead.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccessLogLayer;

impl<S> tower::Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog(inner)
    }
}

/// See [`AccessLogLayer`].
#[derive(Debug, Clone)]
pub struct AccessLog<S>(S);

impl<S, B> tower::Service<http::Request<B>> for AccessLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let start = std::time::Instant::now();
        let method = request.uri().path().to_owned();
        let caller = request
            .extensions()
            .get::<crate::auth::Caller>()
            .map_or_else(|| "-".to_owned(), |c| c.0.clone());
        let call = self.0.call(request);
        Box::pin(async move {
            // The server's per-call span is entered around this future, not around `call`.
            let span = tracing::Span::current();
            let response = call.await?;
            Ok(crate::metrics::observe_status(response, move |code| {
                let _entered = span.enter();
                tracing::info!(
                    target: "access",
                    method = %method,
                    grpc_code = crate::metrics::code_name(code),
                    duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                    caller = %caller,
                    "rpc"
                );
            }))
        })
    }
}

/// The server span of one gRPC call, joined to the caller's trace when the request carries
/// a W3C `traceparent`. Pass it to tonic's `Server::trace_fn`.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %path,
        trace_id = tracing::field::Empty,
    );
    let parent = propagator().extract(&HeaderExtractor(request.headers()));
    // Only fails when no OpenTelemetry layer is installed, where there is nothing to join.
    let _ = span.set_parent(parent);
    if let Some(trace_id) = trace_id_of(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    span
}

/// The server span of one HTTP request (the portal), joined to the caller's trace when a
/// proxy in front sent a W3C `traceparent`. `route` is the matched template, not the path.
pub fn http_span(headers: &http::HeaderMap, method: &str, route: &str) -> tracing::Span {
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        trace_id = tracing::field::Empty,
    );
    let parent = propagator().extract(&HeaderExtractor(headers));
    let _ = span.set_parent(parent);
    if let Some(trace_id) = trace_id_of(&span) {
        span.record("trace_id", trace_id.as_str());
    }
    span
}

/// Writes the current span's context into outgoing gRPC metadata, so the next service's
/// spans join this trace.
pub fn inject_context(metadata: &mut tonic::metadata::MetadataMap) {
    let context = tracing::Span::current().context();
    propagator().inject_context(&context, &mut MetadataInjector(metadata));
}

/// A tonic client interceptor that propagates the current trace.
///
/// # Errors
/// Never; the signature is tonic's.
#[allow(clippy::result_large_err)]
pub fn propagate_trace(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    inject_context(request.metadata_mut());
    Ok(request)
}

/// The W3C trace id (32 hex digits) of the current span, if it is being traced.
pub fn current_trace_id() -> Option<String> {
    trace_id_of(&tracing::Span::current())
}

fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_https_collector_is_trusted_through_the_configured_ca() {
        if std::env::var_os("OTEL_EXPORTER_OTLP_CERTIFICATE").is_some() {
            return; // the environment decides; nothing to learn here
        }
        let missing = otlp_tls(&TelemetrySettings::default()).unwrap_err();
        assert!(missing.to_string().contains("otlp_ca_file"), "{missing}");

        let ca = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/kit/tls/ca.crt");
        let settings = TelemetrySettings {
            otlp_ca_file: Some(ca),
            ..TelemetrySettings::default()
        };
        let tls = otlp_tls(&settings).unwrap();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_tls_config(tls)
            .with_endpoint("https://127.0.0.1:4317")
            .build();
        assert!(
            exporter.is_ok(),
            "an https:// exporter builds: {exporter:?}"
        );
    }
}
