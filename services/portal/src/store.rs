//! The portal's database: server-side sessions (with their CSRF token and the menu-2 reset
//! in progress, its handle sealed with AES-256-GCM under a key from the session's cookie,
//! see `domain::sealed_handle`) and the login rate-limit
//! counters. SQLite or PostgreSQL by URL, through kagi-runtime's `Any` pool; plain SQL
//! shared by both.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use crate::domain::sealed_handle;

kagi_runtime::service_database! {
    /// The portal's database: sessions and login rate-limit windows.
    pub struct Db(PortalSchema, embedded = "sqlite://data/portal.db?mode=rwc", postgres_schema = "portal");
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
    /// When the session began (its login, for a logged-in one): its absolute lifetime
    /// counts from here.
    pub created_at: i64,
    pub last_seen: i64,
    /// Whether a message was kept for the next page ([`Db::set_flash`]) when the session
    /// was loaded: 1 or 0. Read with the session, so a page view without one does not ask
    /// the database again only to find nothing.
    pub flash_pending: i32,
}

impl Session {
    /// When the account logged in: a logged-in session is only ever created by its login
    /// (and a renewed cookie keeps the start), so that is when the session began.
    pub fn logged_in_at(&self) -> Option<i64> {
        self.account_id.as_ref().map(|_| self.created_at)
    }
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

const SESSION_COLUMNS: &str = "id_hash, csrf, account_id, reset_id, reset_account, created_at, \
     last_seen, CASE WHEN flash IS NULL THEN 0 ELSE 1 END AS flash_pending";

impl Db {
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
            created_at: now,
            last_seen: now,
            flash_pending: 0,
        };
        sqlx::query(
            "INSERT INTO sessions (id_hash, csrf, account_id, created_at, last_seen) VALUES ($1, $2, $3, $4, $4)",
        )
        .bind(&session.id_hash)
        .bind(&session.csrf)
        .bind(session.account_id.clone())
        .bind(now)
        .execute(self.pool())
        .await?;
        Ok((cookie, session))
    }

    /// The live session behind a cookie value. A session idle for `idle_ms` or longer, or
    /// begun `max_age_ms` or longer ago, is deleted and reads as none; a live one is
    /// touched (at most every `touch_ms`).
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn load_session(
        &self,
        cookie: &str,
        now: i64,
        idle_ms: i64,
        max_age_ms: i64,
    ) -> Result<Option<Session>, sqlx::Error> {
        let id_hash = hash_id(cookie);
        let row: Option<Session> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = $1"
        )))
        .bind(&id_hash)
        .fetch_optional(self.pool())
        .await?;
        let Some(mut session) = row else {
            return Ok(None);
        };
        session.reset_id = session
            .reset_id
            .as_deref()
            .and_then(|sealed| sealed_handle::open(cookie, &id_hash, sealed));
        let idle = now >= session.last_seen.saturating_add(idle_ms);
        let too_old = now >= session.created_at.saturating_add(max_age_ms);
        if idle || too_old {
            self.delete_session(&id_hash).await?;
            return Ok(None);
        }
        // Touch sparingly: a page view should not always be a write.
        let touch_ms = (idle_ms / 20).clamp(1, 30_000);
        if now >= session.last_seen + touch_ms {
            sqlx::query("UPDATE sessions SET last_seen = $1 WHERE id_hash = $2 AND last_seen < $1")
                .bind(now)
                .bind(&id_hash)
                .execute(self.pool())
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
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Replaces `old` by a session with a new cookie value (returned) that keeps its
    /// account and its start, so renewing the cookie never extends the absolute lifetime.
    ///
    /// # Errors
    /// No randomness, or a database failure.
    #[tracing::instrument(skip_all)]
    pub async fn renew_session(
        &self,
        old: &Session,
        now: i64,
    ) -> anyhow::Result<(String, Session)> {
        let cookie = random_token()?;
        let session = Session {
            id_hash: hash_id(&cookie),
            csrf: random_token()?,
            account_id: old.account_id.clone(),
            reset_id: None,
            reset_account: None,
            created_at: old.created_at,
            last_seen: now,
            flash_pending: 0,
        };
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO sessions (id_hash, csrf, account_id, created_at, last_seen) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&session.id_hash)
        .bind(&session.csrf)
        .bind(session.account_id.clone())
        .bind(session.created_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(&old.id_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((cookie, session))
    }

    /// Remembers the menu-2 reset the session `id_hash` (whose cookie value is `cookie`)
    /// drives, replacing any earlier one. The handle is stored sealed under a key derived
    /// from `cookie`, bound to the row `id_hash`.
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
        let nonce = kagi_runtime::random::bytes::<{ sealed_handle::NONCE_LEN }>()?;
        let sealed = sealed_handle::seal(cookie, id_hash, reset_id, nonce)?;
        sqlx::query("UPDATE sessions SET reset_id = $1, reset_account = $2 WHERE id_hash = $3")
            .bind(sealed)
            .bind(account.to_owned())
            .bind(id_hash)
            .execute(self.pool())
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
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Lets the session `id_hash` check `account`'s authenticator until `until` (Unix ms):
    /// set when 「4. リセット完了」 showed that account's new key to this session.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn allow_check(
        &self,
        id_hash: &str,
        account: &str,
        until: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET check_account = $1, check_until = $2 WHERE id_hash = $3")
            .bind(account)
            .bind(until)
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The account [`Db::allow_check`] let this session check, while `now` is before its
    /// end.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn check_allowed(
        &self,
        id_hash: &str,
        now: i64,
    ) -> Result<Option<String>, sqlx::Error> {
        let row: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT check_account FROM sessions WHERE id_hash = $1 AND check_until > $2",
        )
        .bind(id_hash)
        .bind(now)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.and_then(|(account,)| account))
    }

    /// Keeps what a refused form said (and the account ID it carried) for the next page
    /// view of this session: the POST answers with a redirect, the GET shows this once.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn set_flash(
        &self,
        id_hash: &str,
        message: &str,
        input: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        sqlx::query("UPDATE sessions SET flash = $1, flash_input = $2 WHERE id_hash = $3")
            .bind(message)
            .bind(input)
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The message (and account ID) [`Db::set_flash`] kept, removed as it is read. Asks the
    /// database only when the session had one as it was loaded (the request before this one
    /// kept it, then redirected here).
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn take_flash(
        &self,
        session: &Session,
    ) -> Result<Option<(String, Option<String>)>, sqlx::Error> {
        if session.flash_pending == 0 {
            return Ok(None);
        }
        let id_hash = &session.id_hash;
        let row: Option<(Option<String>, Option<String>)> =
            sqlx::query_as("SELECT flash, flash_input FROM sessions WHERE id_hash = $1")
                .bind(id_hash)
                .fetch_optional(self.pool())
                .await?;
        let Some((Some(message), input)) = row else {
            return Ok(None);
        };
        sqlx::query("UPDATE sessions SET flash = NULL, flash_input = NULL WHERE id_hash = $1")
            .bind(id_hash)
            .execute(self.pool())
            .await?;
        Ok(Some((message, input)))
    }

    /// The failed logins counted in `bucket`'s current window and when that window ends
    /// (Unix ms); `None` when nothing is counted. Reads only: a refused login is not one
    /// more failure, so hammering a locked door does not keep it locked longer.
    ///
    /// # Errors
    /// A database failure.
    #[tracing::instrument(skip_all)]
    pub async fn attempts(
        &self,
        bucket: &str,
        now: i64,
        window_ms: i64,
    ) -> Result<Option<(i64, i64)>, sqlx::Error> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT attempts, window_start FROM login_attempts WHERE bucket = $1 AND window_start > $2",
        )
        .bind(bucket)
        .bind(now - window_ms)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(|(n, start)| (n, start.saturating_add(window_ms))))
    }

    /// Counts one failed login in `bucket`'s fixed window; returns the failures so far in
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
        .fetch_one(self.pool())
        .await?;
        Ok(attempts)
    }

    /// Deletes idle and too old sessions and spent rate-limit windows.
    ///
    /// # Errors
    /// A database failure.
    pub async fn purge(
        &self,
        now: i64,
        idle_ms: i64,
        max_age_ms: i64,
        window_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let sessions =
            sqlx::query("DELETE FROM sessions WHERE last_seen <= $1 OR created_at <= $2")
                .bind(now.saturating_sub(idle_ms))
                .bind(now.saturating_sub(max_age_ms))
                .execute(self.pool())
                .await?
                .rows_affected();
        sqlx::query("DELETE FROM login_attempts WHERE window_start <= $1")
            .bind(now - window_ms)
            .execute(self.pool())
            .await?;
        Ok(sessions)
    }
}
