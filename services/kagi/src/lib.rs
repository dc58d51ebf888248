//! `kagi dev`: the whole system on loopback with embedded defaults, for a newcomer's first
//! command: the keystore, the reset service, the notifier and the portal. Each service runs
//! through the same `Application::build` production uses, in one process, with everything
//! under one data directory: SQLite files, a generated key-encryption key, one generated
//! bearer token per calling service, the notifier's payload key, and its outbox of `.eml`
//! files instead of an SMTP server. With `--tls`, every gRPC hop is TLS with client
//! certificates (mTLS) from a CA generated under `data/tls/`, the secure path people try first.
//!
//! # Layout
//! One module: [`main`] runs the parsed command line; `dev` creates the data directory's secrets
//! (`kagi_runtime::random::read_or_create_secret_file`), builds each service's settings
//! (`*_settings`), with `--tls` adds certificates to them (the `tls` module), starts the four
//! `Application`s on their ports, enrolls the demo account, prints the banner, and stops them
//! all on Ctrl-C or SIGTERM. `outbox` keeps the mail folder private and deletes mails (reset
//! codes) once the code's lifetime is over.

mod tls;

pub mod admin;
pub mod multicall;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kagi_keystore::domain::AccountId;
use kagi_keystore::service::{self, Actor};
use kagi_runtime::LogFormat;
use kagi_runtime::random::read_or_create_secret_file;
use secrecy::SecretString;
use tokio::sync::watch;

mod outbox;

/// kagi: two-factor authentication setup keys for a university's single sign-on.
///
/// The services run from this binary too: `kagi keystore|reset|notifier|portal --help`.
#[derive(Debug, Parser)]
#[command(version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every kagi service locally: SQLite, a generated KEK and caller tokens under the
    /// data directory, mail written to its outbox, a demo account enrolled. Ctrl-C stops.
    Dev {
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// The demo account enrolled at start.
        #[arg(long, default_value = "demo")]
        account: String,
        /// Where the keystore listens (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:50051")]
        keystore_addr: SocketAddr,
        /// Where the reset service listens.
        #[arg(long, default_value = "127.0.0.1:50052")]
        reset_addr: SocketAddr,
        /// Where the notifier listens.
        #[arg(long, default_value = "127.0.0.1:50053")]
        notifier_addr: SocketAddr,
        /// Where the portal (the web pages) listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        portal_addr: SocketAddr,
        /// Where the keystore serves Prometheus `/metrics` (and `/livez`, `/readyz`).
        #[arg(long, default_value = "127.0.0.1:9051")]
        keystore_metrics_addr: SocketAddr,
        /// Where the reset service serves `/metrics`.
        #[arg(long, default_value = "127.0.0.1:9052")]
        reset_metrics_addr: SocketAddr,
        /// Where the notifier serves `/metrics`.
        #[arg(long, default_value = "127.0.0.1:9053")]
        notifier_metrics_addr: SocketAddr,
        /// Where the portal serves `/metrics`.
        #[arg(long, default_value = "127.0.0.1:9080")]
        portal_metrics_addr: SocketAddr,
        /// Encrypt and mutually authenticate every gRPC hop: a CA, server and client
        /// certificates are generated under `<data-dir>/tls/` at each start.
        #[arg(long)]
        tls: bool,
        /// For benchmarks (bench/portal.sh): `off` mails no "key displayed" notice, `unlimited`
        /// lifts its per-recipient allowance, so one user's thousands of views of menu 1
        /// measure the page rather than the allowance's refusal.
        #[arg(long, hide = true, default_value = "default", value_parser = ["default", "off", "unlimited"])]
        key_display_notices: String,
    },
    /// The help desk from a terminal: `kagi admin account ID`, `unlock ID --reason …`,
    /// `revoke ID --reason …`, `cancel-reset ID --reason …` (table, or `--json`).
    Admin(admin::AdminArgs),
}

/// The callers `kagi dev` issues tokens to; `helpdesk` is the console's and `kagi admin`'s.
const CALLERS: [&str; 6] = [
    "reset",
    "portal",
    "login",
    "admin",
    "onboarding",
    "helpdesk",
];

/// The demo help-desk operator `kagi dev` enrols: a local account listed as an operator.
pub const DEMO_OPERATOR: &str = "operator";

/// Runs the command; errors are printed and become exit code 1.
pub async fn main(cli: Cli) -> ExitCode {
    let dev_args = match cli.command {
        Command::Admin(args) => {
            return kagi_runtime::cli::exit_code("kagi admin", admin::run(args).await);
        }
        dev @ Command::Dev { .. } => dev,
    };
    let Command::Dev {
        data_dir,
        account,
        keystore_addr,
        reset_addr,
        notifier_addr,
        portal_addr,
        keystore_metrics_addr,
        reset_metrics_addr,
        notifier_metrics_addr,
        portal_metrics_addr,
        tls,
        key_display_notices,
    } = dev_args
    else {
        return ExitCode::FAILURE;
    };
    let addrs = Addrs {
        keystore: keystore_addr,
        reset: reset_addr,
        notifier: notifier_addr,
        portal: portal_addr,
        metrics: MetricsAddrs {
            keystore: keystore_metrics_addr,
            reset: reset_metrics_addr,
            notifier: notifier_metrics_addr,
            portal: portal_metrics_addr,
        },
        key_display_notices,
    };
    kagi_runtime::cli::exit_code("kagi dev", dev(&data_dir, &account, addrs, tls).await)
}

/// Where each service listens (port 0 picks a free one), and the benchmarks' notice knob.
#[derive(Debug, Clone)]
struct Addrs {
    keystore: SocketAddr,
    reset: SocketAddr,
    notifier: SocketAddr,
    portal: SocketAddr,
    key_display_notices: String,
    metrics: MetricsAddrs,
}

/// Where each service serves Prometheus `/metrics`: on in dev too, so the metrics a
/// dashboard shows can be tried locally (`curl http://127.0.0.1:9051/metrics`).
#[derive(Debug, Clone, Copy)]
struct MetricsAddrs {
    keystore: SocketAddr,
    reset: SocketAddr,
    notifier: SocketAddr,
    portal: SocketAddr,
}

/// The demo account's recovery address: its mail lands in the outbox.
const DEMO_RECOVERY_EMAIL: &str = "demo@example.ac.jp";

async fn dev(data_dir: &Path, account: &str, addrs: Addrs, tls: bool) -> anyhow::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    let callers_dir = data_dir.join("callers");
    for caller in CALLERS {
        read_or_create_secret_file(&callers_dir.join(caller), 24)?;
    }
    let telemetry = kagi_runtime::TelemetrySettings {
        log_format: LogFormat::Pretty,
        ..Default::default()
    };
    let _telemetry = kagi_runtime::telemetry::init("kagi-dev", &telemetry)?;
    let tls = tls
        .then(|| tls::DevTls::create(&data_dir.join("tls"), &CALLERS))
        .transpose()?;

    let mut keystore_settings = keystore_settings(data_dir, &callers_dir, addrs.keystore)?;
    keystore_settings.metrics.listen_addr = Some(addrs.metrics.keystore);
    let mut notifier_settings = notifier_settings(data_dir, &callers_dir, addrs.notifier);
    notifier_settings.metrics.listen_addr = Some(addrs.metrics.notifier);
    if addrs.key_display_notices == "unlimited" {
        notifier_settings
            .delivery
            .key_display_notices_per_recipient_per_hour = 0;
    }
    if let Some(tls) = &tls {
        tls.serve(&mut keystore_settings.server, &mut keystore_settings.auth);
        tls.serve(&mut notifier_settings.server, &mut notifier_settings.auth);
    }
    let keystore = kagi_keystore::Application::build(&keystore_settings).await?;
    let notifier = kagi_notifier::Application::build(&notifier_settings).await?;
    let mut reset_settings = reset_settings(
        data_dir,
        &callers_dir,
        addrs.reset,
        keystore.local_addr(),
        notifier.local_addr(),
    );
    reset_settings.metrics.listen_addr = Some(addrs.metrics.reset);
    let outbox = outbox::Outbox {
        dir: data_dir.join("outbox"),
        keep: std::time::Duration::from_secs(reset_settings.policy.code_ttl_secs),
    };
    outbox.prepare()?;
    if let Some(tls) = &tls {
        tls.serve(&mut reset_settings.server, &mut reset_settings.auth);
        tls.call(&mut reset_settings.keystore, "reset");
        tls.call(&mut reset_settings.notifier, "reset");
    }
    reset_settings.policy.notify_key_display = addrs.key_display_notices != "off";
    let reset = kagi_reset::Application::build(&reset_settings).await?;
    let mut portal_settings = portal_settings(
        data_dir,
        &callers_dir,
        addrs.portal,
        keystore.local_addr(),
        reset.local_addr(),
    );
    portal_settings.metrics.listen_addr = Some(addrs.metrics.portal);
    let helpdesk = &mut portal_settings.helpdesk;
    helpdesk.operators = vec![DEMO_OPERATOR.to_owned()];
    for (client, addr) in [
        (&mut helpdesk.keystore, keystore.local_addr()),
        (&mut helpdesk.reset, reset.local_addr()),
        (&mut helpdesk.notifier, notifier.local_addr()),
    ] {
        client.endpoint = format!("http://{addr}");
        client.token_file = Some(callers_dir.join("helpdesk"));
    }
    if let Some(tls) = &tls {
        tls.call(&mut portal_settings.keystore, "portal");
        tls.call(&mut portal_settings.reset, "portal");
        tls.call(&mut portal_settings.helpdesk.keystore, "helpdesk");
        tls.call(&mut portal_settings.helpdesk.reset, "helpdesk");
        tls.call(&mut portal_settings.helpdesk.notifier, "helpdesk");
    }
    // Dev only: the portal lists the outbox, so the reissue flow needs no mail server.
    let portal = kagi_portal::Application::build(&portal_settings)
        .await?
        .with_dev_outbox(data_dir.join("outbox"));

    let account = AccountId::parse(account)?;
    let actor = Actor {
        caller: "onboarding",
    };
    let key = enrolled(&keystore, actor, account).await?;
    // The operator logs in to the console like anyone (the dev login asks for a code too).
    let operator_key = enrolled(&keystore, actor, AccountId::parse(DEMO_OPERATOR)?).await?;
    let password = demo_login(&reset, data_dir, key.account.as_str(), "demo-password").await?;
    let operator_password =
        demo_login(&reset, data_dir, DEMO_OPERATOR, "operator-password").await?;
    let uri = service::otpauth_uri(&kagi_keystore::Settings::default().totp.issuer, &key);
    print_banner(&Banner {
        keystore: keystore.local_addr(),
        reset: reset.local_addr(),
        notifier: notifier.local_addr(),
        portal: portal.local_addr(),
        metrics: [
            keystore.metrics_addr(),
            reset.metrics_addr(),
            notifier.metrics_addr(),
            portal.metrics_addr(),
        ],
        data_dir,
        key: &key,
        uri: &uri,
        password: &password,
        operator_password: &operator_password,
        operator_key: &operator_key.secret.to_base32(),
        tls: tls.as_ref(),
    })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let keystore = tokio::spawn(keystore.run_until_stopped(stopped(stop_rx.clone())));
    let reset = tokio::spawn(reset.run_until_stopped(stopped(stop_rx.clone())));
    let notifier = tokio::spawn(notifier.run_until_stopped(stopped(stop_rx.clone())));
    let sweeper = tokio::spawn(outbox.sweep_until(stopped(stop_rx.clone())));
    let portal = tokio::spawn(portal.run_until_stopped(stopped(stop_rx)));
    kagi_runtime::shutdown::signal().await;
    let _ = stop_tx.send(true);
    portal.await??;
    keystore.await??;
    reset.await??;
    notifier.await??;
    sweeper.await?;
    Ok(())
}

/// The account's key: enrolled now, or the one a previous run enrolled.
async fn enrolled(
    keystore: &kagi_keystore::Application,
    actor: Actor<'_>,
    account: AccountId,
) -> anyhow::Result<service::RevealedKey> {
    Ok(
        match keystore.keystore().enroll(actor, account.clone()).await {
            Err(kagi_keystore::Error::AlreadyEnrolled) => {
                keystore.keystore().current_key(actor, account).await?
            }
            other => other?,
        },
    )
}

/// A demo account in the reset service's directory (its password generated once and kept
/// in the data directory as `password_file`), so the reissue flow, and the help desk's
/// console for the demo operator, can be walked through.
async fn demo_login(
    reset: &kagi_reset::Application,
    data_dir: &Path,
    account: &str,
    password_file: &str,
) -> anyhow::Result<String> {
    let password = read_or_create_secret_file(&data_dir.join(password_file), 12)?.to_string();
    let now = kagi_runtime::clock::unix_ms(std::time::SystemTime::now());
    match reset
        .accounts()
        .add(
            account,
            DEMO_RECOVERY_EMAIL,
            SecretString::from(password.clone()),
            now,
        )
        .await
    {
        Ok(()) | Err(kagi_reset::accounts::AccountError::Exists(_)) => Ok(password),
        Err(e) => Err(e.into()),
    }
}

fn portal_settings(
    data_dir: &Path,
    callers_dir: &Path,
    addr: SocketAddr,
    keystore: SocketAddr,
    reset: SocketAddr,
) -> kagi_portal::Settings {
    let mut settings = kagi_portal::Settings::default();
    settings.server.listen_addr = addr;
    settings.server.public_url = format!("http://{addr}");
    settings.database.url = format!("sqlite://{}/portal.db?mode=rwc", data_dir.display());
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token_file = Some(callers_dir.join("portal"));
    settings.reset.endpoint = format!("http://{reset}");
    settings.reset.token_file = Some(callers_dir.join("portal"));
    settings
}

fn reset_settings(
    data_dir: &Path,
    callers_dir: &Path,
    addr: SocketAddr,
    keystore: SocketAddr,
    notifier: SocketAddr,
) -> kagi_reset::Settings {
    let mut settings = kagi_reset::Settings::default();
    settings.server.listen_addr = addr;
    settings.database.url = format!("sqlite://{}/reset.db?mode=rwc", data_dir.display());
    settings.auth.tokens_dir = Some(callers_dir.to_owned());
    settings.code_hmac_key_file = Some(data_dir.join("reset-code-key"));
    settings.keystore.endpoint = format!("http://{keystore}");
    settings.keystore.token_file = Some(callers_dir.join("reset"));
    settings.notifier.endpoint = format!("http://{notifier}");
    settings.notifier.token_file = Some(callers_dir.join("reset"));
    settings
}

fn keystore_settings(
    data_dir: &Path,
    callers_dir: &Path,
    addr: SocketAddr,
) -> anyhow::Result<kagi_keystore::Settings> {
    let mut settings = kagi_keystore::Settings::default();
    settings.server.listen_addr = addr;
    settings.database.url = format!("sqlite://{}/keystore.db?mode=rwc", data_dir.display());
    settings.auth.tokens_dir = Some(callers_dir.to_owned());
    let kek = read_or_create_secret_file(&data_dir.join("keystore-kek").join("dev"), 32)?;
    settings
        .kek
        .keys
        .insert("dev".into(), SecretString::from(kek.as_str()));
    Ok(settings)
}

fn notifier_settings(
    data_dir: &Path,
    callers_dir: &Path,
    addr: SocketAddr,
) -> kagi_notifier::Settings {
    let mut settings = kagi_notifier::Settings::default();
    settings.server.listen_addr = addr;
    settings.database.url = format!("sqlite://{}/notifier.db?mode=rwc", data_dir.display());
    settings.auth.tokens_dir = Some(callers_dir.to_owned());
    settings.transport.outbox_dir = data_dir.join("outbox");
    settings.mail.templates_dir = Some(data_dir.join("notifier-templates"));
    settings.sealing.key_file = data_dir.join("notifier-payload-key");
    settings
}

struct Banner<'a> {
    keystore: SocketAddr,
    reset: SocketAddr,
    notifier: SocketAddr,
    portal: SocketAddr,
    /// keystore, reset, notifier, portal.
    metrics: [Option<SocketAddr>; 4],
    data_dir: &'a Path,
    key: &'a service::RevealedKey,
    uri: &'a str,
    password: &'a str,
    operator_password: &'a str,
    /// The operator's setup key, Base32: its login asks for a code too.
    operator_key: &'a str,
    tls: Option<&'a tls::DevTls>,
}

#[allow(clippy::print_stdout)]
fn print_banner(b: &Banner<'_>) -> anyhow::Result<()> {
    use qrcode::render::unicode::Dense1x2;
    let qr = qrcode::QrCode::new(b.uri.as_bytes())?
        .render::<Dense1x2>()
        .quiet_zone(true)
        .build();
    let base32 = b.key.secret.to_base32();
    let grouped: Vec<&str> = base32
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    let data = b.data_dir.display();
    let (scheme, grpcurl) = match b.tls {
        None => (
            "grpc",
            format!("grpcurl -plaintext -H \"authorization: Bearer $(cat {data}/callers/login)\""),
        ),
        Some(tls) => ("grpcs", tls.grpcurl_flags("login")),
    };
    let metrics = |n: usize| {
        b.metrics[n].map_or_else(String::new, |addr| {
            format!("; metrics http://{addr}/metrics")
        })
    };
    println!(
        "\nkagi (dev) is running\n\n  portal    http://{portal}/   (open it in a browser; the outbox is at /outbox{portal_metrics})\n  \
         keystore  {scheme}://{keystore}   (kagi.v1.Keystore{keystore_metrics})\n  \
         reset     {scheme}://{reset}   (kagi.v1.Reset, kagi.v1.Directory{reset_metrics})\n  \
         notifier  {scheme}://{notifier}   (kagi.v1.Notifier; mail goes to {data}/outbox{notifier_metrics})\n  \
         tokens    {data}/callers/<caller>\n\n  \
         demo account : {account}\n  password     : {password}\n  recovery     : {recovery}\n  \
         setup key    : {key}\n  otpauth      : {uri}\n\n{qr}\n\
         Scan the QR code with an authenticator app: the portal's login asks for its current code\n\
         (kagi dev names no campus network). Check a code directly:\n\n  \
         {grpcurl} \\\n    \
         -d '{{\"account_id\":\"{account}\",\"code\":\"123456\"}}' {keystore} kagi.v1.Keystore/VerifyCode\n\n\
         The help desk's console is at http://{portal}/helpdesk for the demo operator:\n\n  \
         operator     : {operator}\n  password     : {operator_password}\n  \
         operator key : {operator_key}   (its login asks for a code too)\n\n\
         or from a terminal (endpoints and TLS files: kagi admin --help):\n  \
         kagi admin account {account} --operator {operator} --keystore http://{keystore} --reset http://{reset} --notifier http://{notifier}\n\n\
         Ctrl-C stops everything.\n",
        portal = b.portal,
        keystore = b.keystore,
        reset = b.reset,
        notifier = b.notifier,
        account = b.key.account,
        password = b.password,
        operator = DEMO_OPERATOR,
        operator_password = b.operator_password,
        operator_key = b.operator_key,
        recovery = DEMO_RECOVERY_EMAIL,
        key = grouped.join(" "),
        uri = b.uri,
        keystore_metrics = metrics(0),
        reset_metrics = metrics(1),
        notifier_metrics = metrics(2),
        portal_metrics = metrics(3),
    );
    Ok(())
}
