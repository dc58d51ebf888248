//! The portal's database: server-side sessions (with their CSRF token and the menu-2 reset
//! in progress, its handle sealed under the session's cookie) and the login rate-limit
//! counters. SQLite or PostgreSQL by URL, through kagi-runtime's `Any` pool; plain SQL
//! shared by both.

use base64::Engine as _;
use kagi_runtime::db::Backend;
use sha2::{Digest as _, Sha256};
use sqlx::AnyPool;

/// The portal's database.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

/// One browser session as loaded. `reset_id` is a bearer secret, unsealed with the cookie
/// it was loaded by (the row holds it sealed): never log this struct's fields (its `Debug`
/// hides them).
#[derive(Clone, sqlx::FromRow)]
pub struct Session {
    pub id_hash: String,
    pub csrf: String,
    pub account_id: Option<String>,
    pub reset_id: Option<String>,
    pub reset_account: Option<String>,
    pub last_seen: i64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("account_id", &self.account_id)
            .field("reset_in_progress", &self.reset_id.is_some())
            .finish_non_exhaustive()
    }
}

/// A random 256-bit value, base64url: session cookies and CSRF tokens.
///
/// # Errors
/// The OS has no randomness.
pub fn random_token() -> anyhow::Result<String> {
    let raw: [u8; 32] = kagi_runtime::random::bytes()?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// What the database keeps instead of the cookie value: a stolen database holds no
/// usable session.
pub fn hash_id(cookie_value: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(cookie_value.as_bytes()))
}

/// Seals a reset's handle under the session's cookie value: the database row holds only
/// `nonce || handle XOR keystream`, the keystream being SHA-256 in counter mode over the
/// cookie value and a fresh nonce. The cookie value lives only in the browser (the row is
/// keyed by its hash), so a copy of the database does not reveal any reset in progress.
/// A changed row unseals to a handle the reset service refuses, never to another reset.
///
/// # Errors
/// The OS has no randomness.
fn seal(cookie: &str, reset_id: &str) -> anyhow::Result<String> {
    let mut nonce = [0_u8; NONCE_LEN];
    rand::TryRng::try_fill_bytes(&mut rand::rngs::SysRng, &mut nonce)
        .map_err(|e| anyhow::anyhow!("OS RNG: {e}"))?;
    let mut sealed = nonce.to_vec();
    sealed.extend(xor_keystream(cookie, &nonce, reset_id.as_bytes()));
    Ok(format!(
        "{SEALED_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sealed)
    ))
}

/// The handle [`seal`] sealed under `cookie`; none for anything else.
fn unseal(cookie: &str, sealed: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(sealed.strip_prefix(SEALED_PREFIX)?)
        .ok()?;
    let (nonce, body) = raw.split_at_checked(NONCE_LEN)?;
    String::from_utf8(xor_keystream(cookie, nonce, body)).ok()
}

const SEALED_PREFIX: &str = "s1.";
const NONCE_LEN: usize = 16;

fn xor_keystream(cookie: &str, nonce: &[u8], data: &[u8]) -> Vec<u8> {
    data.chunks(32)
        .zip(0_u32..)
        .flat_map(|(chunk, counter)| {
            let block = Sha256::new()
                .chain_update(b"kagi-portal reset_id seal\0")
                .chain_update(cookie.as_bytes())
                .chain_update(nonce)
                .chain_update(counter.to_be_bytes())
                .finalize();
            chunk
                .iter()
                .zip(block)
                .map(|(b, k)| b ^ k)
                .collect::<Vec<_>>()
        })
        .collect()
}

const SESSION_COLUMNS: &str = "id_hash, csrf, account_id, reset_id, reset_account, last_seen";

impl Db {
    /// # Errors
    /// A bad URL or an unreachable database.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        let (pool, backend) = kagi_runtime::db::connect(url, max_connections).await?;
        Ok(Self { pool, backend })
    }

    /// Applies the embedded migrations of this backend.
    ///
    /// # Errors
    /// A failed or diverged migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&self.pool).await,
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres")
                    .run(&self.pool)
                    .await
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Creates a session; returns the cookie value (only the browser keeps it).
    ///
    /// # Errors
    /// No randomness, or a database failure.
    #[tracing::instrument(skip_all)]
    pub async fn create_session(
        &self,
        account_id: Option<&str>,
        now: i64,
    ) -> anyhow::Result<(String, Session)> {
        let cookie = random_token()?;
        let session = Session {
            id_hash: hash_id(&cookie),
            csrf: random_token()?,
            account_id: account_id.map(str::to_owned),
            reset_id: None,
            reset_account: None,
            last_seen: now,
        };
        sqlx::query(
            "INSERT INTO sessions (id_hash, csrf, account_id, created_at, last_seen) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&session.id_hash)
        .bind(&session.csrf)
        .bind(session.account_id.clone())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok((cookie, session))
    }

    /// The live session behind a cookie value. A session idle for `idle_ms` or longer is
    /// deleted and reads as none; a live one is touched (at most every `touch_ms`).
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn load_session(
        &self,
        cookie: &str,
        now: i64,
        idle_ms: i64,
    ) -> Result<Option<Session>, sqlx::Error> {
        let id_hash = hash_id(cookie);
        let row: Option<Session> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
        )))
        .bind(&id_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(mut session) = row else {
            return Ok(None);
        };
        session.reset_id = session
            .reset_id
            .as_deref()
            .and_then(|sealed| unseal(cookie, sealed));
        if now >= session.last_seen + idle_ms {
            self.delete_session(&id_hash).await?;
            return Ok(None);
        }
        // Touch sparingly: a page view should not always be a write.
        let touch_ms = (idle_ms / 20).clamp(1, 30_000);
        if now >= session.last_seen + touch_ms {
            sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen < $1")
                .bind(now)
                .bind(&id_hash)
                .execute(&self.pool)
                .await?;
            session.last_seen = now;
        }
        Ok(Some(session))
    }

    /// # Errors
    /// A database failure.
    pub async fn delete_session(&self, id_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Remembers the menu-2 reset the session `id_hash` (whose cookie value is `cookie`)
    /// drives, replacing any earlier one. The handle is stored sealed under `cookie`.
    ///
    /// # Errors
    /// No randomness, or a database failure.
    #[tracing::instrument(skip_all)]
    pub async fn set_reset(
        &self,
        id_hash: &str,
        cookie: &str,
        reset_id: &str,
        account: &str,
    ) -> anyhow::Result<()> {
        sqlx::query("UPDATE sessions SET reset_id = $1, reset_account = $2 WHERE id_hash = $3")
            .bind(seal(cookie, reset_id)?)
            .bind(account.to_owned())
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Forgets the session's menu-2 reset.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn forget_reset(&self, id_hash: &str) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET reset_id = NULL, reset_account = NULL WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Counts one login attempt in `bucket`'s fixed window; returns the attempts so far in
    /// the current window, this one included.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn count_attempt(
        &self,
        bucket: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<i64, sqlx::Error> {
        let (attempts,): (i64,) = sqlx::query_as(
            "INSERT INTO login_attempts (bucket, window_start, attempts) VALUES ($1, $2, 1) \
             ON CONFLICT (bucket) DO UPDATE SET \
             attempts = CASE WHEN login_attempts.window_start <= $3 THEN 1 ELSE login_attempts.attempts + 1 END, \
             window_start = CASE WHEN login_attempts.window_start <= $3 THEN $2 ELSE login_attempts.window_start END \
             RETURNING attempts",
        )
        .bind(bucket)
        .bind(now)
        .bind(now - window_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(attempts)
    }

    /// Deletes idle sessions and spent rate-limit windows.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge(&self, now: i64, idle_ms: i64, window_ms: i64) -> Result<u64, sqlx::Error> {
        let sessions = sqlx::query("DELETE FROM sessions WHERE last_seen <= $1")
            .bind(now - idle_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM login_attempts WHERE window_start <= $1")
            .bind(now - window_ms)
            .execute(&self.pool)
            .await?;
        Ok(sessions)
    }
}
