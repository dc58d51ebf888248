//! What every kagi service does the same way, so the keystore, reset and notifier
//! services differ only in their domain: loading settings, telemetry with W3C trace
//! context, health and reflection, caller authentication and graceful shutdown.

pub mod auth;
pub mod clock;
pub mod db;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use auth::{AuthSettings, Authorizer, Caller, CallerAuthLayer};
pub use clock::{Clock, ManualClock, OffsetClock, SystemClock};
pub use server::{GrpcServer, ServerSettings};
pub use telemetry::{LogFormat, TelemetryGuard, TelemetrySettings};

/// Ends a command: success is exit code 0; a failure is logged with its cause chain (for
/// log collectors) and printed to stderr (for the operator at the terminal), exit code 1.
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{program} failed");
            eprintln!("{program}: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
