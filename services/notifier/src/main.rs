//! `kagi-notifier serve | migrate`: parses the command line, loads settings, starts
//! telemetry and runs the library until SIGTERM or Ctrl-C.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kagi_notifier::store::Store;
use kagi_notifier::{Application, Settings};

const SETTINGS_HELP: &str = "\
Settings come from built-in defaults, then --config FILE (TOML), then environment variables
KAGI_NOTIFIER_<SECTION>__<KEY>. Sections and keys (default):
  [server]    listen_addr (127.0.0.1:50053), tls_cert, tls_key, shutdown_grace_secs (20)
  [auth]      tokens.<caller> = token, tokens_dir, allow.<Method> = [callers] (reset may call all)
  [telemetry] log_format (json|pretty), log_filter (info), otlp_endpoint
  [database]  url (sqlite://data/notifier.db?mode=rwc; or postgres://...), max_connections (8),
              migrate_on_start (true)
  [mail]      from_address, helpdesk_url, portal_url, time_zone (Asia/Tokyo), message_id_domain,
              templates_dir (data/notifier-templates; missing templates are written there)
  [mail.ja] / [mail.en]  institution, sender_name, subject_prefix, signature
  [transport] kind (file|smtp; file), outbox_dir (data/outbox)
  [transport.smtp] host (localhost), port (587), tls (none|starttls|tls; starttls), username,
              password, password_file, ca_file, timeout_ms (10000), pool_max_size (8),
              pool_idle_timeout_secs (60), hello_name
  [delivery]  worker_enabled (true), poll_interval_ms (500), concurrency (16), lease_secs (120),
              backoff_initial_ms (2000), backoff_max_ms (300000), notice_max_age_secs (86400),
              reset_codes_per_recipient_per_hour (12; 0 = unlimited)
Example: KAGI_NOTIFIER_TRANSPORT__KIND=smtp KAGI_NOTIFIER_TRANSPORT__SMTP__HOST=mail.example.ac.jp";

/// kagi's notifier: queues and delivers kagi's e-mails.
#[derive(Debug, Parser)]
#[command(version, after_long_help = SETTINGS_HELP)]
struct Cli {
    /// TOML settings file.
    #[arg(long, global = true, env = "KAGI_NOTIFIER_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve kagi.v1.Notifier and deliver queued mail.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = kagi_runtime::settings::load(cli.config.as_deref(), "KAGI_NOTIFIER_")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let _telemetry = kagi_runtime::telemetry::init("kagi-notifier", &settings.telemetry)?;
    match cli.command {
        Command::Serve => {
            let app = Application::build(settings)
                .await
                .context("starting the notifier")?;
            tracing::info!(addr = %app.local_addr(), "kagi-notifier listening");
            app.run_until_stopped(kagi_runtime::shutdown::signal())
                .await
        }
        Command::Migrate => {
            let store = Store::connect(&settings.database).await?;
            store.migrate().await?;
            tracing::info!("migrations applied");
            store.close_pool().await;
            Ok(())
        }
    }
}
