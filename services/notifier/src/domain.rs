//! The notifier's rules, free of I/O: what a valid request is, how long a message stays
//! useful, and whether a failed attempt is retried, when, or given up. Time and randomness
//! are passed in.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Why a request was refused before anything was queued. The text reaches the caller, so it
/// never contains the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("message_id must be 1 to 128 printable ASCII characters")]
    MessageId,
    #[error("recipient is not a valid e-mail address")]
    Recipient,
    #[error("account_id must be 1 to 128 characters without control characters")]
    AccountId,
    #[error("code must be exactly 6 digits")]
    Code,
    #[error("expires_at is missing")]
    MissingExpiry,
    #[error("expires_at is not in the future")]
    ExpiryInPast,
    #[error("reissued_at is missing")]
    MissingReissuedAt,
    #[error("client_ip is not an IP address")]
    ClientIp,
    #[error("unknown locale {0:?}; expected \"ja\" or \"en\"")]
    Locale(String),
}

/// The language of an e-mail. Japanese unless the caller asks for English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Locale {
    Ja,
    En,
}

impl Locale {
    /// Parses a request's locale; empty means the default, Japanese.
    ///
    /// # Errors
    /// [`InvalidInput::Locale`] for anything but `ja`/`en` (and their region forms).
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "" | "ja" | "ja-jp" | "ja_jp" => Ok(Self::Ja),
            "en" | "en-us" | "en-gb" | "en_us" | "en_gb" => Ok(Self::En),
            _ => Err(InvalidInput::Locale(raw.chars().take(32).collect())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ja => "ja",
            Self::En => "en",
        }
    }
}

/// Which e-mail a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    ResetCode,
    KeyReissuedNotice,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetCode => "reset_code",
            Self::KeyReissuedNotice => "key_reissued_notice",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reset_code" => Some(Self::ResetCode),
            "key_reissued_notice" => Some(Self::KeyReissuedNotice),
            _ => None,
        }
    }
}

/// Where one message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Queued,
    Sent,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "queued" => Some(Self::Queued),
            "sent" => Some(Self::Sent),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// The 6-digit confirmation code of a reset. A secret: `Debug` hides it, memory is wiped on
/// drop, and it is only exposed to the template that puts it in the mail.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct ConfirmationCode(String);

impl ConfirmationCode {
    /// # Errors
    /// [`InvalidInput::Code`] unless `raw` is exactly six ASCII digits.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        if raw.len() == 6 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidInput::Code)
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ConfirmationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ConfirmationCode(******)")
    }
}

impl Serialize for ConfirmationCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ConfirmationCode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = zeroize::Zeroizing::new(String::deserialize(deserializer)?);
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// What the mail says beyond its addressing; stored with the queued message and wiped once
/// the message is sent, failed or expired.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Payload {
    ResetCode {
        code: ConfirmationCode,
        expires_at_ms: i64,
    },
    KeyReissuedNotice {
        reissued_at_ms: i64,
        client_ip: String,
    },
}

/// The fields of a key-reissued notice request, as the caller sent them.
#[derive(Debug, Clone, Copy)]
pub struct NoticeFields<'a> {
    pub message_id: &'a str,
    pub recipient: &'a str,
    pub account_id: &'a str,
    pub reissued_at: Option<DateTime<Utc>>,
    pub client_ip: &'a str,
    pub locale: &'a str,
}

/// A validated message, ready to be queued.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub message_id: String,
    pub kind: MessageKind,
    pub recipient: lettre::Address,
    pub account_id: String,
    pub locale: Locale,
    pub payload: Payload,
    /// After this instant the mail is useless and is not sent.
    pub not_after: DateTime<Utc>,
}

impl NewMessage {
    /// Validates a reset-code request. The mail is useful until the code expires.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn reset_code(
        message_id: &str,
        recipient: &str,
        account_id: &str,
        code: &str,
        expires_at: Option<DateTime<Utc>>,
        locale: &str,
        now: DateTime<Utc>,
    ) -> Result<Self, InvalidInput> {
        let message_id = parse_message_id(message_id)?;
        let recipient = parse_recipient(recipient)?;
        let account_id = parse_account_id(account_id)?;
        let code = ConfirmationCode::parse(code)?;
        let expires_at = expires_at.ok_or(InvalidInput::MissingExpiry)?;
        if expires_at <= now {
            return Err(InvalidInput::ExpiryInPast);
        }
        let locale = Locale::parse(locale)?;
        Ok(Self {
            message_id,
            kind: MessageKind::ResetCode,
            recipient,
            account_id,
            locale,
            payload: Payload::ResetCode {
                code,
                expires_at_ms: expires_at.timestamp_millis(),
            },
            not_after: expires_at,
        })
    }

    /// Validates a key-reissued notice. It stays worth sending for `max_age`.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn key_reissued_notice(
        notice: &NoticeFields<'_>,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<Self, InvalidInput> {
        let message_id = parse_message_id(notice.message_id)?;
        let recipient = parse_recipient(notice.recipient)?;
        let account_id = parse_account_id(notice.account_id)?;
        let reissued_at = notice.reissued_at.ok_or(InvalidInput::MissingReissuedAt)?;
        let client_ip: IpAddr = notice
            .client_ip
            .trim()
            .parse()
            .map_err(|_| InvalidInput::ClientIp)?;
        let locale = Locale::parse(notice.locale)?;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::days(1));
        Ok(Self {
            message_id,
            kind: MessageKind::KeyReissuedNotice,
            recipient,
            account_id,
            locale,
            payload: Payload::KeyReissuedNotice {
                reissued_at_ms: reissued_at.timestamp_millis(),
                client_ip: client_ip.to_string(),
            },
            not_after: now + max_age,
        })
    }

    /// The key a per-recipient rate limit counts under: the address, case-folded.
    pub fn rate_key(&self) -> String {
        self.recipient.to_string().to_lowercase()
    }
}

fn parse_message_id(raw: &str) -> Result<String, InvalidInput> {
    let ok = (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| raw.to_owned()).ok_or(InvalidInput::MessageId)
}

fn parse_recipient(raw: &str) -> Result<lettre::Address, InvalidInput> {
    if raw.len() > 254 {
        return Err(InvalidInput::Recipient);
    }
    raw.parse::<lettre::Address>()
        .map_err(|_| InvalidInput::Recipient)
}

fn parse_account_id(raw: &str) -> Result<String, InvalidInput> {
    let ok = !raw.is_empty() && raw.chars().count() <= 128 && !raw.chars().any(char::is_control);
    ok.then(|| raw.to_owned()).ok_or(InvalidInput::AccountId)
}

/// How one SMTP attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The server accepted the message; its reply.
    Accepted(String),
    /// Worth trying again: connection refused, timeout, a 4xx reply.
    Transient(String),
    /// Will never work: a 5xx reply, or a message that cannot be built.
    Permanent(String),
}

/// What to do with a message after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NextStep {
    MarkSent { reply: String },
    RetryAt { at: DateTime<Utc>, reply: String },
    MarkFailed { reply: String },
}

/// Exponential backoff with jitter between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Backoff {
    /// The wait after the `attempt`-th failure (1-based): `initial * 2^(attempt-1)`, capped at
    /// `max`, then scaled into `[1/2, 1)` of itself by `jitter` in `[0, 1)` so replicas retrying
    /// together spread out.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        let jitter = jitter.clamp(0.0, 1.0);
        base.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Decides the next step after the `attempt`-th attempt ended with `outcome` at `now`.
/// A transient failure is retried only if the retry would still happen before `not_after`.
pub fn next_step(
    outcome: AttemptOutcome,
    attempt: u32,
    now: DateTime<Utc>,
    not_after: DateTime<Utc>,
    backoff: Backoff,
    jitter: f64,
) -> NextStep {
    match outcome {
        AttemptOutcome::Accepted(reply) => NextStep::MarkSent { reply },
        AttemptOutcome::Permanent(reply) => NextStep::MarkFailed { reply },
        AttemptOutcome::Transient(reply) => {
            let wait = chrono::Duration::from_std(backoff.delay(attempt, jitter))
                .unwrap_or(chrono::Duration::MAX);
            match now.checked_add_signed(wait) {
                Some(at) if at < not_after => NextStep::RetryAt { at, reply },
                _ => NextStep::MarkFailed {
                    reply: format!("expired before delivery; last reply: {reply}"),
                },
            }
        }
    }
}

/// The reply recorded for a message that was never attempted because it expired first.
pub const EXPIRED_UNSENT: &str = "expired before delivery";

/// Formats an instant for the mail body, in the deployment's time zone.
pub fn format_local(at: DateTime<Utc>, tz: chrono_tz::Tz, locale: Locale) -> String {
    let local = at.with_timezone(&tz);
    match locale {
        Locale::Ja => local.format("%Y/%m/%d %H:%M:%S").to_string(),
        Locale::En => local.format("%-d %B %Y, %H:%M:%S %Z").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 7, 8, 7, 15, 52).unwrap()
    }

    #[test]
    fn a_valid_reset_request_defaults_to_japanese() {
        let expires = now() + chrono::Duration::minutes(30);
        let m = NewMessage::reset_code(
            "m-1",
            "taro@example.ac.jp",
            "a123",
            "012345",
            Some(expires),
            "",
            now(),
        )
        .unwrap();
        assert_eq!(m.locale, Locale::Ja);
        assert_eq!(m.not_after, expires);
    }

    #[test]
    fn bad_input_is_refused_field_by_field() {
        let later = Some(now() + chrono::Duration::minutes(30));
        let bad = |r: &str, c: &str, e, l: &str| {
            NewMessage::reset_code("m", r, "a", c, e, l, now()).unwrap_err()
        };
        assert_eq!(
            bad("not-an-address", "123456", later, "ja"),
            InvalidInput::Recipient
        );
        assert_eq!(bad("a@b.jp", "", later, "ja"), InvalidInput::Code);
        assert_eq!(bad("a@b.jp", "12345a", later, "ja"), InvalidInput::Code);
        assert_eq!(
            bad("a@b.jp", "123456", Some(now()), "ja"),
            InvalidInput::ExpiryInPast
        );
        assert_eq!(
            bad("a@b.jp", "123456", later, "fr"),
            InvalidInput::Locale("fr".into())
        );
    }

    #[test]
    fn the_code_never_shows_in_debug_output() {
        let code = ConfirmationCode::parse("987654").unwrap();
        assert!(!format!("{code:?}").contains("987654"));
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(10),
        };
        assert_eq!(b.delay(1, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2));
        assert!(b.delay(3, 0.99) < Duration::from_secs(4));
        assert_eq!(b.delay(10, 0.0), Duration::from_secs(5));
    }

    #[test]
    fn a_transient_failure_is_not_retried_past_the_expiry() {
        let b = Backoff {
            initial: Duration::from_secs(60),
            max: Duration::from_secs(60),
        };
        let soon = now() + chrono::Duration::seconds(10);
        let step = next_step(
            AttemptOutcome::Transient("451 later".into()),
            1,
            now(),
            soon,
            b,
            0.5,
        );
        assert!(matches!(step, NextStep::MarkFailed { .. }));
        let later = now() + chrono::Duration::minutes(30);
        let step = next_step(
            AttemptOutcome::Transient("451 later".into()),
            1,
            now(),
            later,
            b,
            0.5,
        );
        assert!(matches!(step, NextStep::RetryAt { .. }));
    }

    #[test]
    fn expiry_is_shown_in_tokyo_time() {
        let at = Utc.with_ymd_and_hms(2024, 7, 8, 7, 45, 52).unwrap();
        assert_eq!(
            format_local(at, chrono_tz::Asia::Tokyo, Locale::Ja),
            "2024/07/08 16:45:52"
        );
        assert_eq!(
            format_local(at, chrono_tz::Asia::Tokyo, Locale::En),
            "8 July 2024, 16:45:52 JST"
        );
    }
}
