//! Turning a queued message into an e-mail: operator-editable minijinja templates (text,
//! HTML and subject per kind and language) and a multipart/alternative MIME message with
//! RFC 2047-encoded headers, a Date and a stable Message-ID.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use serde::Serialize;

use kagi_runtime::Institution;

use crate::config::MailSettings;
use crate::domain::{self, Locale, MessageKind, Payload};

/// The built-in templates, written to the templates directory when missing there.
const DEFAULT_TEMPLATES: &[(&str, &str)] = &[
    (
        "reset_code.ja.subject.txt",
        include_str!("../templates/reset_code.ja.subject.txt"),
    ),
    (
        "reset_code.ja.txt",
        include_str!("../templates/reset_code.ja.txt"),
    ),
    (
        "reset_code.ja.html",
        include_str!("../templates/reset_code.ja.html"),
    ),
    (
        "reset_code.en.subject.txt",
        include_str!("../templates/reset_code.en.subject.txt"),
    ),
    (
        "reset_code.en.txt",
        include_str!("../templates/reset_code.en.txt"),
    ),
    (
        "reset_code.en.html",
        include_str!("../templates/reset_code.en.html"),
    ),
    (
        "key_reissued_notice.ja.subject.txt",
        include_str!("../templates/key_reissued_notice.ja.subject.txt"),
    ),
    (
        "key_reissued_notice.ja.txt",
        include_str!("../templates/key_reissued_notice.ja.txt"),
    ),
    (
        "key_reissued_notice.ja.html",
        include_str!("../templates/key_reissued_notice.ja.html"),
    ),
    (
        "key_reissued_notice.en.subject.txt",
        include_str!("../templates/key_reissued_notice.en.subject.txt"),
    ),
    (
        "key_reissued_notice.en.txt",
        include_str!("../templates/key_reissued_notice.en.txt"),
    ),
    (
        "key_reissued_notice.en.html",
        include_str!("../templates/key_reissued_notice.en.html"),
    ),
    (
        "key_displayed_notice.ja.subject.txt",
        include_str!("../templates/key_displayed_notice.ja.subject.txt"),
    ),
    (
        "key_displayed_notice.ja.txt",
        include_str!("../templates/key_displayed_notice.ja.txt"),
    ),
    (
        "key_displayed_notice.ja.html",
        include_str!("../templates/key_displayed_notice.ja.html"),
    ),
    (
        "key_displayed_notice.en.subject.txt",
        include_str!("../templates/key_displayed_notice.en.subject.txt"),
    ),
    (
        "key_displayed_notice.en.txt",
        include_str!("../templates/key_displayed_notice.en.txt"),
    ),
    (
        "key_displayed_notice.en.html",
        include_str!("../templates/key_displayed_notice.en.html"),
    ),
    (
        "operator_action_notice.ja.subject.txt",
        include_str!("../templates/operator_action_notice.ja.subject.txt"),
    ),
    (
        "operator_action_notice.ja.txt",
        include_str!("../templates/operator_action_notice.ja.txt"),
    ),
    (
        "operator_action_notice.ja.html",
        include_str!("../templates/operator_action_notice.ja.html"),
    ),
    (
        "operator_action_notice.en.subject.txt",
        include_str!("../templates/operator_action_notice.en.subject.txt"),
    ),
    (
        "operator_action_notice.en.txt",
        include_str!("../templates/operator_action_notice.en.txt"),
    ),
    (
        "operator_action_notice.en.html",
        include_str!("../templates/operator_action_notice.en.html"),
    ),
];

/// One addressed message as it sits in the queue.
#[derive(Debug, Clone)]
pub struct Envelope<'a> {
    pub delivery_id: &'a str,
    pub kind: MessageKind,
    pub recipient: &'a str,
    pub account_id: &'a str,
    pub locale: Locale,
}

/// Renders and builds the mails, with the deployment's names, links and time zone.
#[derive(Debug)]
pub struct MailComposer {
    templates: minijinja::Environment<'static>,
    settings: MailSettings,
    institution: Institution,
    time_zone: chrono_tz::Tz,
    from_address: lettre::Address,
    message_id_domain: String,
}

/// What the templates see. Holds the code while rendering, so it is not `Debug`.
#[derive(Serialize)]
struct TemplateContext<'a> {
    institution: &'a str,
    system_name: &'a str,
    sender_name: &'a str,
    subject_prefix: &'a str,
    signature: &'a str,
    helpdesk_url: &'a str,
    portal_url: &'a str,
    time_zone: &'a str,
    account_id: &'a str,
    code: Option<&'a str>,
    expires_at: Option<String>,
    reissued_at: Option<String>,
    client_ip: Option<&'a str>,
    displayed_at: Option<String>,
    user_agent: Option<&'a str>,
    acted_at: Option<String>,
    action: Option<&'a str>,
}

impl MailComposer {
    /// Loads the templates (from `settings.templates_dir`, writing the defaults that are
    /// missing there, or the built-in ones) and checks that every one renders. The mails
    /// name `institution` (already resolved), the one the portal's pages name.
    ///
    /// # Errors
    /// An unknown time zone, a bad from-address, an unreadable directory or a template
    /// with a syntax error.
    pub fn new(settings: &MailSettings, institution: &Institution) -> anyhow::Result<Self> {
        let time_zone: chrono_tz::Tz = institution
            .time_zone
            .parse()
            .map_err(|_| anyhow::anyhow!("unknown time zone {:?}", institution.time_zone))?;
        let from_address: lettre::Address = settings
            .from_address
            .parse()
            .with_context(|| format!("bad from_address {:?}", settings.from_address))?;
        let message_id_domain = settings
            .message_id_domain
            .clone()
            .unwrap_or_else(|| from_address.domain().to_owned());
        let mut templates = minijinja::Environment::new();
        templates.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        templates.set_formatter(html_formatter);
        for (name, default) in DEFAULT_TEMPLATES {
            let source = match &settings.templates_dir {
                Some(dir) => read_or_install(dir, name, default)?,
                None => (*default).to_owned(),
            };
            templates
                .add_template_owned(*name, source)
                .with_context(|| format!("template {name}"))?;
        }
        let composer = Self {
            templates,
            settings: settings.clone(),
            institution: institution.clone(),
            time_zone,
            from_address,
            message_id_domain,
        };
        composer.self_check()?;
        Ok(composer)
    }

    /// Renders every template once with sample values, so a broken edit stops the start.
    fn self_check(&self) -> anyhow::Result<()> {
        let now = Utc::now();
        let samples = [
            Payload::ResetCode {
                code: domain::ConfirmationCode::parse("000000").map_err(anyhow::Error::msg)?,
                expires_at_ms: now.timestamp_millis(),
            },
            Payload::KeyReissuedNotice {
                reissued_at_ms: now.timestamp_millis(),
                client_ip: "192.0.2.1".into(),
            },
            Payload::KeyDisplayedNotice {
                displayed_at_ms: now.timestamp_millis(),
                client_ip: "192.0.2.1".into(),
                user_agent: "Mozilla/5.0".into(),
            },
            Payload::OperatorActionNotice {
                acted_at_ms: now.timestamp_millis(),
                action: "unlock".into(),
            },
        ];
        for payload in &samples {
            let kind = match payload {
                Payload::ResetCode { .. } => MessageKind::ResetCode,
                Payload::KeyReissuedNotice { .. } => MessageKind::KeyReissuedNotice,
                Payload::KeyDisplayedNotice { .. } => MessageKind::KeyDisplayedNotice,
                Payload::OperatorActionNotice { .. } => MessageKind::OperatorActionNotice,
            };
            for locale in [Locale::Ja, Locale::En] {
                let envelope = Envelope {
                    delivery_id: "check",
                    kind,
                    recipient: "check@example.org",
                    account_id: "check",
                    locale,
                };
                self.compose(&envelope, payload, SystemTime::now())
                    .context("template self-check")?;
            }
        }
        Ok(())
    }

    /// Builds the e-mail of one queued message. Its Message-ID is derived from the delivery
    /// ID, so every retry carries the same one and receivers can drop duplicates.
    ///
    /// # Errors
    /// A template that fails to render or an address that cannot be used.
    pub fn compose(
        &self,
        envelope: &Envelope<'_>,
        payload: &Payload,
        date: SystemTime,
    ) -> anyhow::Result<Message> {
        let locale = envelope.locale.as_str();
        let inst = &self.institution;
        let name = inst.name.get(locale);
        let system_name = inst.system_name.get(locale);
        let sender_name = format!("{name} {system_name}");
        let kind = envelope.kind.as_str();
        let local = |ms: i64| {
            DateTime::<Utc>::from_timestamp_millis(ms)
                .map(|at| domain::format_local(at, self.time_zone, envelope.locale))
        };
        let mut ctx = TemplateContext {
            institution: name,
            system_name,
            sender_name: &sender_name,
            subject_prefix: inst.short_name.get(locale),
            signature: inst.department.get(locale),
            helpdesk_url: &inst.helpdesk_url,
            portal_url: &self.settings.portal_url,
            time_zone: &inst.time_zone,
            account_id: envelope.account_id,
            code: None,
            expires_at: None,
            reissued_at: None,
            client_ip: None,
            displayed_at: None,
            user_agent: None,
            acted_at: None,
            action: None,
        };
        match payload {
            Payload::ResetCode {
                code,
                expires_at_ms,
            } => {
                ctx.code = Some(code.expose());
                ctx.expires_at = local(*expires_at_ms);
            }
            Payload::KeyReissuedNotice {
                reissued_at_ms,
                client_ip,
            } => {
                ctx.reissued_at = local(*reissued_at_ms);
                ctx.client_ip = Some(client_ip);
            }
            Payload::KeyDisplayedNotice {
                displayed_at_ms,
                client_ip,
                user_agent,
            } => {
                ctx.displayed_at = local(*displayed_at_ms);
                ctx.client_ip = Some(client_ip);
                ctx.user_agent = Some(user_agent);
            }
            Payload::OperatorActionNotice {
                acted_at_ms,
                action,
            } => {
                ctx.acted_at = local(*acted_at_ms);
                ctx.action = Some(action);
            }
        }
        let render = |part: &str| -> anyhow::Result<String> {
            let name = format!("{kind}.{locale}.{part}");
            let template = self.templates.get_template(&name)?;
            template
                .render(&ctx)
                .with_context(|| format!("rendering {name}"))
        };
        let subject = render("subject.txt")?
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let text = zeroize::Zeroizing::new(render("txt")?);
        let html = zeroize::Zeroizing::new(render("html")?);

        let from = Mailbox::new(Some(sender_name.clone()), self.from_address.clone());
        let to = Mailbox::new(None, envelope.recipient.parse().context("recipient")?);
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .date(date)
            .message_id(Some(format!(
                "<{}@{}>",
                envelope.delivery_id, self.message_id_domain
            )))
            .multipart(MultiPart::alternative_plain_html(
                text.to_string(),
                html.to_string(),
            ))?;
        Ok(message)
    }
}

/// Escapes HTML like minijinja does, except that `/` is left alone: dates and links stay
/// readable in the HTML source (escaping `/` protects nothing in these templates).
fn html_formatter(
    out: &mut minijinja::Output<'_>,
    state: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() != minijinja::AutoEscape::Html
        || value.is_safe()
        || value.is_none()
        || value.is_undefined()
    {
        return minijinja::escape_formatter(out, state, value);
    }
    let text = value.to_string();
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            c => escaped.push(c),
        }
    }
    out.write_str(&escaped)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

fn read_or_install(dir: &Path, name: &str, default: &str) -> anyhow::Result<String> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(source) => Ok(source),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            std::fs::write(&path, default)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(default.to_owned())
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}
