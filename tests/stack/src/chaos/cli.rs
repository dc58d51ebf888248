//! `kagi-stack chaos`: the command line of a chaos run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::stack::Storage;

/// A whole kagi system as processes, and the chaos run over it.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StorageArg {
    /// The stack's own PostgreSQL primary + synchronous standby behind HAProxy.
    Replicated,
    /// One SQLite file per service (no database faults).
    Sqlite,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start R replicas of every service, load them for N seconds while injecting the
    /// seeded faults, then check the invariants; exit 1 on any violation.
    Chaos {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The same seed gives the same fault schedule.
        #[arg(long, default_value_t = 13)]
        seed: u64,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, value_enum, default_value = "replicated")]
        storage: StorageArg,
        /// Login accounts; each logs in once per 30 s time step.
        #[arg(long, default_value_t = 600)]
        accounts: usize,
        /// Reset sagas running at once.
        #[arg(long, default_value_t = 3)]
        saga_workers: usize,
        /// How long the SMTP server is down.
        #[arg(long, default_value_t = 30)]
        smtp_down_secs: u64,
        /// How long it then answers 451.
        #[arg(long, default_value_t = 15)]
        smtp_4xx_secs: u64,
        /// The multi-call binary the replicas run (default: this one).
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

/// Runs the command; prints the report (Markdown) on stdout.
#[allow(clippy::print_stdout)]
pub async fn main(cli: Cli) -> ExitCode {
    let Command::Chaos {
        seconds,
        seed,
        replicas,
        storage,
        accounts,
        saga_workers,
        smtp_down_secs,
        smtp_4xx_secs,
        binary,
    } = cli.command;
    let binary = match binary.map_or_else(std::env::current_exe, Ok) {
        Ok(binary) => binary,
        Err(e) => {
            eprintln!("kagi-stack: cannot find its own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = super::Config {
        binary,
        seconds,
        seed,
        replicas,
        storage: match storage {
            StorageArg::Replicated => Storage::PostgresReplicated,
            StorageArg::Sqlite => Storage::Sqlite,
        },
        accounts,
        saga_workers,
        smtp_down: Duration::from_secs(smtp_down_secs),
        smtp_4xx: Duration::from_secs(smtp_4xx_secs),
    };
    match super::run(&config).await {
        Ok(outcome) => {
            println!("{}", outcome.report.markdown());
            if let Some(dir) = outcome.kept {
                eprintln!("kagi-stack: logs and data kept in {}", dir.display());
            }
            if outcome.report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("kagi-stack chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
