//! The command line: `serve` and `migrate`, with every setting and its default in `--help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kagi_runtime::cli::ServiceCommand;

use crate::app::Application;
use crate::config::Settings;
use crate::store::NotifierSchema;

/// kagi-notifier: queues kagi's e-mails durably and delivers each one over SMTP.
#[derive(Debug, Parser)]
#[command(version, after_long_help = crate::config::REFERENCE)]
pub struct Cli {
    /// TOML settings file; see `--help` for every knob and its default.
    #[arg(long, short, global = true, env = "KAGI_NOTIFIER_CONFIG")]
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
            kagi_runtime::cli::migrate::<NotifierSchema>(&settings.database).await
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn help_lists_both_commands_and_every_section_with_its_default() {
        Cli::command().debug_assert();
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "serve",
            "migrate",
            "--config",
            "[delivery]",
            "lease_secs = 120",
            "[limits]",
            "max_request_bytes = 65536",
            "KAGI_NOTIFIER_",
        ] {
            assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
        }
    }
}
