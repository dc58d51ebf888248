//! The keystore's errors, and the one place they become gRPC statuses.

use crate::crypto::CryptoError;
use crate::domain::InvalidInput;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("account already has a setup key")]
    AlreadyEnrolled,
    #[error("account has no setup key")]
    NoKey,
    #[error(
        "the key issued under this idempotency key has since been replaced by a later rotation"
    )]
    RotationSuperseded,
    /// A replay of a rotation after its window: the rotation stands, its secret is not
    /// handed out again (the owner views the current key instead, which is audited).
    #[error(
        "the key issued under this idempotency key can no longer be shown by a retry; view the current key instead"
    )]
    ReplayWindowClosed,
    #[error("too many concurrent changes to this account; retry")]
    Contended,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("key encryption error")]
    Crypto(#[from] CryptoError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Status;
        match &err {
            Error::InvalidInput(e) => Status::invalid_argument(e.to_string()),
            Error::AlreadyEnrolled => Status::already_exists(err.to_string()),
            Error::NoKey => Status::not_found(err.to_string()),
            Error::RotationSuperseded | Error::ReplayWindowClosed => {
                Status::failed_precondition(err.to_string())
            }
            Error::Contended => Status::aborted(err.to_string()),
            Error::Database(source) => {
                tracing::error!(error = %source, "database failure");
                Status::unavailable("the keystore database is unavailable; retry later")
            }
            Error::Crypto(source) => {
                tracing::error!(error = %source, "key encryption failure");
                Status::internal("internal error")
            }
            Error::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal failure");
                Status::internal("internal error")
            }
        }
    }
}
