//! Web plumbing shared by the pages: rendering, redirects, cookies, sessions, CSRF.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use subtle::ConstantTimeEq as _;

use super::context::session_cookie_name;
use super::templates::{Chrome, MessagePage};
use super::texts::Texts;
use super::{AppState, Ctx};
use crate::domain::{Lang, UserMessage};
use crate::store::Session;

/// A failure no page can explain: logged with its cause, shown as a generic error.
#[derive(Debug)]
pub struct PageError(anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for PageError {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        tracing::error!(error = format!("{:#}", self.0), "page failed");
        let body = "<!doctype html><html lang=\"ja\"><head><meta charset=\"utf-8\"><title>エラー / Error</title>\
                    <link rel=\"stylesheet\" href=\"/static/portal.css\"></head><body><main><h1>エラー / Error</h1>\
                    <p>システムエラーが発生しました。しばらく時間をおいてからやり直してください。</p>\
                    <p>A system error occurred. Please try again later.</p><p><a href=\"/\">メニューに戻る / Menu</a></p></main></body></html>";
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::response::Html(body),
        )
            .into_response()
    }
}

pub type PageResult = Result<Response, PageError>;

/// Renders `page` with `status`.
///
/// # Errors
/// A template failure.
pub fn render(status: StatusCode, page: &impl askama::Template) -> PageResult {
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

/// 303 See Other: after a POST, the browser GETs `location`.
pub fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

/// Adds a `Set-Cookie` to `response` when there is one.
pub fn with_cookie(mut response: Response, cookie: Option<HeaderValue>) -> Response {
    if let Some(cookie) = cookie {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// `value` percent-encoded for a query string (a local path as the `next` parameter).
pub fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Only local paths are followed after login or a language switch (no open redirect).
pub fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && next.len() <= 200
        && next.bytes().all(|b| b.is_ascii_graphic());
    if ok { next } else { "/" }
}

impl AppState {
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    fn idle_ms(&self) -> i64 {
        i64::try_from(self.settings.session.idle_timeout_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX)
    }

    fn max_age_ms(&self) -> i64 {
        i64::try_from(
            self.settings
                .session
                .absolute_timeout_secs
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX)
    }

    /// The request's live session, if any.
    ///
    /// # Errors
    /// A database failure.
    pub async fn session(&self, ctx: &Ctx) -> Result<Option<Session>, PageError> {
        let Some(cookie) = &ctx.session_cookie else {
            return Ok(None);
        };
        Ok(self
            .db
            .load_session(cookie, self.now(), self.idle_ms(), self.max_age_ms())
            .await?)
    }

    /// The request's session, created (with a `Set-Cookie`) when there is none: pages with
    /// a form need one for its CSRF token.
    ///
    /// # Errors
    /// A database failure.
    pub async fn ensure_session(
        &self,
        ctx: &Ctx,
    ) -> Result<(Session, Option<HeaderValue>), PageError> {
        if let Some(session) = self.session(ctx).await? {
            return Ok((session, None));
        }
        let (cookie, session) = self.db.create_session(None, self.now()).await?;
        Ok((session, Some(self.session_cookie(&cookie)?)))
    }

    /// Logs `account` in: a fresh session (a new cookie value, so a planted one is useless),
    /// the old one deleted.
    ///
    /// # Errors
    /// A database failure.
    pub async fn log_in(
        &self,
        old: Option<&Session>,
        account: &str,
    ) -> Result<HeaderValue, PageError> {
        let (cookie, _) = self.fresh_session(old, Some(account)).await?;
        tracing::info!(account_id = account, "logged in");
        self.session_cookie(&cookie)
    }

    /// A new session (a new cookie value) for `account`, the `old` one deleted: whatever
    /// session ID arrived, perhaps planted by someone else, is worth nothing afterwards.
    /// Returns the new cookie value and session.
    ///
    /// # Errors
    /// No randomness, or a database failure.
    pub async fn fresh_session(
        &self,
        old: Option<&Session>,
        account: Option<&str>,
    ) -> Result<(String, Session), PageError> {
        if let Some(old) = old {
            self.db.delete_session(&old.id_hash).await?;
        }
        Ok(self.db.create_session(account, self.now()).await?)
    }

    /// `Set-Cookie` for the session: HttpOnly, SameSite=Strict, Secure behind https.
    ///
    /// # Errors
    /// Never for the cookie values this crate makes.
    pub fn session_cookie(&self, value: &str) -> Result<HeaderValue, PageError> {
        let secure = if self.settings.server.secure_cookies() {
            "; Secure"
        } else {
            ""
        };
        Ok(HeaderValue::from_str(&format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Strict{secure}",
            session_cookie_name(&self.settings)
        ))?)
    }

    /// `Set-Cookie` that removes the session cookie.
    ///
    /// # Errors
    /// Never for a valid cookie name.
    pub fn expired_session_cookie(&self) -> Result<HeaderValue, PageError> {
        let secure = if self.settings.server.secure_cookies() {
            "; Secure"
        } else {
            ""
        };
        Ok(HeaderValue::from_str(&format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            session_cookie_name(&self.settings)
        ))?)
    }

    /// A time as the user's clock shows it: the institution's time zone, named ("14:05 JST"),
    /// so nobody abroad or on a mis-set phone misreads it.
    pub fn local_time(&self, unix_ms: i64) -> String {
        let zone: chrono_tz::Tz = self
            .settings
            .institution
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::Asia::Tokyo);
        chrono::DateTime::from_timestamp_millis(unix_ms)
            .map(|t| t.with_timezone(&zone).format("%H:%M %Z").to_string())
            .unwrap_or_default()
    }

    /// A date and time in the institution's zone, named ("2026-11-26 14:05 JST").
    pub fn local_time_full(&self, unix_ms: i64) -> String {
        let zone: chrono_tz::Tz = self
            .settings
            .institution
            .time_zone
            .parse()
            .unwrap_or(chrono_tz::Asia::Tokyo);
        chrono::DateTime::from_timestamp_millis(unix_ms)
            .map(|t| {
                t.with_timezone(&zone)
                    .format("%Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_default()
    }

    /// What a limit's refusal says: when the user may try again, when the limit said so.
    pub fn limited(&self, ctx: &Ctx, message: UserMessage, until: Option<i64>) -> String {
        match until {
            Some(at) => message.text_until(ctx.lang, &self.local_time(at)),
            None => message.text(ctx.lang),
        }
    }

    /// The frame of every page.
    pub fn chrome(&self, ctx: &Ctx, session: Option<&Session>) -> Chrome {
        let inst = &self.settings.institution;
        let pick = |l: &kagi_runtime::Localized| l.get(ctx.lang.code()).to_owned();
        let other = ctx.lang.other();
        let (name, system) = (pick(&inst.name), pick(&inst.system_name));
        let welcome = match ctx.lang {
            Lang::Ja => format!("{name} {system}へようこそ！"),
            Lang::En => format!("Welcome to the {system} of {name}!"),
        };
        Chrome {
            t: Texts::of(ctx.lang),
            lang: ctx.lang.code(),
            lang_href: format!("/lang?to={}&next={}", other.code(), local_path(&ctx.path)),
            other_lang_code: other.code(),
            inst_name: name,
            system_name: system,
            welcome,
            id_label: pick(&inst.account_id_label),
            footer: format!("© {}", pick(&inst.department)),
            trouble_url: inst.helpdesk_url.clone(),
            manual_url: inst.manual_url.clone(),
            onboarding_url: inst.onboarding_url.clone(),
            account: session.and_then(|s| s.account_id.clone()),
            csrf: session.map(|s| s.csrf.clone()).unwrap_or_default(),
            outbox: self.dev_outbox.is_some(),
            phone: ["iPhone", "iPad", "Android", "Mobile"]
                .iter()
                .any(|m| ctx.user_agent.contains(m)),
        }
    }

    /// A page with one message.
    ///
    /// # Errors
    /// A template failure.
    pub fn message_page(
        &self,
        ctx: &Ctx,
        session: Option<&Session>,
        status: StatusCode,
        message: UserMessage,
        restart: bool,
    ) -> PageResult {
        self.text_page(ctx, session, status, message.text(ctx.lang), restart)
    }

    /// A page with one message already worded (a refusal kept across a redirect).
    ///
    /// # Errors
    /// A template failure.
    pub fn text_page(
        &self,
        ctx: &Ctx,
        session: Option<&Session>,
        status: StatusCode,
        message: String,
        restart: bool,
    ) -> PageResult {
        let c = self.chrome(ctx, session);
        let heading = c.t.error_title;
        render(
            status,
            &MessagePage {
                c,
                heading,
                message,
                restart,
            },
        )
    }

    /// POST/redirect/GET for a refused form: keeps `message` (and the account ID typed) for
    /// the session's next page and answers 303 to `to`, so reload and Back never repeat
    /// the action.
    ///
    /// # Errors
    /// A database failure.
    pub async fn refuse_to(
        &self,
        session: &Session,
        to: &str,
        message: String,
        input: Option<&str>,
    ) -> PageResult {
        self.db.set_flash(&session.id_hash, &message, input).await?;
        Ok(see_other(to))
    }

    /// The refusal [`AppState::refuse_to`] kept for this page view, if any.
    ///
    /// # Errors
    /// A database failure.
    pub async fn flash(&self, session: &Session) -> Result<Option<String>, PageError> {
        Ok(self.db.take_flash(session).await?.map(|(m, _)| m))
    }

    /// The session a POST belongs to, if its form carried that session's CSRF token;
    /// otherwise the response refusing it (403).
    ///
    /// # Errors
    /// A database failure.
    pub async fn check_csrf(
        &self,
        ctx: &Ctx,
        token: &str,
    ) -> Result<Result<Session, Response>, PageError> {
        let session = self.session(ctx).await?;
        if let Some(session) = session
            && !token.is_empty()
            && bool::from(session.csrf.as_bytes().ct_eq(token.as_bytes()))
        {
            return Ok(Ok(session));
        }
        tracing::warn!(path = %ctx.path, "POST without a valid CSRF token refused");
        let refused = self.message_page(
            ctx,
            None,
            StatusCode::FORBIDDEN,
            UserMessage::FormExpired,
            false,
        )?;
        Ok(Err(refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/key"), "/key");
        assert_eq!(local_path("//evil.example/"), "/");
        assert_eq!(local_path("https://evil.example/"), "/");
        assert_eq!(local_path("/\\evil.example"), "/");
        assert_eq!(local_path(""), "/");
    }
}
