//! Managing the embedded directory: what `kagi-reset accounts …` does, usable by tests and
//! provisioning tools too.

use std::sync::Arc;

use secrecy::SecretString;

use crate::directory::PasswordHasher;
use crate::domain::{self, InvalidInput};
use crate::store::Db;

/// Why an account change was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("account {0:?} already exists")]
    Exists(String),
    #[error("no account {0:?}")]
    NotFound(String),
    #[error("the password must be 8 to 1024 bytes")]
    WeakPassword,
    #[error("database error")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// Adds and changes accounts of the embedded directory.
#[derive(Debug, Clone)]
pub struct AccountAdmin {
    db: Db,
    hasher: Arc<PasswordHasher>,
}

impl AccountAdmin {
    pub fn new(db: Db, hasher: Arc<PasswordHasher>) -> Self {
        Self { db, hasher }
    }

    /// # Errors
    /// A malformed ID or address, a short password, a taken ID, storage failures.
    pub async fn add(
        &self,
        account_id: &str,
        recovery_email: &str,
        password: SecretString,
        now: i64,
    ) -> Result<(), AccountError> {
        domain::check_account_id(account_id)?;
        domain::check_email(recovery_email)?;
        let hash = self.hash(password).await?;
        if !self
            .db
            .insert_account(account_id, &hash, recovery_email, now)
            .await?
        {
            return Err(AccountError::Exists(account_id.to_owned()));
        }
        Ok(())
    }

    /// # Errors
    /// A short password, an unknown account, storage failures.
    pub async fn set_password(
        &self,
        account_id: &str,
        password: SecretString,
        now: i64,
    ) -> Result<(), AccountError> {
        let hash = self.hash(password).await?;
        found(
            account_id,
            self.db.set_password_hash(account_id, &hash, now).await?,
        )
    }

    /// # Errors
    /// A malformed address, an unknown account, storage failures.
    pub async fn set_recovery_email(
        &self,
        account_id: &str,
        recovery_email: &str,
        now: i64,
    ) -> Result<(), AccountError> {
        domain::check_email(recovery_email)?;
        found(
            account_id,
            self.db
                .set_recovery_email(account_id, recovery_email, now)
                .await?,
        )
    }

    /// # Errors
    /// An unknown account, storage failures.
    pub async fn set_enabled(
        &self,
        account_id: &str,
        enabled: bool,
        now: i64,
    ) -> Result<(), AccountError> {
        found(
            account_id,
            self.db.set_enabled(account_id, enabled, now).await?,
        )
    }

    async fn hash(&self, password: SecretString) -> Result<String, AccountError> {
        let len = secrecy::ExposeSecret::expose_secret(&password).len();
        if !(8..=1024).contains(&len) {
            return Err(AccountError::WeakPassword);
        }
        let hash = self.hasher.hash_gated(password).await?;
        Ok(hash)
    }
}

fn found(account_id: &str, changed: bool) -> Result<(), AccountError> {
    if changed {
        Ok(())
    } else {
        Err(AccountError::NotFound(account_id.to_owned()))
    }
}
