//! The embedded directory: the `accounts` table, managed with `kagi-reset accounts`.

use std::sync::Arc;

use secrecy::SecretString;

use super::{Directory, DirectoryAccount, DirectoryError, PasswordHasher};
use crate::store::Db;

/// Accounts in the reset service's own database, passwords as argon2id hashes.
#[derive(Debug, Clone)]
pub struct SqlDirectory {
    db: Db,
    hasher: Arc<PasswordHasher>,
}

impl SqlDirectory {
    pub fn new(db: Db, hasher: Arc<PasswordHasher>) -> Self {
        Self { db, hasher }
    }
}

#[tonic::async_trait]
impl Directory for SqlDirectory {
    async fn authenticate(
        &self,
        account_id: &str,
        password: &SecretString,
    ) -> Result<Option<DirectoryAccount>, DirectoryError> {
        let row = self
            .db
            .find_account(account_id)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.into()))?;
        // Unknown and disabled accounts verify the dummy hash: same work, same answer.
        let stored = row
            .as_ref()
            .filter(|r| r.enabled != 0)
            .map(|r| r.password_hash.clone());
        let ok = self
            .hasher
            .verify_gated(password.clone(), stored)
            .await
            .map_err(DirectoryError::Unavailable)?;
        Ok(match (ok, row) {
            (true, Some(row)) => Some(DirectoryAccount {
                account_id: row.account_id,
                recovery_email: row.recovery_email,
            }),
            _ => None,
        })
    }

    async fn lookup(&self, account_id: &str) -> Result<Option<DirectoryAccount>, DirectoryError> {
        let row = self
            .db
            .find_account(account_id)
            .await
            .map_err(|e| DirectoryError::Unavailable(e.into()))?;
        Ok(row.filter(|r| r.enabled != 0).map(|r| DirectoryAccount {
            account_id: r.account_id,
            recovery_email: r.recovery_email,
        }))
    }
}
