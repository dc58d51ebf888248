//! The keystore's errors, and the one place they become gRPC statuses, each with its
//! machine-readable `kagi.v1.ErrorReason` (see `kagi_proto::reason`).

use kagi_proto::v1::ErrorReason;

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
    /// RevokeKey on an account whose key is already revoked.
    #[error("account has no live setup key to revoke")]
    NoLiveKey,
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
    /// "Check my authenticator" used up for now: its own allowance, not the login's.
    #[error("too many authenticator checks for this account; try again later")]
    CheckLimited { retry_at: i64 },
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error("key encryption error")]
    Crypto(#[from] CryptoError),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    /// The machine-readable reason callers act on.
    pub fn reason(&self) -> ErrorReason {
        match self {
            Self::InvalidInput(InvalidInput::Code(_)) => ErrorReason::CodeFormat,
            Self::InvalidInput(_) => ErrorReason::InvalidInput,
            Self::AlreadyEnrolled => ErrorReason::AlreadyEnrolled,
            Self::NoKey | Self::NoLiveKey => ErrorReason::NoSetupKey,
            Self::RotationSuperseded => ErrorReason::KeyReissuedSince,
            Self::ReplayWindowClosed => ErrorReason::ReplayWindowPassed,
            Self::Contended => ErrorReason::Contended,
            Self::CheckLimited { .. } => ErrorReason::RateLimited,
            Self::Database(_) => ErrorReason::BackendUnavailable,
            Self::Crypto(_) | Self::Internal(_) => ErrorReason::Internal,
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        use tonic::Code;
        let reason = err.reason();
        let (code, message) = match &err {
            Error::InvalidInput(e) => (Code::InvalidArgument, e.to_string()),
            Error::AlreadyEnrolled => (Code::AlreadyExists, err.to_string()),
            Error::NoKey => (Code::NotFound, err.to_string()),
            Error::RotationSuperseded | Error::ReplayWindowClosed | Error::NoLiveKey => {
                (Code::FailedPrecondition, err.to_string())
            }
            Error::Contended => (Code::Aborted, err.to_string()),
            Error::CheckLimited { .. } => (Code::ResourceExhausted, err.to_string()),
            Error::Database(source) => {
                tracing::error!(error = %source, "database failure");
                (
                    Code::Unavailable,
                    "the keystore database is unavailable; retry later".to_owned(),
                )
            }
            Error::Crypto(source) => {
                tracing::error!(error = %source, "key encryption failure");
                (Code::Internal, "internal error".to_owned())
            }
            Error::Internal(source) => {
                tracing::error!(error = format!("{source:#}"), "internal failure");
                (Code::Internal, "internal error".to_owned())
            }
        };
        let status = kagi_proto::reason::status(code, message, reason);
        match err {
            Error::CheckLimited { retry_at } => kagi_proto::with_retry_at(status, retry_at),
            _ => status,
        }
    }
}
