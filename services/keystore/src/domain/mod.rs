//! The keystore's rules, free of I/O: time and randomness are passed in.

pub mod account;
pub mod campus;
pub mod diagnosis;
pub mod lockout;
pub mod setup_key;
pub mod totp;

pub use account::{AccountId, IdempotencyKey};
pub use campus::CampusNetworks;
pub use diagnosis::{AuthenticatorCheck, CheckLimit, Diagnosis};
pub use lockout::{LockState, LockoutPolicy};
pub use setup_key::{KeyParams, SetupKeySecret};
pub use totp::{CodeMatch, OneTimeCode, TotpVerifier};

/// Why a value from a caller was refused; each message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    #[error(transparent)]
    AccountId(#[from] kagi_runtime::InvalidAccountId),
    #[error("code must be exactly {0} ASCII digits")]
    Code(u32),
    #[error("idempotency_key must be 1 to 128 printable ASCII characters")]
    IdempotencyKey,
    #[error("client_ip must be an IPv4 or IPv6 address")]
    ClientIp,
    #[error("page_size must be at most 1000")]
    PageSize,
    #[error(transparent)]
    Operator(#[from] kagi_runtime::operator::InvalidOperatorContext),
}
