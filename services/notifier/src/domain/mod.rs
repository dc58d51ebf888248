//! The notifier's rules, free of I/O: what a valid request is, how long a message stays
//! useful, and whether a failed attempt is retried, when, or given up. Time and randomness
//! are passed in.
//!
//! - [`message`]: a validated request ([`NewMessage`]) and the [`Payload`] stored with it;
//! - [`code`]: the [`ConfirmationCode`], a secret;
//! - [`locale`]: the mail's language and how times are shown in it;
//! - [`state`]: where a delivery stands;
//! - [`retry`]: how an SMTP attempt ended and what happens next (backoff, expiry).

pub mod code;
pub mod locale;
pub mod message;
pub mod retry;
pub mod state;

pub use code::ConfirmationCode;
pub use locale::{Locale, format_local};
pub use message::{
    DisplayedFields, MessageKind, NewMessage, NoticeFields, OperatorAction, OperatorFields, Payload,
};
pub use retry::{AttemptOutcome, Backoff, EXPIRED_UNSENT, NextStep, next_step};
pub use state::DeliveryState;

/// Why a request was refused before anything was queued. The text reaches the caller, so it
/// never contains the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error("message_id must be 1 to 128 printable ASCII characters")]
    MessageId,
    #[error("recipient is not a valid e-mail address")]
    Recipient,
    #[error(transparent)]
    AccountId(#[from] kagi_runtime::InvalidAccountId),
    #[error("code must be exactly 6 digits")]
    Code,
    #[error("expires_at is missing")]
    MissingExpiry,
    #[error("expires_at is not in the future")]
    ExpiryInPast,
    #[error("reissued_at is missing")]
    MissingReissuedAt,
    #[error("displayed_at is missing")]
    MissingDisplayedAt,
    #[error("action must be UNLOCK, REVOKE_KEY or CANCEL_RESET")]
    Action,
    #[error("acted_at is missing")]
    MissingActedAt,
    #[error("{0}")]
    Operator(String),
    #[error("page_size must be at most 100")]
    PageSize,
    #[error("client_ip is not an IP address")]
    ClientIp,
    #[error("unknown locale {0:?}; expected \"ja\" or \"en\"")]
    Locale(String),
}
