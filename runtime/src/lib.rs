//! What every kagi service does the same way, so the keystore, reset, notifier and portal
//! differ only in their domain.
//!
//! # Layout
//! - [`settings`]: typed settings from defaults, a TOML file and `KAGI_<SERVICE>_*`
//!   variables, and the check that a service's shipped TOML states its real defaults.
//! - [`cli`]: the command-line skeleton (`--config`, `serve`, `migrate`) and how a command ends.
//! - [`telemetry`]: JSON or pretty logs, OpenTelemetry spans exported over OTLP, W3C trace
//!   context read from and written to gRPC metadata.
//! - [`server`]: a gRPC server bound before it serves (port 0 allowed), with health,
//!   reflection, caller authentication and a graceful drain.
//! - [`auth`]: callers by bearer token (re-read while serving) or client certificate, and
//!   per-RPC allow lists.
//! - `pki` (feature `dev-pki`): a throwaway CA for `kagi dev --tls` and the tests.
//! - [`client`]: calls to another kagi service (TLS/mTLS, token re-read from its file,
//!   deadline, retries of idempotent calls, DNS balancing, trace context).
//! - [`db`]: SQLite or PostgreSQL by URL, one `Database<Schema>` per service with its
//!   migrations, SQLite's write queue and its WAL keeper, the pool whose waits are measured,
//!   the `[database]` settings section.
//! - [`metrics`]: Prometheus metrics (why `prometheus-client`, the ports, the RED layer,
//!   pool gauges and the waits for a connection) and the `[metrics]` section.
//! - [`health`]: readiness from the database (liveness apart), also as `/livez` and
//!   `/readyz` on the metrics port for the kubelet, and the descriptor set each server's
//!   reflection lists, filtered to its own services.
//! - [`institution`]: the institution every page and mail names, configured once.
//! - [`shutdown`]: SIGTERM/Ctrl-C, the grace period, background loops that stop between rounds.
//! - [`clock`], [`random`], [`account`], [`typed_code`]: time as a parameter, the OS RNG
//!   for secrets, the one account-ID rule, how a typed code is read (full-width digits).
//! - [`operator`], [`mask`]: the help desk's operator and mandatory reason, checked alike
//!   by every admin contract; an e-mail address masked for a screen.
//!
//! A call into any service passes, in order: [`server`] (TLS, the trace span from
//! [`telemetry`]), [`auth`] (who is calling, may it call this RPC), the service's own `grpc`
//! module, its domain and `store` (a [`db::Database`]), and on the way out [`client`] for
//! calls to neighbours, carrying the same trace.

pub mod account;
pub mod auth;
pub mod cli;
pub mod client;
pub mod clock;
pub mod db;
pub mod health;
pub mod institution;
pub mod mask;
pub mod metrics;
pub mod operator;
#[cfg(feature = "dev-pki")]
pub mod pki;
pub mod random;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod typed_code;

pub use account::{AccountId, InvalidAccountId};
pub use auth::{AuthSettings, Authorizer, Caller, CallerAuthLayer};
pub use client::{ClientSettings, ServiceChannel};
pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use db::{Database, DatabaseSettings, Schema};
pub use institution::{Institution, Localized};
pub use metrics::{Metrics, MetricsSettings};
pub use operator::OperatorContext;
pub use server::{GrpcServer, ServerSettings};

/// The future of the tower services every server wraps its calls in (caller auth, metrics,
/// access log): one boxed type, so the layers stack without naming each other's futures.
pub(crate) type BoxFuture<T, E> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;
pub use shutdown::{BackgroundTasks, Stopping};
pub use telemetry::{LogFormat, TelemetryGuard, TelemetrySettings};
pub use typed_code::typed_digits;
