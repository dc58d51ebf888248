//! Who may reset and where their code goes, behind [`Directory`], so the saga does not
//! care whether accounts live in the embedded table ([`SqlDirectory`]) or, next, in LDAP.

mod password;
mod sql;

use secrecy::SecretString;

pub use password::{PasswordHasher, PasswordParams};
pub use sql::SqlDirectory;

/// An account whose password was just proven.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAccount {
    pub account_id: String,
    /// The recovery address registered at onboarding, where codes and notices go.
    pub recovery_email: String,
}

/// A directory that could not answer (not a wrong password: that is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// Checks a user's ID and password.
///
/// Implementations must answer an unknown account, a disabled account and a wrong password
/// alike (`Ok(None)`) and in about the same time, so the answer says nothing about which.
#[tonic::async_trait]
pub trait Directory: Send + Sync + std::fmt::Debug {
    /// # Errors
    /// [`DirectoryError::Unavailable`] when the directory cannot be asked.
    async fn authenticate(
        &self,
        account_id: &str,
        password: &SecretString,
    ) -> Result<Option<DirectoryAccount>, DirectoryError>;

    /// The account as it stands now, without a password: `None` when it is unknown or
    /// disabled. ConfirmReset asks this before rotating, so a reset outlives no account
    /// change the directory made without telling the saga.
    ///
    /// # Errors
    /// [`DirectoryError::Unavailable`] when the directory cannot be asked.
    async fn lookup(&self, account_id: &str) -> Result<Option<DirectoryAccount>, DirectoryError>;
}
