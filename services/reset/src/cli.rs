//! The command line: `serve`, `migrate`, `sweep` and `accounts …`.

use std::io::BufRead as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use kagi_runtime::cli::ServiceCommand;
use kagi_runtime::{Clock as _, SystemClock};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::accounts::AccountAdmin;
use crate::app::{self, Application};
use crate::config::Settings;

/// kagi-reset: the setup-key reissue saga (manual menu 2) over the keystore and notifier.
#[derive(Debug, Parser)]
#[command(version, after_long_help = crate::config::REFERENCE)]
pub struct Cli {
    /// TOML settings file; see `--help` for every knob and its default.
    #[arg(long, short, global = true, env = "KAGI_RESET_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    #[command(flatten)]
    Service(ServiceCommand),
    /// Finish interrupted reissues and queue pending notices once, then exit.
    Sweep,
    /// Manage the embedded account directory.
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Add an account; the password is read from stdin or a prompt, never from argv.
    Add {
        account_id: String,
        /// Where confirmation codes and notices go.
        #[arg(long)]
        recovery_email: String,
        /// Read the password as one line from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace an account's password.
    SetPassword {
        account_id: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace an account's recovery address.
    SetRecoveryEmail { account_id: String, email: String },
    /// Refuse resets for an account (answered like a wrong password).
    Disable { account_id: String },
    /// Allow resets again.
    Enable { account_id: String },
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
            kagi_runtime::cli::migrate::<crate::store::ResetSchema>(&settings.database).await
        }
        Command::Sweep => {
            let app = Application::build(&settings).await?;
            let completed = app.saga().sweep().await?;
            tracing::info!(completed, "sweep finished");
            Ok(())
        }
        Command::Accounts { command } => accounts(&settings, command).await,
    }
}

#[allow(clippy::print_stdout)]
async fn accounts(settings: &Settings, command: AccountsCommand) -> anyhow::Result<()> {
    let db = app::database(settings).await?;
    let admin = AccountAdmin::new(db, Arc::new(app::password_hasher(settings).await?));
    let now = SystemClock.now_ms();
    let (account, what) = match command {
        AccountsCommand::Add {
            account_id,
            recovery_email,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            admin
                .add(&account_id, &recovery_email, password, now)
                .await?;
            (account_id, "added")
        }
        AccountsCommand::SetPassword {
            account_id,
            password_stdin,
        } => {
            let password = read_password(password_stdin)?;
            admin.set_password(&account_id, password, now).await?;
            (account_id, "password changed")
        }
        AccountsCommand::SetRecoveryEmail { account_id, email } => {
            admin.set_recovery_email(&account_id, &email, now).await?;
            (account_id, "recovery e-mail changed")
        }
        AccountsCommand::Disable { account_id } => {
            admin.set_enabled(&account_id, false, now).await?;
            (account_id, "disabled")
        }
        AccountsCommand::Enable { account_id } => {
            admin.set_enabled(&account_id, true, now).await?;
            (account_id, "enabled")
        }
    };
    println!("account {account}: {what}");
    Ok(())
}

/// One line from stdin, or a no-echo prompt typed twice.
fn read_password(from_stdin: bool) -> anyhow::Result<SecretString> {
    if from_stdin {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line)?;
        let trimmed = line.trim_end_matches(['\r', '\n']);
        return Ok(SecretString::from(trimmed.to_owned()));
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("Password again: ")?);
    anyhow::ensure!(*first == *second, "the passwords differ");
    Ok(SecretString::from(first.to_string()))
}
