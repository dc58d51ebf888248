//! What every kagi binary does around its command: load the settings (file, then
//! environment), start telemetry, run the command, and end with an exit code that says how
//! it went. Each service's `cli.rs` only lists its commands.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use serde::de::DeserializeOwned;

use crate::db::{Database, DatabaseSettings, Schema};
use crate::telemetry::{self, TelemetrySettings};

/// A service's settings as its binary loads them.
pub trait ServiceSettings: DeserializeOwned {
    /// The binary's name, in logs, traces and error messages (`kagi-keystore`).
    const PROGRAM: &'static str;
    /// Prefix of the environment variables that override the file (`KAGI_KEYSTORE_`).
    const ENV_PREFIX: &'static str;

    fn telemetry(&self) -> &TelemetrySettings;

    /// Defaults, then `file`, then the environment.
    ///
    /// # Errors
    /// A missing or malformed file or variable; the message names the key.
    fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        crate::settings::load(file, Self::ENV_PREFIX)
            .map_err(|e| anyhow::anyhow!("invalid {} settings: {e}", Self::PROGRAM))
    }
}

/// The commands every service has. A service with more lists them beside these
/// (`#[command(flatten)] Service(ServiceCommand)` in its own enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ServiceCommand {
    /// Serve until SIGTERM or Ctrl-C, then drain in-flight work and stop.
    Serve,
    /// Apply the database migrations and exit (a Kubernetes Job before a rollout).
    Migrate,
}

/// Loads `S` from `config`, starts telemetry, runs `command` with the settings, and turns
/// the outcome into the process's exit code (see [`exit_code`]).
pub async fn run<S, F, Fut>(config: Option<&Path>, command: F) -> ExitCode
where
    S: ServiceSettings,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let settings = match S::load(config) {
        Ok(settings) => settings,
        Err(e) => {
            // Bad settings are fatal too: say so as JSON, where the log collector looks.
            let _telemetry = telemetry::init(S::PROGRAM, &TelemetrySettings::default());
            return exit_code(S::PROGRAM, Err(e));
        }
    };
    let _telemetry = match telemetry::init(S::PROGRAM, settings.telemetry()) {
        Ok(guard) => guard,
        Err(e) => {
            // No subscriber to write through: the terminal is all there is.
            eprintln!("{}: cannot start telemetry: {e:#}", S::PROGRAM);
            return ExitCode::FAILURE;
        }
    };
    // A panic is logged as one JSON line, not a plain-text backtrace on stderr.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "panicked");
    }));
    let result = command(settings).await;
    exit_code(S::PROGRAM, result)
}

/// The `migrate` command: apply `S`'s migrations to the configured database and exit.
///
/// # Errors
/// An unreachable database or a failed migration.
pub async fn migrate<S: Schema>(settings: &DatabaseSettings) -> anyhow::Result<()> {
    let db = Database::<S>::connect(&settings.url_or::<S>()?, 1).await?;
    db.migrate().await?;
    db.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

/// Ends a command: success is exit code 0; a failure is logged with its cause chain through
/// the subscriber (one JSON line by default, a readable one with `log_format = "pretty"`),
/// exit code 1. Only when no subscriber is installed is it printed to stderr as text.
pub fn exit_code(program: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = format!("{err:#}"), "{program} failed");
            } else {
                eprintln!("{program}: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
