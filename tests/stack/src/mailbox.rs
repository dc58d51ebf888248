//! The stack's SMTP server (the kit's aiosmtpd sink) on one port for the stack's life, and
//! the mail it accepted, read as the user's mail client reads it. It can be taken down and
//! made to answer `451` (greylisting) as a chaos fault; each start is a new process keeping
//! its messages in a folder of its own, and the mailbox reads them all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kagi_testkit::smtp::SmtpSink;

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The `To:` addresses.
    pub to: Vec<String>,
    /// The `Message-ID` header, without angle brackets.
    pub message_id: String,
    pub subject: String,
    /// The text part.
    pub body: String,
}

impl Mail {
    /// The confirmation code of a reset mail, as the user reads it (Japanese or English).
    pub fn reset_code(&self) -> Option<String> {
        code_in(&self.body)
    }
}

/// The confirmation code a reset mail's text `body` gives (Japanese or English).
pub fn code_in(body: &str) -> Option<String> {
    body.lines()
        .find_map(|l| {
            l.strip_prefix("確認コード: ")
                .or_else(|| l.strip_prefix("Confirmation code: "))
        })
        .map(|c| c.trim().to_owned())
}

/// What the SMTP server does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpMode {
    /// Accepts every message (`250`).
    Accepting,
    /// Not listening: connections are refused.
    Down,
    /// Answers every DATA with `451 4.7.1` (greylisted, try later).
    Greylisting,
}

/// Everything the sinks accepted, indexed incrementally.
#[derive(Debug, Default)]
struct Index {
    /// Per sink folder, how many `NNNNNN.eml` files were read.
    read: HashMap<PathBuf, usize>,
    mails: Vec<Mail>,
}

/// The SMTP server and its mail.
#[derive(Debug)]
pub struct Mailbox {
    root: PathBuf,
    port: u16,
    sink: Option<SmtpSink>,
    mode: SmtpMode,
    starts: usize,
    index: Arc<Mutex<Index>>,
}

impl Mailbox {
    /// Starts an accepting server on a free port, keeping mail under `root`.
    pub async fn start(root: &Path) -> Self {
        let mut mailbox = Self {
            root: root.to_owned(),
            port: 0,
            sink: None,
            mode: SmtpMode::Down,
            starts: 0,
            index: Arc::default(),
        };
        mailbox.set_mode(SmtpMode::Accepting).await;
        mailbox
    }

    /// The port the notifier sends to (the same across every mode).
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn mode(&self) -> SmtpMode {
        self.mode
    }

    /// Switches the server to `mode` (stopping and starting the sink process as needed).
    pub async fn set_mode(&mut self, mode: SmtpMode) {
        if let Some(sink) = self.sink.take() {
            sink.stop().await;
        }
        let script = match mode {
            SmtpMode::Down => {
                self.mode = mode;
                return;
            }
            SmtpMode::Accepting => "250",
            SmtpMode::Greylisting => "451",
        };
        self.starts += 1;
        let dir = self.root.join(format!("sink-{:03}", self.starts));
        let sink = SmtpSink::start_on(self.port, script, dir).await;
        self.port = sink.port;
        self.sink = Some(sink);
        self.mode = mode;
    }

    /// A handle that reads the mail while the mailbox itself is busy with faults.
    pub fn reader(&self) -> MailReader {
        MailReader {
            root: self.root.clone(),
            index: self.index.clone(),
        }
    }

    /// Stops the server.
    pub async fn stop(mut self) {
        if let Some(sink) = self.sink.take() {
            sink.stop().await;
        }
    }
}

/// Reads the accepted mail (cheap to clone, shared by every saga of a chaos run).
#[derive(Debug, Clone)]
pub struct MailReader {
    root: PathBuf,
    index: Arc<Mutex<Index>>,
}

impl MailReader {
    /// Every message accepted so far, across every start of the server.
    pub fn all(&self) -> Vec<Mail> {
        self.refresh();
        self.lock().mails.clone()
    }

    /// The messages sent to `address` so far.
    pub fn to(&self, address: &str) -> Vec<Mail> {
        self.refresh();
        self.lock()
            .mails
            .iter()
            .filter(|m| m.to.iter().any(|t| t == address))
            .cloned()
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the files the sinks wrote since the last call (they are numbered from 1 in
    /// each sink folder and appear whole, renamed into place).
    fn refresh(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        let mut index = self.lock();
        for dir in dirs {
            let mut read = index.read.get(&dir).copied().unwrap_or(0);
            while let Ok(raw) = std::fs::read(dir.join(format!("{:06}.eml", read + 1))) {
                read += 1;
                if let Some(mail) = parse(&raw) {
                    index.mails.push(mail);
                }
            }
            index.read.insert(dir, read);
        }
    }
}

pub(crate) fn parse(raw: &[u8]) -> Option<Mail> {
    let mail = mail_parser::MessageParser::default().parse(raw)?;
    Some(Mail {
        to: mail
            .to()
            .map(|to| {
                to.iter()
                    .filter_map(|a| a.address())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        message_id: mail.message_id().unwrap_or_default().to_owned(),
        subject: mail.subject().unwrap_or_default().to_owned(),
        body: mail.body_text(0).unwrap_or_default().into_owned(),
    })
}
