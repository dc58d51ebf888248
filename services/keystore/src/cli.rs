//! The command line: `serve`, `migrate`, `rekey` and `audit`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kagi_runtime::SystemClock;
use kagi_runtime::cli::ServiceCommand;

use crate::app::{self, Application};
use crate::config::Settings;
use crate::service::Actor;
use crate::store::{Db, KeystoreSchema};

/// kagi-keystore: TOTP setup keys, encrypted at rest, verified without replay.
#[derive(Debug, Parser)]
#[command(version, after_long_help = crate::config::REFERENCE)]
pub struct Cli {
    /// TOML settings file; see `--help` for every knob and its default.
    #[arg(long, short, global = true, env = "KAGI_KEYSTORE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Service(ServiceCommand),
    /// Re-encrypt every stored key under the active key-encryption key, while the
    /// service keeps serving (load the old and new KEKs in both).
    Rekey,
    /// Print the audit trail, newest first, one JSON object per line.
    Audit {
        /// Only this account's events.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

/// Runs one command; errors are logged and become exit code 1.
pub async fn main(cli: Cli) -> ExitCode {
    kagi_runtime::cli::run(cli.config.as_deref(), |settings| run(cli.command, settings)).await
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Service(ServiceCommand::Serve) => {
            Application::build(&settings)
                .await?
                .run_until_stopped(kagi_runtime::shutdown::signal())
                .await
        }
        Command::Service(ServiceCommand::Migrate) => {
            kagi_runtime::cli::migrate::<KeystoreSchema>(&settings.database).await
        }
        Command::Rekey => {
            let keystore = app::keystore(&settings, Arc::new(SystemClock)).await?;
            let count = keystore.rekey(Actor { caller: "cli" }).await?;
            tracing::info!(keys = count, "rekey finished");
            Ok(())
        }
        Command::Audit { account, limit } => {
            print_audit(&settings, account.as_deref(), limit).await
        }
    }
}

#[allow(clippy::print_stdout)]
async fn print_audit(settings: &Settings, account: Option<&str>, limit: u32) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database.url_or::<KeystoreSchema>()?, 1).await?;
    for e in db.audit_events(account, 0, i64::from(limit)).await? {
        let line = format!(
            r#"{{"seq":{},"at_ms":{},"caller":{:?},"action":{:?},"account_id":{:?},"key_id":{:?},"detail":{:?},"trace_id":{:?}}}"#,
            e.seq, e.at, e.caller, e.action, e.account_id, e.key_id, e.detail, e.trace_id
        );
        println!("{line}");
    }
    Ok(())
}
