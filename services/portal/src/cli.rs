//! The command line: `serve` and `migrate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kagi_runtime::cli::ServiceCommand;

use crate::app::Application;
use crate::config::Settings;
use crate::store::PortalSchema;

/// kagi-portal: the two-factor authentication manager's pages (the manual's three menus).
#[derive(Debug, Parser)]
#[command(version, after_long_help = crate::config::REFERENCE)]
pub struct Cli {
    /// TOML settings file; see `--help` for every knob and its default.
    #[arg(long, short, global = true, env = "KAGI_PORTAL_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: ServiceCommand,
}

/// Runs one command; errors are logged and become exit code 1.
pub async fn main(cli: Cli) -> ExitCode {
    kagi_runtime::cli::run(cli.config.as_deref(), |settings| run(cli.command, settings)).await
}

async fn run(command: ServiceCommand, settings: Settings) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Serve => {
            Application::build(&settings)
                .await?
                .run_until_stopped(kagi_runtime::shutdown::signal())
                .await
        }
        ServiceCommand::Migrate => {
            kagi_runtime::cli::migrate::<PortalSchema>(&settings.database).await
        }
    }
}
