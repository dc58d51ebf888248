//! Where mail leaves the process: lettre's pooled async SMTP transport (plaintext, STARTTLS
//! or implicit TLS, optional credentials, timeouts) or, in development, `.eml` files in an
//! outbox folder.

use std::time::Duration;

use anyhow::Context as _;
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{SmtpSettings, SmtpTls, TransportKind, TransportSettings};
use crate::domain::AttemptOutcome;

/// The configured way out.
#[derive(Debug, Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

impl Mailer {
    /// Builds the transport; the SMTP pool connects lazily, on the first message.
    ///
    /// # Errors
    /// An outbox folder that cannot be created, an unreadable password file or a bad relay.
    pub fn from_settings(settings: &TransportSettings) -> anyhow::Result<Self> {
        match settings.kind {
            TransportKind::File => {
                std::fs::create_dir_all(&settings.outbox_dir).with_context(|| {
                    format!("creating outbox {}", settings.outbox_dir.display())
                })?;
                Ok(Self::File(AsyncFileTransport::new(&settings.outbox_dir)))
            }
            TransportKind::Smtp => {
                let smtp = &settings.smtp;
                let mut builder =
                    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str());
                builder = match smtp.tls {
                    SmtpTls::None => builder,
                    SmtpTls::Starttls => builder.tls(Tls::Required(tls_parameters(smtp)?)),
                    SmtpTls::Tls => builder.tls(Tls::Wrapper(tls_parameters(smtp)?)),
                };
                builder = builder
                    .port(smtp.port)
                    .timeout(Some(Duration::from_millis(smtp.timeout_ms.max(1))))
                    .pool_config(
                        PoolConfig::new()
                            .max_size(smtp.pool_max_size.max(1))
                            .idle_timeout(Duration::from_secs(smtp.pool_idle_timeout_secs.max(1))),
                    );
                if let Some(name) = &smtp.hello_name {
                    builder = builder.hello_name(ClientId::Domain(name.clone()));
                }
                if let Some(username) = &smtp.username {
                    let password = match (&smtp.password_file, &smtp.password) {
                        (Some(file), _) => std::fs::read_to_string(file)
                            .with_context(|| format!("reading {}", file.display()))?
                            .trim()
                            .to_owned(),
                        (None, Some(password)) => password.expose_secret().to_owned(),
                        (None, None) => anyhow::bail!("smtp.username is set but no password is"),
                    };
                    builder = builder.credentials(Credentials::new(username.clone(), password));
                }
                Ok(Self::Smtp(builder.build()))
            }
        }
    }

    /// Hands one message to the relay (or the outbox) and classifies the result.
    pub async fn send(&self, message: Message) -> AttemptOutcome {
        match self {
            Self::Smtp(smtp) => match smtp.send(message).await {
                Ok(response) => {
                    let text: Vec<&str> = response.message().collect();
                    AttemptOutcome::Accepted(format!("{} {}", response.code(), text.join(" ")))
                }
                // 5xx will never succeed; everything else (4xx, refused connections,
                // timeouts, TLS hiccups) may, so it is retried while the mail is useful.
                Err(e) if e.is_permanent() => AttemptOutcome::Permanent(e.to_string()),
                Err(e) => AttemptOutcome::Transient(error_chain(&e)),
            },
            Self::File(file) => match file.send(message).await {
                Ok(id) => AttemptOutcome::Accepted(format!("written to outbox as {id}.eml")),
                Err(e) => AttemptOutcome::Transient(error_chain(&e)),
            },
        }
    }
}

/// Verifies the relay's certificate for `host` against the public roots plus `ca_file`.
fn tls_parameters(smtp: &SmtpSettings) -> anyhow::Result<TlsParameters> {
    let mut builder = TlsParameters::builder(smtp.host.clone());
    if let Some(ca_file) = &smtp.ca_file {
        let pem =
            std::fs::read(ca_file).with_context(|| format!("reading {}", ca_file.display()))?;
        let certificate = Certificate::from_pem(&pem)
            .with_context(|| format!("no PEM certificate in {}", ca_file.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    Ok(builder.build()?)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        source = cause_of(source);
    }
    text
}

fn cause_of<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(std::error::Error::source)
}
