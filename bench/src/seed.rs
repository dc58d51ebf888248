//! Seeds a keystore database with many enrolled accounts whose secrets the load generator
//! knows, in bulk (enrolling 100,000 accounts one RPC at a time would measure QR rendering).

use kagi_keystore::crypto::Keyring;
use kagi_keystore::domain::{AccountId, SetupKeySecret};
use kagi_keystore::store::Db;
use zeroize::Zeroizing;

/// One seeded account: its ID and raw secret.
#[derive(Debug, Clone)]
pub struct SeededAccount {
    pub account_id: String,
    pub secret: Vec<u8>,
}

/// Inserts `count` accounts with SHA1/6/30 keys sealed under `keyring`'s active KEK, the
/// same rows `Enroll` writes.
///
/// # Errors
/// Database or crypto failures.
pub async fn seed_accounts(
    db: &Db,
    keyring: &Keyring,
    count: usize,
) -> anyhow::Result<Vec<SeededAccount>> {
    let mut accounts = Vec::with_capacity(count);
    for chunk_start in (0..count).step_by(1000) {
        let mut tx = db.pool().begin().await?;
        for n in chunk_start..(chunk_start + 1000).min(count) {
            let account_id = format!("bench{n:06}");
            let account = AccountId::parse(&account_id)?;
            let secret = SetupKeySecret::generate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let key_id = uuid::Uuid::new_v4().to_string();
            let sealed = keyring.seal(&account, &key_id, &secret)?;
            sqlx::query(
                "INSERT INTO accounts (account_id, current_key_id, key_created_at, algorithm, digits, period, \
                 kek_id, nonce, ciphertext, created_at) VALUES ($1, $2, 0, 'SHA1', 6, 30, $3, $4, $5, 0)",
            )
            .bind(&account_id)
            .bind(&key_id)
            .bind(&sealed.kek_id)
            .bind(&sealed.nonce)
            .bind(&sealed.ciphertext)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO setup_keys (key_id, account_id, created_at, algorithm, digits, period) \
                 VALUES ($1, $2, 0, 'SHA1', 6, 30)",
            )
            .bind(&key_id)
            .bind(&account_id)
            .execute(&mut *tx)
            .await?;
            accounts.push(SeededAccount {
                account_id,
                secret: secret.as_bytes().to_vec(),
            });
        }
        tx.commit().await?;
    }
    Ok(accounts)
}

/// The bare-UPDATE ceiling's table: one row per account with a step counter.
///
/// # Errors
/// Database failures.
pub async fn seed_steps(db: &Db, count: usize) -> anyhow::Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS bench_steps (id TEXT PRIMARY KEY, last_step BIGINT NOT NULL)",
    )
    .execute(db.pool())
    .await?;
    for chunk_start in (0..count).step_by(1000) {
        let mut tx = db.pool().begin().await?;
        for n in chunk_start..(chunk_start + 1000).min(count) {
            sqlx::query("INSERT INTO bench_steps (id, last_step) VALUES ($1, 0)")
                .bind(format!("bench{n:06}"))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// The 6-digit code of `secret` for the step containing `unix_secs`.
pub fn code(secret: &[u8], unix_secs: u64) -> Zeroizing<String> {
    let totp = totp_rs::Builder::new()
        .with_secret(secret.to_vec())
        .build_noncompliant();
    Zeroizing::new(totp.generate(unix_secs).to_string())
}
