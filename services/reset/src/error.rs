//! The reset service's errors, and the one place they become gRPC statuses. Each status
//! carries a machine-readable `kagi.v1.ErrorReason` (as `google.rpc.ErrorInfo`, see
//! `kagi_proto::reason`) that callers map to their own words; the English message is for
//! people and logs. None carries a password, code, reset ID or key.

use kagi_proto::v1::ErrorReason;

use crate::directory::DirectoryError;
use crate::domain::InvalidInput;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// Unknown account, disabled account or wrong password: one answer for all three.
    #[error("the account ID or password is incorrect")]
    BadCredentials,
    /// Too many failed password checks; `retry_at` (Unix ms) is when the limit admits again.
    #[error("too many reset attempts; try again later")]
    RateLimited { retry_at: i64 },
    /// The account started as many reissues this hour as its mail allowance covers.
    #[error(
        "no more reset mails to this address for now (the notifier's hourly limit); try again later"
    )]
    TooManyStarts { retry_at: i64 },
    #[error("no such reset; start again")]
    UnknownReset,
    /// The help desk asked to cancel, and the account has no reset in progress.
    #[error("the account has no reset in progress")]
    NoResetInProgress,
    /// A step the reset's state does not allow.
    #[error("{0}")]
    IllegalStep(Refusal),
    #[error("a new code can be sent 3 minutes after the last one; try again in {wait_secs} s")]
    ResendTooSoon { wait_secs: i64 },
    #[error("no more codes can be sent for this reset; start again")]
    ResendLimit,
    #[error("the notifier refused more reset mails to this address for now; try again later")]
    MailRateLimited,
    #[error("the mail service cannot be reached; start again in a few minutes")]
    MailUnavailable,
    #[error("the key service cannot be reached; retry the confirmation in a few minutes")]
    KeystoreUnavailable,
    #[error("the account directory cannot be reached; try again in a few minutes")]
    Directory(#[from] DirectoryError),
    #[error("too many concurrent changes to this reset; retry")]
    Contended,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// Why a step the reset's state does not allow is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotVerified,
    AlreadyVerified,
    /// This reset's reissue is under way: retrying the confirmation finishes it.
    Confirming,
    /// Another reset of the account is being completed.
    ConfirmingElsewhere,
    Completed,
    Cancelled,
    Expired,
    Locked,
    Superseded,
    ConfirmWindowPassed,
    AccountChanged,
    /// The new key was issued; the window in which a retry shows it again is over.
    NoLongerShown,
    KeyReissuedSince,
    NoSetupKey,
    /// Confirmed already: nothing left to cancel.
    NotCancellable,
}

impl Refusal {
    /// Every refusal, for tests that check each one's mapping.
    pub const ALL: [Self; 15] = [
        Self::NotVerified,
        Self::AlreadyVerified,
        Self::Confirming,
        Self::ConfirmingElsewhere,
        Self::Completed,
        Self::Cancelled,
        Self::Expired,
        Self::Locked,
        Self::Superseded,
        Self::ConfirmWindowPassed,
        Self::AccountChanged,
        Self::NoLongerShown,
        Self::KeyReissuedSince,
        Self::NoSetupKey,
        Self::NotCancellable,
    ];

    /// The status message: English, for people and logs.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotVerified => "the confirmation code has not been verified yet",
            Self::AlreadyVerified => {
                "the confirmation code was already verified; confirm the reissue"
            }
            Self::Confirming => "the reissue is under way; retry the confirmation",
            Self::ConfirmingElsewhere => {
                "a reissue for this account is being completed; try again in a minute"
            }
            Self::Completed => "this reset is already complete",
            Self::Cancelled => "this reset was cancelled; start again",
            Self::Expired => "this reset has expired; start again",
            Self::Locked => "too many wrong codes; this reset is locked, start again",
            Self::Superseded => "a newer reset for this account replaced this one; use the newest",
            Self::ConfirmWindowPassed => "the 10 minutes to confirm have passed; start again",
            Self::AccountChanged => {
                "the account was changed or disabled since this reset began; start again"
            }
            Self::NoLongerShown => {
                "the new key was issued and can no longer be shown here; view it with 現在のセットアップキーを表示する"
            }
            Self::KeyReissuedSince => {
                "the setup key was reissued again since; view it with 現在のセットアップキーを表示する"
            }
            Self::NoSetupKey => "this account has no setup key to reissue",
            Self::NotCancellable => "the reissue was already confirmed and cannot be cancelled",
        }
    }

    /// What callers act on.
    pub fn reason(self) -> ErrorReason {
        match self {
            Self::NotVerified => ErrorReason::NotVerified,
            Self::AlreadyVerified => ErrorReason::AlreadyVerified,
            Self::Confirming | Self::ConfirmingElsewhere => ErrorReason::Confirming,
            Self::Completed | Self::NotCancellable => ErrorReason::Completed,
            Self::Cancelled => ErrorReason::Cancelled,
            Self::Expired => ErrorReason::CodeExpired,
            Self::Locked => ErrorReason::CodeLocked,
            Self::Superseded => ErrorReason::Superseded,
            Self::ConfirmWindowPassed => ErrorReason::ConfirmWindowPassed,
            Self::AccountChanged => ErrorReason::AccountChanged,
            Self::NoLongerShown => ErrorReason::ReplayWindowPassed,
            Self::KeyReissuedSince => ErrorReason::KeyReissuedSince,
            Self::NoSetupKey => ErrorReason::NoSetupKey,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

impl Error {
    /// The machine-readable reason callers act on.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidInput(InvalidInput::ResetId) => ErrorReason::UnknownReset,
            Self::InvalidInput(InvalidInput::Code) => ErrorReason::CodeFormat,
            Self::InvalidInput(_) => ErrorReason::InvalidInput,
            Self::BadCredentials => ErrorReason::BadCredentials,
            Self::RateLimited { .. } => ErrorReason::RateLimited,
            // The reissues one account may start fit the notifier's mail allowance.
            Self::TooManyStarts { .. } => ErrorReason::MailRateLimited,
            Self::UnknownReset | Self::NoResetInProgress => ErrorReason::UnknownReset,
            Self::IllegalStep(refusal) => refusal.reason(),
            Self::ResendTooSoon { .. } => ErrorReason::ResendTooSoon,
            Self::ResendLimit => ErrorReason::ResendLimit,
            Self::MailRateLimited => ErrorReason::MailRateLimited,
            Self::MailUnavailable => ErrorReason::MailUnavailable,
            Self::KeystoreUnavailable => ErrorReason::KeystoreUnavailable,
            Self::Directory(_) | Self::Database(_) => ErrorReason::BackendUnavailable,
            Self::Contended => ErrorReason::Contended,
            Self::Internal(_) => ErrorReason::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let reason = err.reason();
        let (code, message) = match &err {
            Error::InvalidInput(e) => (Code::InvalidArgument, e.to_string()),
            Error::BadCredentials => (Code::Unauthenticated, err.to_string()),
            Error::RateLimited { .. }
            | Error::TooManyStarts { .. }
            | Error::ResendLimit
            | Error::MailRateLimited => (Code::ResourceExhausted, err.to_string()),
            Error::UnknownReset => (Code::NotFound, err.to_string()),
            Error::IllegalStep(_) | Error::ResendTooSoon { .. } | Error::NoResetInProgress => {
                (Code::FailedPrecondition, err.to_string())
            }
            Error::MailUnavailable | Error::KeystoreUnavailable => {
                (Code::Unavailable, err.to_string())
            }
            Error::Directory(DirectoryError::Unavailable(source)) => {
                tracing::error!(error = format!("{source:#}"), "directory failure");
                (Code::Unavailable, err.to_string())
            }
            Error::Contended => (Code::Aborted, err.to_string()),
            Error::Database(source) => {
                tracing::error!(error = %source, "database failure");
                (
                    Code::Unavailable,
                    "the reset database is unavailable; retry later".to_owned(),
                )
            }
            Error::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal failure");
                (Code::Internal, "internal error".to_owned())
            }
        };
        let status = kagi_proto::reason::status(code, message, reason);
        match err {
            // The limit says when it admits again; the portal tells the user that time.
            Error::RateLimited { retry_at } | Error::TooManyStarts { retry_at } => {
                kagi_proto::with_retry_at(status, retry_at)
            }
            _ => status,
        }
    }
}
