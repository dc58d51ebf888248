//! The command line: `serve`, `migrate`, `rekey`, `audit` and `dev`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use data_encoding::BASE64;
use kagi_runtime::{LogFormat, SystemClock};
use secrecy::SecretString;

use crate::app::{self, Application, DEFAULT_ALLOW};
use crate::config::Settings;
use crate::domain::AccountId;
use crate::error::Error;
use crate::service::{self, Actor};
use crate::store::Db;

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
    /// Serve the kagi.v1.Keystore gRPC API until SIGTERM.
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
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
    /// Run locally on embedded defaults: SQLite and a generated KEK under the data
    /// directory, a demo account enrolled and its setup key printed.
    Dev {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        #[arg(long, default_value = "demo")]
        account: String,
    },
}

/// Runs one command; errors are logged and become exit code 1.
pub async fn main(cli: Cli) -> ExitCode {
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "kagi-keystore failed");
            eprintln!("kagi-keystore: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut settings = Settings::load(cli.config.as_deref())?;
    if let Command::Dev { data_dir, .. } = &cli.command {
        dev_settings(&mut settings, data_dir)?;
    }
    let _telemetry = kagi_runtime::telemetry::init("kagi-keystore", &settings.telemetry)?;
    match cli.command {
        Command::Serve => {
            Application::build(&settings)
                .await?
                .run_until_stopped(kagi_runtime::shutdown::signal())
                .await
        }
        Command::Migrate => {
            let db = Db::connect(&settings.database.url, 1).await?;
            db.migrate().await?;
            tracing::info!("migrations applied");
            Ok(())
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
        Command::Dev { data_dir, account } => dev(&settings, &data_dir, &account).await,
    }
}

#[allow(clippy::print_stdout)]
async fn print_audit(settings: &Settings, account: Option<&str>, limit: u32) -> anyhow::Result<()> {
    let db = Db::connect(&settings.database.url, 1).await?;
    for e in db.audit_events(account, 0, i64::from(limit)).await? {
        let line = format!(
            r#"{{"seq":{},"at_ms":{},"caller":{:?},"action":{:?},"account_id":{:?},"key_id":{:?},"detail":{:?},"trace_id":{:?}}}"#,
            e.seq, e.at, e.caller, e.action, e.account_id, e.key_id, e.detail, e.trace_id
        );
        println!("{line}");
    }
    Ok(())
}

/// Everything under `data_dir`: the SQLite file, a generated KEK and a dev caller token
/// admitted to every RPC.
fn dev_settings(settings: &mut Settings, data_dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    settings.database.url = format!("sqlite://{}/keystore.db?mode=rwc", data_dir.display());
    settings.telemetry.log_format = LogFormat::Pretty;
    if settings.kek.keys.is_empty() && settings.kek.keys_dir.is_none() {
        let kek_dir = data_dir.join("keystore-kek");
        let kek = read_or_create_secret(&kek_dir.join("dev"), 32)?;
        settings
            .kek
            .keys
            .insert("dev".into(), SecretString::from(kek));
    }
    let token = read_or_create_secret(&data_dir.join("dev-token"), 24)?;
    settings
        .auth
        .tokens
        .insert("dev".into(), SecretString::from(token));
    for (method, callers) in DEFAULT_ALLOW {
        let mut allowed: Vec<String> = callers.iter().map(|c| (*c).to_owned()).collect();
        allowed.push("dev".into());
        settings.auth.allow.insert((*method).to_owned(), allowed);
    }
    Ok(())
}

/// A base64 random secret kept in `path` (mode 0600), created on first use.
fn read_or_create_secret(path: &Path, bytes: usize) -> anyhow::Result<String> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        return Ok(existing.trim().to_owned());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut raw = zeroize::Zeroizing::new(vec![0_u8; bytes]);
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut raw)
        .map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let encoded = BASE64.encode(&raw);
    std::fs::write(path, &encoded).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(encoded)
}

async fn dev(settings: &Settings, data_dir: &Path, account: &str) -> anyhow::Result<()> {
    let app = Application::build(settings).await?;
    let account = AccountId::parse(account)?;
    let actor = Actor { caller: "dev" };
    let key = match app.keystore().enroll(actor, account.clone()).await {
        Err(Error::AlreadyEnrolled) => app.keystore().current_key(actor, account).await?,
        other => other?,
    };
    let (uri, _, _) = service::render(&settings.totp.issuer, &key)?;
    print_banner(app.local_addr(), data_dir, &key, &uri)?;
    app.run_until_stopped(kagi_runtime::shutdown::signal())
        .await
}

#[allow(clippy::print_stdout)]
fn print_banner(
    addr: std::net::SocketAddr,
    data_dir: &Path,
    key: &service::RevealedKey,
    uri: &str,
) -> anyhow::Result<()> {
    use qrcode::render::unicode::Dense1x2;
    let qr = qrcode::QrCode::new(uri.as_bytes())?
        .render::<Dense1x2>()
        .quiet_zone(true)
        .build();
    let base32 = key.secret.to_base32();
    let grouped: Vec<&str> = base32
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let token_file = data_dir.join("dev-token");
    println!(
        "\nkagi keystore (dev) on {addr}\n\n  account ID : {}\n  setup key  : {}\n  otpauth    : {uri}\n\n{qr}\n\
         Scan the QR code with an authenticator app, then check a code:\n\n  \
         grpcurl -plaintext -H \"authorization: Bearer $(cat {})\" \\\n    \
         -d '{{\"account_id\":\"{}\",\"code\":\"123456\"}}' {addr} kagi.v1.Keystore/VerifyCode\n\n\
         Ctrl-C stops.\n",
        key.account,
        grouped.join(" "),
        token_file.display(),
        key.account,
    );
    Ok(())
}
