//! The notifier's one error type, and the one place gRPC status codes are chosen.

use crate::domain::InvalidInput;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    InvalidArgument(#[from] InvalidInput),
    #[error("too many reset mails to this recipient in the last hour; try again later")]
    RateLimited,
    #[error("message_id was already used for a different message")]
    MessageIdReused,
    #[error("no such delivery")]
    NotFound,
    #[error("database failure")]
    Database(#[from] sqlx::Error),
    #[error("internal failure")]
    Internal(#[from] anyhow::Error),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(e) => Self::invalid_argument(e.to_string()),
            Error::RateLimited => Self::resource_exhausted(Error::RateLimited.to_string()),
            Error::MessageIdReused => Self::already_exists(Error::MessageIdReused.to_string()),
            Error::NotFound => Self::not_found(Error::NotFound.to_string()),
            Error::Database(e) => {
                tracing::error!(error = %e, "database failure");
                Self::unavailable("the mail queue is unavailable; try again")
            }
            Error::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal failure");
                Self::internal("internal error")
            }
        }
    }
}
