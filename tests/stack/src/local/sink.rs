//! The in-process stack's SMTP server (the kit's aiosmtpd sink, answering `250`), read as
//! the user's mail client reads it ([`Mail`]) or as raw messages for tests that parse more
//! (HTML parts, headers).

use kagi_testkit::smtp::SmtpSink;

use crate::mailbox::{Mail, parse};

/// The SMTP server the notifier delivers to; stopped when dropped.
#[derive(Debug)]
pub struct Sink {
    pub port: u16,
    inner: SmtpSink,
}

impl Sink {
    /// A fresh server on a free port, accepting every message.
    pub async fn start() -> Self {
        let inner = SmtpSink::start("250").await;
        Self {
            port: inner.port,
            inner,
        }
    }

    /// The messages accepted so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        self.raw().iter().filter_map(|m| parse(m)).collect()
    }

    /// Waits (up to the kit's limit) until `n` messages arrived; returns all of them.
    pub async fn wait_for_mails(&self, n: usize) -> Vec<Mail> {
        let raw = self.wait_for_raw(n).await;
        raw.iter().filter_map(|m| parse(m)).collect()
    }

    /// The messages accepted after the first `first`, in order: a poller that remembers
    /// how many it has read parses each message once.
    pub fn mails_from(&self, first: usize) -> Vec<Mail> {
        self.raw()
            .iter()
            .skip(first)
            .filter_map(|m| parse(m))
            .collect()
    }

    /// The messages accepted so far, as received.
    pub fn raw(&self) -> Vec<Vec<u8>> {
        self.inner.mails()
    }

    /// As [`Self::wait_for_mails`], as received.
    pub async fn wait_for_raw(&self, n: usize) -> Vec<Vec<u8>> {
        self.inner.wait_for_mails(n).await
    }

    /// The confirmation code in the `n`-th mail (1-based), read as the user reads it.
    ///
    /// # Panics
    /// The mail does not arrive, or holds no code.
    #[allow(clippy::panic)]
    pub async fn code_in_mail(&self, n: usize) -> String {
        let mails = self.wait_for_mails(n).await;
        let mail = mails.get(n - 1);
        mail.and_then(Mail::reset_code)
            .unwrap_or_else(|| panic!("no code in mail {n}: {mail:?}"))
    }
}
