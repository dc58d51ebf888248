//! A request turned into a message worth queuing: which mail, to whom, in which language,
//! what it says ([`Payload`]) and until when it is worth sending.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{ConfirmationCode, InvalidInput, Locale};

/// Which e-mail a delivery carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    ResetCode,
    KeyReissuedNotice,
    /// "Your setup key was displayed" (portal menus 1 and 3).
    KeyDisplayedNotice,
    /// "An operator of the help desk acted on your account" (unlock, revoke, cancel).
    OperatorActionNotice,
}

impl MessageKind {
    /// The name stored in the queue and used in template names.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ResetCode => "reset_code",
            Self::KeyReissuedNotice => "key_reissued_notice",
            Self::KeyDisplayedNotice => "key_displayed_notice",
            Self::OperatorActionNotice => "operator_action_notice",
        }
    }

    /// The kind a stored name stands for, if any.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reset_code" => Some(Self::ResetCode),
            "key_reissued_notice" => Some(Self::KeyReissuedNotice),
            "key_displayed_notice" => Some(Self::KeyDisplayedNotice),
            "operator_action_notice" => Some(Self::OperatorActionNotice),
            _ => None,
        }
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
    KeyDisplayedNotice {
        displayed_at_ms: i64,
        client_ip: String,
        user_agent: String,
    },
    OperatorActionNotice {
        acted_at_ms: i64,
        /// [`OperatorAction::as_str`]: what the templates branch on.
        action: String,
    },
}

/// What a help-desk operator did, as the notice names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    Unlock,
    RevokeKey,
    CancelReset,
}

impl OperatorAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unlock => "unlock",
            Self::RevokeKey => "revoke_key",
            Self::CancelReset => "cancel_reset",
        }
    }
}

/// The fields of an operator-action notice request, as the caller sent them.
#[derive(Debug, Clone, Copy)]
pub struct OperatorFields<'a> {
    pub message_id: &'a str,
    pub recipient: &'a str,
    pub account_id: &'a str,
    /// `None` when the caller named no known action.
    pub action: Option<OperatorAction>,
    pub acted_at: Option<DateTime<Utc>>,
    pub locale: &'a str,
}

/// The fields of a key-displayed notice request, as the caller sent them.
#[derive(Debug, Clone, Copy)]
pub struct DisplayedFields<'a> {
    pub message_id: &'a str,
    pub recipient: &'a str,
    pub account_id: &'a str,
    pub displayed_at: Option<DateTime<Utc>>,
    pub client_ip: &'a str,
    pub user_agent: &'a str,
    pub locale: &'a str,
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

    /// Validates a key-displayed notice. Like the reissue notice it stays worth sending for
    /// `max_age`. The user agent is whatever the browser sent: control characters (line
    /// breaks that could fake lines of the mail) are dropped and it is cut to 256
    /// characters; HTML escaping is the template's.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn key_displayed_notice(
        notice: &DisplayedFields<'_>,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<Self, InvalidInput> {
        let message_id = parse_message_id(notice.message_id)?;
        let recipient = parse_recipient(notice.recipient)?;
        let account_id = parse_account_id(notice.account_id)?;
        let displayed_at = notice
            .displayed_at
            .ok_or(InvalidInput::MissingDisplayedAt)?;
        let client_ip: IpAddr = notice
            .client_ip
            .trim()
            .parse()
            .map_err(|_| InvalidInput::ClientIp)?;
        let user_agent: String = notice
            .user_agent
            .chars()
            .filter(|c| !c.is_control())
            .take(256)
            .collect();
        let locale = Locale::parse(notice.locale)?;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::days(1));
        Ok(Self {
            message_id,
            kind: MessageKind::KeyDisplayedNotice,
            recipient,
            account_id,
            locale,
            payload: Payload::KeyDisplayedNotice {
                displayed_at_ms: displayed_at.timestamp_millis(),
                client_ip: client_ip.to_string(),
                user_agent,
            },
            not_after: now + max_age,
        })
    }

    /// Validates an operator-action notice; worth sending for `max_age` like the others.
    ///
    /// # Errors
    /// The first invalid field.
    pub fn operator_action_notice(
        notice: &OperatorFields<'_>,
        now: DateTime<Utc>,
        max_age: Duration,
    ) -> Result<Self, InvalidInput> {
        let message_id = parse_message_id(notice.message_id)?;
        let recipient = parse_recipient(notice.recipient)?;
        let account_id = parse_account_id(notice.account_id)?;
        let action = notice.action.ok_or(InvalidInput::Action)?;
        let acted_at = notice.acted_at.ok_or(InvalidInput::MissingActedAt)?;
        let locale = Locale::parse(notice.locale)?;
        let max_age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::days(1));
        Ok(Self {
            message_id,
            kind: MessageKind::OperatorActionNotice,
            recipient,
            account_id,
            locale,
            payload: Payload::OperatorActionNotice {
                acted_at_ms: acted_at.timestamp_millis(),
                action: action.as_str().to_owned(),
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

/// The same rule as every other kagi service: an ID the keystore would refuse is no
/// account to mail about.
fn parse_account_id(raw: &str) -> Result<String, InvalidInput> {
    Ok(kagi_runtime::AccountId::parse(raw)?.into_string())
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
    fn a_forged_user_agent_cannot_add_lines_to_the_notice() {
        let fields = DisplayedFields {
            message_id: "m-2",
            recipient: "taro@example.ac.jp",
            account_id: "a123",
            displayed_at: Some(now()),
            client_ip: "::ffff:203.0.113.9",
            user_agent: "Mozilla/5.0\r\n\r\nIt was you, nothing to do.",
            locale: "en",
        };
        let m = NewMessage::key_displayed_notice(&fields, now(), Duration::from_secs(60)).unwrap();
        let Payload::KeyDisplayedNotice { user_agent, .. } = m.payload else {
            panic!("{:?}", m.payload);
        };
        assert_eq!(user_agent, "Mozilla/5.0It was you, nothing to do.");
        assert_eq!(m.kind, MessageKind::KeyDisplayedNotice);
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
}
