//! The top page, menu 1 (the current key), menu 3 (Apple autofill), login and logout, the
//! language switch and the dev outbox.

use axum::Form;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use http::{StatusCode, header};
use serde::Deserialize;

use super::login_otp::OtpTexts;
use super::response::{PageResult, local_path, query_value, render, see_other, with_cookie};
use super::templates::{
    ApplePage, ContinuePage, KeyPage, LoginFormPage, LoginPromptPage, OutboxMail, OutboxPage,
    TopPage,
};
use super::texts::Texts;
use super::{AppState, Ctx};
use crate::config::LoginMode;
use crate::domain::{ShownKey, UserMessage};
use crate::store::Session;
use kagi_proto::v1 as pb;

pub async fn top(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let session = state.session(&ctx).await?;
    let page = TopPage {
        c: state.chrome(&ctx, session.as_ref()),
        autofill: ctx.autofill().is_available(),
    };
    render(StatusCode::OK, &page)
}

/// Menu 1, "現在のセットアップキーを表示する".
pub async fn current_key(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let session = state.session(&ctx).await?;
    let account = match state.key_viewer(session.as_ref()) {
        Ok(account) => account,
        Err(reason) => return login_prompt(&state, &ctx, session.as_ref(), "/key", reason),
    };
    match fetch_key(&state, &ctx, &account, pb::KeyForm::QrPng).await {
        Ok(key) => render(
            StatusCode::OK,
            &KeyPage {
                c: state.chrome(&ctx, session.as_ref()),
                key,
            },
        ),
        Err(message) => state.message_page(
            &ctx,
            session.as_ref(),
            key_refused_status(message),
            message,
            false,
        ),
    }
}

/// Menu 3, "[Apple端末向け] ワンタイムパスワードの自動入力を設定する".
pub async fn apple(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let session = state.session(&ctx).await?;
    if !ctx.autofill().is_available() {
        let page = ApplePage {
            c: state.chrome(&ctx, session.as_ref()),
            key: None,
        };
        return render(StatusCode::OK, &page);
    }
    let account = match state.key_viewer(session.as_ref()) {
        Ok(account) => account,
        Err(reason) => return login_prompt(&state, &ctx, session.as_ref(), "/apple", reason),
    };
    match fetch_key(&state, &ctx, &account, pb::KeyForm::Text).await {
        Ok(key) => render(
            StatusCode::OK,
            &ApplePage {
                c: state.chrome(&ctx, session.as_ref()),
                key: Some(key),
            },
        ),
        Err(message) => state.message_page(
            &ctx,
            session.as_ref(),
            key_refused_status(message),
            message,
            false,
        ),
    }
}

/// A key not shown: the notices' allowance is used up (429), or a service is down (503).
fn key_refused_status(message: UserMessage) -> StatusCode {
    if message == UserMessage::MailRateLimited {
        StatusCode::TOO_MANY_REQUESTS
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The account's current key from the keystore (which audits the view), with the user
/// told by mail that it was displayed; or what to tell the user instead. No notice queued,
/// no key shown: a password thief cannot copy the key silently. `form`: what the page
/// shows besides the text (menu 1 its QR code as PNG, menu 3 only the otpauth link), so the
/// keystore draws no image nobody sees.
#[tracing::instrument(skip_all)]
pub(super) async fn fetch_key(
    state: &AppState,
    ctx: &Ctx,
    account: &str,
    form: pb::KeyForm,
) -> Result<ShownKey, UserMessage> {
    let key = current_key_of(state, account, form).await?;
    state.notify_key_displayed(ctx, account).await?;
    Ok(key)
}

async fn current_key_of(
    state: &AppState,
    account: &str,
    form: pb::KeyForm,
) -> Result<ShownKey, UserMessage> {
    let request = pb::GetCurrentKeyRequest {
        account_id: account.to_owned(),
        forms: vec![form.into()],
    };
    match state
        .clients
        .keystore
        .clone()
        .get_current_key(request)
        .await
    {
        Ok(reply) => reply
            .into_inner()
            .key
            .map(|k| shown(&k))
            .ok_or(UserMessage::Internal),
        Err(status) => match UserMessage::from_reset_status(&status) {
            UserMessage::NoSetupKey => Err(UserMessage::NoSetupKey),
            _ => {
                tracing::warn!(code = ?status.code(), "keystore GetCurrentKey failed");
                Err(UserMessage::Unavailable)
            }
        },
    }
}

pub fn shown(key: &pb::SetupKey) -> ShownKey {
    ShownKey::new(
        &key.account_id,
        &key.secret_base32,
        &key.otpauth_uri,
        &key.qr_png,
        key.digits,
        key.period_seconds,
    )
}

impl AppState {
    /// Asks the reset service to mail the account "your setup key was displayed" (once per
    /// display: a fresh view ID each time). `Ok` also when the operator switched the
    /// notice off there.
    async fn notify_key_displayed(&self, ctx: &Ctx, account: &str) -> Result<(), UserMessage> {
        let view_id = crate::store::random_token().map_err(|_| UserMessage::Internal)?;
        let request = pb::NotifyKeyDisplayedRequest {
            account_id: account.to_owned(),
            view_id,
            displayed_at: Some(kagi_proto::timestamp(self.now())),
            client_ip: ctx.client_ip.to_string(),
            user_agent: ctx.user_agent.chars().take(256).collect(),
            locale: ctx.lang.code().to_owned(),
        };
        match self
            .clients
            .reset
            .clone()
            .notify_key_displayed(request)
            .await
        {
            Ok(_) => Ok(()),
            Err(status) => {
                let message = UserMessage::from_reset_status(&status);
                tracing::warn!(code = ?status.code(), "key-displayed notice not queued; key not shown");
                Err(match message {
                    UserMessage::MailRateLimited => message,
                    _ => UserMessage::Unavailable,
                })
            }
        }
    }

    /// The account whose setup key this session may see: logged in, no longer ago than
    /// `session.key_view_max_age_secs` (step-up). Otherwise what to say on the login
    /// prompt: nothing (not logged in) or why to log in again.
    pub(super) fn key_viewer(
        &self,
        session: Option<&Session>,
    ) -> Result<String, Option<UserMessage>> {
        let Some((account, logged_in_at)) =
            session.and_then(|s| s.account_id.clone().zip(s.logged_in_at()))
        else {
            return Err(None);
        };
        let max_age = i64::try_from(
            self.settings
                .session
                .key_view_max_age_secs
                .saturating_mul(1000),
        )
        .unwrap_or(i64::MAX);
        if self.now() > logged_in_at.saturating_add(max_age) {
            tracing::info!(account_id = %account, "login too old to show the setup key: step-up");
            return Err(Some(UserMessage::LoginAgainToShowKey));
        }
        Ok(account)
    }
}

/// The manual's "ログインしていない場合はログインボタンが表示されます"; with a `reason` when
/// a logged-in user must log in again first (step-up). The login comes back to `next`.
fn login_prompt(
    state: &AppState,
    ctx: &Ctx,
    session: Option<&Session>,
    next: &'static str,
    reason: Option<UserMessage>,
) -> PageResult {
    let c = state.chrome(ctx, session);
    let heading = if next == "/apple" {
        c.t.a_title
    } else {
        c.t.menu1_title
    };
    let reason = reason.map(|r| r.text(ctx.lang));
    render(
        StatusCode::OK,
        &LoginPromptPage {
            c,
            heading,
            next,
            reason,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct NextQuery {
    #[serde(default)]
    next: String,
}

/// GET /login: in trusted-header mode the SSO proxy has authenticated this request; in
/// local mode, the ID + password form.
pub async fn login_page(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<NextQuery>,
) -> PageResult {
    let next = local_path(&q.next).to_owned();
    if state.settings.login.mode == LoginMode::TrustedHeader {
        let session = state.session(&ctx).await?;
        let Some(account) = ctx.vouched_account.clone() else {
            tracing::warn!(client_ip = %ctx.client_ip, "login without a trusted identity header");
            let c = state.chrome(&ctx, session.as_ref());
            let (heading, text) = (c.t.login_title, c.t.login_sso_failed.to_owned());
            let page = ContinuePage {
                c,
                heading,
                text,
                next: "/".into(),
                refresh: false,
            };
            return render(StatusCode::UNAUTHORIZED, &page);
        };
        if !state.settings.login.authn_context_header.is_empty() && !ctx.vouched_otp {
            // The SSO logged the user in without saying it asked for the one-time
            // password: no session, so the setup key stays out of reach.
            tracing::warn!(account_id = %account, client_ip = %ctx.client_ip, "SSO login without the one-time-password step refused");
            let c = state.chrome(&ctx, session.as_ref());
            let heading = c.t.login_title;
            let page = ContinuePage {
                c,
                heading,
                text: OtpTexts::of(ctx.lang).sso_without_otp.to_owned(),
                next: "/".into(),
                refresh: false,
            };
            return render(StatusCode::FORBIDDEN, &page);
        }
        let cookie = state.log_in(session.as_ref(), &account).await?;
        // The SSO's redirect back here is a cross-site navigation; a redirect from here
        // would be too, and a SameSite=Strict cookie would not go along. A page that moves
        // on by itself is a same-site navigation.
        let c = state.chrome(&ctx, None);
        let heading = c.t.login_title;
        let page = ContinuePage {
            c,
            heading,
            text: account,
            next,
            refresh: true,
        };
        return Ok(with_cookie(render(StatusCode::OK, &page)?, Some(cookie)));
    }
    let (session, cookie) = state.ensure_session(&ctx).await?;
    // When the keystore cannot say, the field is shown: the POST will need it anyway.
    let otp_required = state.otp_required(ctx.client_ip).await.unwrap_or(true);
    let (message, account_id) = match state.db.take_flash(&session).await? {
        Some((message, input)) => (Some(message), input.unwrap_or_default()),
        None => (None, String::new()),
    };
    let page = LoginFormPage {
        c: state.chrome(&ctx, Some(&session)),
        next,
        account_id,
        message,
        otp: otp_required.then(|| OtpTexts::of(ctx.lang)),
    };
    Ok(with_cookie(render(StatusCode::OK, &page)?, cookie))
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account_id: String,
    #[serde(default)]
    password: String,
    /// Only asked for (and only looked at) when the address needs it.
    #[serde(default)]
    one_time_password: String,
    #[serde(default)]
    next: String,
}

/// POST /login (local mode): rate-limited, then the password checked by
/// `kagi.v1.Directory` and, when the keystore's policy asks for it at this address, the
/// one-time password by the keystore; only then a (fresh) session.
pub async fn login_submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    let next = local_path(&form.next).to_owned();
    let account = form.account_id.trim().to_owned();
    // POST/redirect/GET: the refusal is kept for the login page the browser comes back to,
    // so a reload shows it again instead of sending the password again.
    let fail = async |message: String| -> PageResult {
        state
            .db
            .set_flash(&session.id_hash, &message, Some(&account))
            .await?;
        Ok(see_other(&format!("/login?next={}", query_value(&next))))
    };
    if state.settings.login.mode != LoginMode::Local {
        return fail(UserMessage::InvalidInput.text(ctx.lang)).await;
    }
    // Asked again on every POST: the form's field proves nothing about the address.
    let otp_required = state.otp_required(ctx.client_ip).await;
    // A login that needs the code never tells which of password and code was wrong.
    let bad_credentials = if otp_required == Ok(true) {
        UserMessage::BadCredentialsOrOtp
    } else {
        UserMessage::BadCredentials
    };
    if account.is_empty() || form.password.is_empty() {
        return fail(bad_credentials.text(ctx.lang)).await;
    }
    // An ID no account can have gets the wrong-password answer; it still counts against the
    // client's address, but never becomes a limiter bucket of its own (unbounded strings).
    let account_id = kagi_runtime::AccountId::parse(&account).ok();
    if let Some(until) = state.login_locked(&ctx, account_id.as_ref()).await? {
        tracing::warn!(client_ip = %ctx.client_ip, "login rate limit reached");
        return fail(state.limited(&ctx, UserMessage::TooManyLogins, Some(until))).await;
    }
    if account_id.is_none() {
        state.count_login_failure(&ctx, None).await?;
        return fail(bad_credentials.text(ctx.lang)).await;
    }
    let otp_required = match otp_required {
        Ok(required) => required,
        Err(message) => return fail(message.text(ctx.lang)).await,
    };
    // No code, or no code at all in form (empty, letters, too short): refused before the
    // password is checked, so it spends none of the directory's password attempts (it
    // still counts as a failed login here).
    let otp = if otp_required {
        match super::login_otp::normalized(&form.one_time_password) {
            Some(code) => Some(code),
            None => {
                state.count_login_failure(&ctx, account_id.as_ref()).await?;
                return fail(bad_credentials.text(ctx.lang)).await;
            }
        }
    } else {
        None
    };
    let request = pb::AuthenticateRequest {
        account_id: account.clone(),
        password: form.password,
        client_ip: ctx.client_ip.to_string(),
    };
    match state.clients.directory.clone().authenticate(request).await {
        Ok(_) => {
            // The code is checked only after the password: whoever lacks the password
            // cannot spend the user's keystore attempts (and lock them out).
            if let Some(otp) = otp
                && let Err(message) = state.check_otp(&account, otp).await
            {
                if message == UserMessage::BadCredentialsOrOtp {
                    state.count_login_failure(&ctx, account_id.as_ref()).await?;
                }
                return fail(message.text(ctx.lang)).await;
            }
            let cookie = state.log_in(Some(&session), &account).await?;
            Ok(with_cookie(see_other(&next), Some(cookie)))
        }
        Err(status) => {
            let message = match UserMessage::from_reset_status(&status) {
                UserMessage::BadCredentials | UserMessage::InvalidInput => {
                    state.count_login_failure(&ctx, account_id.as_ref()).await?;
                    bad_credentials
                }
                UserMessage::TooManyAttempts => {
                    let until = kagi_proto::retry_at(&status);
                    return fail(state.limited(&ctx, UserMessage::TooManyLogins, until)).await;
                }
                _ => {
                    tracing::warn!(code = ?status.code(), "directory Authenticate failed");
                    UserMessage::Unavailable
                }
            };
            fail(message.text(ctx.lang)).await
        }
    }
}

/// The login limiter's bucket of an account ID (IDs are case-insensitive here).
fn account_bucket(account: &kagi_runtime::AccountId) -> String {
    format!("account:{}", account.as_str().to_ascii_lowercase())
}

impl AppState {
    /// Until when (Unix ms) logins from this client address, or for this account ID, are
    /// refused: once either has `per_ip_max` / `per_account_max` failures in the current
    /// window. Successful logins are never counted, so the right password is not locked
    /// out by the user's own earlier logins.
    async fn login_locked(
        &self,
        ctx: &Ctx,
        account: Option<&kagi_runtime::AccountId>,
    ) -> Result<Option<i64>, super::PageError> {
        let login = &self.settings.login;
        let window = i64::try_from(login.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = self.now();
        let mut until = None;
        let by_ip = self
            .db
            .attempts(&format!("ip:{}", ctx.client_ip), now, window)
            .await?;
        if let Some((n, end)) = by_ip
            && n >= i64::from(login.per_ip_max)
        {
            until = Some(end);
        }
        if let Some(account) = account
            && let Some((n, end)) = self
                .db
                .attempts(&account_bucket(account), now, window)
                .await?
            && n >= i64::from(login.per_account_max)
        {
            until = Some(until.map_or(end, |u: i64| u.max(end)));
        }
        Ok(until)
    }

    /// Counts a failed login against the client's address and the account ID (when it is
    /// one).
    async fn count_login_failure(
        &self,
        ctx: &Ctx,
        account: Option<&kagi_runtime::AccountId>,
    ) -> Result<(), super::PageError> {
        let window =
            i64::try_from(self.settings.login.window_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let now = self.now();
        self.db
            .count_attempt(&format!("ip:{}", ctx.client_ip), now, window)
            .await?;
        if let Some(account) = account {
            self.db
                .count_attempt(&account_bucket(account), now, window)
                .await?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// What a shared computer's browser must forget at logout: every cached page (a setup
/// key among them, the back/forward cache included), the cookies and any storage.
pub const CLEAR_SITE_DATA: &str = "\"cache\", \"cookies\", \"storage\"";

/// POST /logout: ends the session (FAQ 2: switching between several IDs), tells the
/// browser to forget the site (`Clear-Site-Data`) and answers 303 to the GET page saying
/// 「ログアウトしました」 (in the language the user was reading).
pub async fn logout(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    state.db.delete_session(&session.id_hash).await?;
    tracing::info!("logged out");
    let mut response = with_cookie(
        see_other(&format!("/logout?lang={}", ctx.lang.code())),
        Some(state.expired_session_cookie()?),
    );
    response.headers_mut().insert(
        http::HeaderName::from_static("clear-site-data"),
        http::HeaderValue::from_static(CLEAR_SITE_DATA),
    );
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LoggedOutQuery {
    #[serde(default)]
    lang: String,
}

/// GET /logout: 「ログアウトしました」, and where to go on (the SSO's logout page, or the
/// top). The language comes along in the query: the logout cleared the cookie holding it,
/// so it is set again here.
pub async fn logged_out(
    State(state): State<AppState>,
    mut ctx: Ctx,
    Query(q): Query<LoggedOutQuery>,
) -> PageResult {
    if !q.lang.is_empty() {
        ctx.lang = crate::domain::Lang::from_code(&q.lang);
    }
    let c = state.chrome(&ctx, None);
    let logout_url = state.settings.login.logout_url.clone();
    let heading = c.t.logged_out;
    let text = c.t.multi_id.to_owned();
    let next = if logout_url.is_empty() {
        "/".to_owned()
    } else {
        logout_url
    };
    let page = ContinuePage {
        c,
        heading,
        text,
        next,
        refresh: false,
    };
    let mut response = render(StatusCode::OK, &page)?;
    if let Ok(cookie) = lang_cookie(ctx.lang).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

/// The cookie remembering the language for a year.
fn lang_cookie(lang: crate::domain::Lang) -> String {
    format!(
        "lang={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.code()
    )
}

#[derive(Debug, Deserialize)]
pub struct LangQuery {
    #[serde(default)]
    to: String,
    #[serde(default)]
    next: String,
}

/// GET /lang?to=en&next=/key: remembers the language in a cookie and goes back.
pub async fn switch_lang(Query(q): Query<LangQuery>) -> Response {
    let lang = crate::domain::Lang::from_code(&q.to);
    let mut response = see_other(local_path(&q.next));
    if let Ok(cookie) = lang_cookie(lang).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// GET /outbox (dev mode only): the mail the notifier wrote, newest first.
pub async fn outbox(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let Some(dir) = state.dev_outbox.clone() else {
        return not_found(State(state), ctx).await;
    };
    let session = state.session(&ctx).await?;
    let mut mails = tokio::task::spawn_blocking(move || read_outbox(dir.as_path())).await?;
    for mail in &mut mails {
        if let Ok(at) = mail.date.parse::<i64>() {
            mail.date = state.local_time_full(at);
        }
    }
    let page = OutboxPage {
        c: state.chrome(&ctx, session.as_ref()),
        mails,
    };
    render(StatusCode::OK, &page)
}

fn read_outbox(dir: &std::path::Path) -> Vec<OutboxMail> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).and_then(|m| m.modified()).ok()));
    paths
        .iter()
        .take(20)
        .filter_map(|p| {
            let raw = std::fs::read(p).ok()?;
            let mail = mail_parser::MessageParser::default().parse(&raw)?;
            let to = mail
                .to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_owned();
            Some(OutboxMail {
                name: p.file_name()?.to_string_lossy().into_owned(),
                date: mail
                    .date()
                    .map(|d| (d.to_timestamp() * 1000).to_string())
                    .unwrap_or_default(),
                to,
                subject: mail.subject().unwrap_or_default().to_owned(),
                body: mail.body_text(0).unwrap_or_default().into_owned(),
            })
        })
        .collect()
}

pub async fn not_found(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let c = state.chrome(&ctx, None);
    let t: &Texts = c.t;
    let page = ContinuePage {
        c,
        heading: t.error_title,
        text: t.not_found.to_owned(),
        next: "/".into(),
        refresh: false,
    };
    render(StatusCode::NOT_FOUND, &page).map(IntoResponse::into_response)
}
