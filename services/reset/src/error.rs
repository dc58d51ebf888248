//! The reset service's errors, and the one place they become gRPC statuses. Messages are
//! English and stable, so the portal can map each to its own Japanese text; none carries a
//! password, code, reset ID or key.

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
    /// A step the reset's state does not allow.
    #[error("{0}")]
    IllegalStep(&'static str),
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

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Status;
        match &err {
            Error::InvalidInput(e) => Status::invalid_argument(e.to_string()),
            Error::BadCredentials => Status::unauthenticated(err.to_string()),
            Error::RateLimited { retry_at } | Error::TooManyStarts { retry_at } => {
                kagi_proto::with_retry_at(Status::resource_exhausted(err.to_string()), *retry_at)
            }
            Error::ResendLimit | Error::MailRateLimited => {
                Status::resource_exhausted(err.to_string())
            }
            Error::UnknownReset => Status::not_found(err.to_string()),
            Error::IllegalStep(_) | Error::ResendTooSoon { .. } => {
                Status::failed_precondition(err.to_string())
            }
            Error::MailUnavailable | Error::KeystoreUnavailable => {
                Status::unavailable(err.to_string())
            }
            Error::Directory(DirectoryError::Unavailable(source)) => {
                tracing::error!(error = format!("{source:#}"), "directory failure");
                Status::unavailable(err.to_string())
            }
            Error::Contended => Status::aborted(err.to_string()),
            Error::Database(source) => {
                tracing::error!(error = %source, "database failure");
                Status::unavailable("the reset database is unavailable; retry later")
            }
            Error::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal failure");
                Status::internal("internal error")
            }
        }
    }
}
