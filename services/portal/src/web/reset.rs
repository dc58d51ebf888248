//! Menu 2, "セットアップキーを再発行する": the manual's four screens over `kagi.v1.Reset`.
//! The reset's bearer handle stays in the server-side session (sealed under the cookie),
//! in a session issued fresh when the reset starts; pages ask the reset service where the
//! reset stands on every view, so a reload or a second tab shows the truth. The new key is
//! shown once, in the answer to the confirmation, and the session forgets the reset then.

use axum::Form;
use axum::extract::{Query, State};
use http::StatusCode;
use kagi_proto::v1 as pb;
use pb::ResetState;
use serde::Deserialize;

use super::pages::shown;
use super::response::{PageResult, render, see_other, with_cookie};
use super::templates::{Reset1Page, Reset2Page, Reset3Page, Reset4Page};
use super::{AppState, Ctx};
use crate::domain::UserMessage;
use crate::store::Session;

fn from_status(status: &tonic::Status) -> UserMessage {
    let message = UserMessage::from_reset_status(status);
    if message == UserMessage::Internal || message == UserMessage::Unavailable {
        tracing::warn!(code = ?status.code(), "reset service call failed");
    }
    message
}

fn status_of(message: UserMessage) -> StatusCode {
    match message {
        UserMessage::BadCredentials => StatusCode::UNAUTHORIZED,
        UserMessage::TooManyAttempts | UserMessage::MailRateLimited | UserMessage::ResendLimit => {
            StatusCode::TOO_MANY_REQUESTS
        }
        UserMessage::Unavailable
        | UserMessage::MailUnavailable
        | UserMessage::KeystoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        UserMessage::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        UserMessage::InvalidInput
        | UserMessage::CodeFormat
        | UserMessage::WrongCode { .. }
        | UserMessage::CodeReplaced { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::CONFLICT,
    }
}

/// "1. 二要素認証のリセット": ID and password.
pub async fn step1(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let (session, cookie) = state.ensure_session(&ctx).await?;
    let (message, typed) = match state.db.take_flash(&session).await? {
        Some((message, typed)) => (Some(message), typed),
        None => (None, None),
    };
    let page = Reset1Page {
        account_id: typed
            .or_else(|| session.account_id.clone())
            .unwrap_or_default(),
        c: state.chrome(&ctx, Some(&session)),
        message,
    };
    Ok(with_cookie(render(StatusCode::OK, &page)?, cookie))
}

#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account_id: String,
    #[serde(default)]
    password: String,
}

/// "送信": StartReset mails the code; the reset's handle goes into a session issued
/// fresh for it (never the one the request arrived with, which may have been planted).
pub async fn start(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<StartForm>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    let account = form.account_id.trim().to_owned();
    let request = pb::StartResetRequest {
        account_id: account.clone(),
        password: form.password,
        client_ip: ctx.client_ip.to_string(),
        user_agent: ctx.user_agent.chars().take(256).collect(),
        locale: ctx.lang.code().to_owned(),
    };
    match state.clients.reset.clone().start_reset(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            let (cookie, fresh) = state.db.renew_session(&session, state.now()).await?;
            state
                .db
                .set_reset(&fresh.id_hash, &cookie, &reply.reset_id, &account)
                .await?;
            let cookie = state.session_cookie(&cookie)?;
            Ok(with_cookie(see_other("/reset/code"), Some(cookie)))
        }
        Err(status) => {
            let text = state.limited(&ctx, from_status(&status), kagi_proto::retry_at(&status));
            state
                .refuse_to(&session, "/reset", text, Some(&account))
                .await
        }
    }
}

/// The session and its reset's handle, or the response sending the user to step 1.
async fn with_reset(
    state: &AppState,
    ctx: &Ctx,
) -> Result<Result<(Session, String), axum::response::Response>, super::PageError> {
    let session = state.session(ctx).await?;
    match session {
        Some(session) => match session.reset_id.clone() {
            Some(reset_id) => Ok(Ok((session, reset_id))),
            None => Ok(Err(see_other("/reset"))),
        },
        None => Ok(Err(see_other("/reset"))),
    }
}

async fn get_reset(state: &AppState, reset_id: &str) -> Result<pb::GetResetResponse, UserMessage> {
    let request = pb::GetResetRequest {
        reset_id: reset_id.to_owned(),
    };
    state
        .clients
        .reset
        .clone()
        .get_reset(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| from_status(&s))
}

/// The screens of menu 2 that show a reset in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Screen {
    /// "2. 再設定メールを送信": waiting for the code.
    Code,
    /// "3. 最終確認": the code was right; waiting for the confirmation.
    Confirm,
    /// "4. リセット完了": the key was issued (and shown once, on confirming).
    Done,
}

impl Screen {
    fn path(self) -> &'static str {
        match self {
            Self::Code => "/reset/code",
            Self::Confirm => "/reset/confirm",
            Self::Done => "/reset/done",
        }
    }

    /// The screen a reset in `state` belongs on, or why there is none (start again).
    fn of(state: ResetState) -> Result<Self, UserMessage> {
        match state {
            ResetState::CodeSent => Ok(Self::Code),
            // A confirmation cut short finishes when the user confirms again.
            ResetState::Verified | ResetState::Confirming => Ok(Self::Confirm),
            ResetState::Completed => Ok(Self::Done),
            ResetState::Expired => Err(UserMessage::CodeExpired),
            ResetState::Locked => Err(UserMessage::CodeLocked),
            ResetState::Cancelled => Err(UserMessage::Cancelled),
            ResetState::Superseded => Err(UserMessage::Superseded),
            ResetState::Unspecified => Err(UserMessage::NoReset),
        }
    }
}

/// Loads the reset and, when it belongs on `wanted`, returns it; otherwise the response
/// to send instead: a redirect to the screen it belongs on, or the message saying why it
/// is over. `failed` is what the step just tried said (kept across its redirect): when
/// the reset is over, it is the message shown.
async fn reset_on(
    state: &AppState,
    ctx: &Ctx,
    session: &Session,
    reset_id: &str,
    wanted: Screen,
    failed: Option<&str>,
) -> Result<Result<pb::GetResetResponse, axum::response::Response>, super::PageError> {
    let reset = match get_reset(state, reset_id).await {
        Ok(reset) => reset,
        Err(m) => {
            let page =
                state.message_page(ctx, Some(session), status_of(m), m, m.must_start_again())?;
            return Ok(Err(page));
        }
    };
    match Screen::of(reset.state()) {
        Ok(screen) if screen == wanted => Ok(Ok(reset)),
        Ok(other) => Ok(Err(see_other(other.path()))),
        Err(m) => {
            let shown = failed.map_or_else(|| m.text(ctx.lang), str::to_owned);
            let page = state.text_page(ctx, Some(session), status_of(m), shown, true)?;
            Ok(Err(page))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct CodeQuery {
    #[serde(default)]
    resent: Option<String>,
}

/// "2. 再設定メールを送信": the code field, resend (after 3 minutes) and start again.
pub async fn step2(
    State(state): State<AppState>,
    ctx: Ctx,
    Query(q): Query<CodeQuery>,
) -> PageResult {
    let (session, reset_id) = match with_reset(&state, &ctx).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let notice = q
        .resent
        .is_some()
        .then_some(state.chrome(&ctx, None).t.r2_resent);
    let failed = state.flash(&session).await?;
    code_page(&state, &ctx, &session, &reset_id, failed, notice).await
}

/// A refusal at step 2 (a wrong code, a resend too soon): kept for step 2, which shows it
/// above the code form, or as "start again" when the reset is over.
async fn refused_on_step_2(state: &AppState, session: &Session, text: String) -> PageResult {
    state.refuse_to(session, "/reset/code", text, None).await
}

async fn code_page(
    state: &AppState,
    ctx: &Ctx,
    session: &Session,
    reset_id: &str,
    message: Option<String>,
    notice: Option<&'static str>,
) -> PageResult {
    // A wrong code that locked or outlived the reset says why first.
    let reset = match reset_on(
        state,
        ctx,
        session,
        reset_id,
        Screen::Code,
        message.as_deref(),
    )
    .await?
    {
        Ok(reset) => reset,
        Err(elsewhere) => return Ok(elsewhere),
    };
    let resend_after = reset
        .resend_after
        .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
    let page = Reset2Page {
        c: state.chrome(ctx, Some(session)),
        masked: reset.masked_recipient,
        message,
        notice,
        resend_enabled: state.now() >= resend_after,
        resend_at: state.local_time(resend_after),
        resend_wait_ms: resend_after.saturating_sub(state.now()).max(0),
    };
    render(StatusCode::OK, &page)
}

#[derive(Deserialize)]
pub struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// For a POST: the CSRF-checked session and its reset's handle, or the response to send
/// instead (the refusal, or back to step 1 when no reset is in progress).
async fn posted_reset(
    state: &AppState,
    ctx: &Ctx,
    csrf: &str,
) -> Result<Result<(Session, String), axum::response::Response>, super::PageError> {
    let session = match state.check_csrf(ctx, csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(Err(refused)),
    };
    Ok(match session.reset_id.clone() {
        Some(reset_id) => Ok((session, reset_id)),
        None => Err(see_other("/reset")),
    })
}

/// "確認する": VerifyCode.
pub async fn verify(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CodeForm>,
) -> PageResult {
    let (session, reset_id) = match posted_reset(&state, &ctx, &form.csrf).await? {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    // A Japanese IME types full-width digits, phones paste `366 262`: the digits meant.
    let code = kagi_runtime::typed_digits(&form.code);
    let request = pb::VerifyResetCodeRequest {
        reset_id: reset_id.clone(),
        code,
    };
    let message = match state.clients.reset.clone().verify_code(request).await {
        Ok(reply) => {
            let reply = reply.into_inner();
            match reply.result() {
                pb::CodeCheck::Verified => return Ok(see_other("/reset/confirm")),
                pb::CodeCheck::WrongCode if reply.reason() == pb::ErrorReason::CodeReplaced => {
                    UserMessage::CodeReplaced {
                        attempts_remaining: reply.attempts_remaining,
                    }
                }
                pb::CodeCheck::WrongCode => UserMessage::WrongCode {
                    attempts_remaining: reply.attempts_remaining,
                },
                pb::CodeCheck::Expired => UserMessage::CodeExpired,
                pb::CodeCheck::Locked => UserMessage::CodeLocked,
                pb::CodeCheck::Unspecified => UserMessage::Internal,
            }
        }
        Err(status) => from_status(&status),
    };
    refused_on_step_2(&state, &session, message.text(ctx.lang)).await
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

/// "メールを再送信する": ResendCode (refused before 3 minutes).
pub async fn resend(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    let (session, reset_id) = match posted_reset(&state, &ctx, &form.csrf).await? {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    let request = pb::ResendCodeRequest {
        reset_id: reset_id.clone(),
    };
    match state.clients.reset.clone().resend_code(request).await {
        Ok(_) => Ok(see_other("/reset/code?resent=1")),
        Err(status) => {
            let text = state.limited(&ctx, from_status(&status), kagi_proto::retry_at(&status));
            refused_on_step_2(&state, &session, text).await
        }
    }
}

/// "最初からやり直す": CancelReset, forget the reset, back to step 1.
pub async fn cancel(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    if let Some(reset_id) = session.reset_id.clone() {
        let request = pb::CancelResetRequest { reset_id };
        // A reset already over stays as it is; either way the session forgets it.
        if let Err(status) = state.clients.reset.clone().cancel_reset(request).await {
            tracing::info!(code = ?status.code(), "cancel refused; forgetting the reset anyway");
        }
        state.db.forget_reset(&session.id_hash).await?;
    }
    Ok(see_other("/reset"))
}

/// "3. 最終確認".
pub async fn step3(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let (session, reset_id) = match with_reset(&state, &ctx).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    let message = state.flash(&session).await?;
    if let Err(elsewhere) = reset_on(
        &state,
        &ctx,
        &session,
        &reset_id,
        Screen::Confirm,
        message.as_deref(),
    )
    .await?
    {
        return Ok(elsewhere);
    }
    let page = Reset3Page {
        c: state.chrome(&ctx, Some(&session)),
        message,
    };
    render(StatusCode::OK, &page)
}

/// "セットアップキーを再発行する": ConfirmReset, then 303 to step 4, which shows the new key
/// (POST/redirect/GET: a reload never confirms twice). A refusal is kept for step 3.
pub async fn confirm(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CsrfOnly>,
) -> PageResult {
    let (session, reset_id) = match posted_reset(&state, &ctx, &form.csrf).await? {
        Ok(found) => found,
        Err(response) => return Ok(response),
    };
    let request = pb::ConfirmResetRequest { reset_id };
    match state.clients.reset.clone().confirm_reset(request).await {
        Ok(_) => Ok(see_other(Screen::Done.path())),
        Err(status) => {
            let message = from_status(&status);
            state
                .refuse_to(
                    &session,
                    Screen::Confirm.path(),
                    message.text(ctx.lang),
                    None,
                )
                .await
        }
    }
}

/// "4. リセット完了": the new key, shown once. The reset service replays the confirmed
/// reissue's key (it does for a while after completing); the session forgets the reset
/// before the key is sent, so neither a reload, nor the back button, nor anyone else
/// holding the session sees it again (they land on step 1).
pub async fn step4(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let (session, reset_id) = match with_reset(&state, &ctx).await? {
        Ok(found) => found,
        Err(redirect) => return Ok(redirect),
    };
    if let Err(elsewhere) = reset_on(&state, &ctx, &session, &reset_id, Screen::Done, None).await? {
        return Ok(elsewhere);
    }
    state.db.forget_reset(&session.id_hash).await?;
    let request = pb::ConfirmResetRequest { reset_id };
    let key = match state.clients.reset.clone().confirm_reset(request).await {
        Ok(reply) => reply.into_inner().key,
        Err(status) => {
            let message = from_status(&status);
            return state.message_page(&ctx, Some(&session), status_of(message), message, false);
        }
    };
    let Some(key) = key else {
        return state.message_page(
            &ctx,
            Some(&session),
            StatusCode::INTERNAL_SERVER_ERROR,
            UserMessage::Internal,
            false,
        );
    };
    super::check::allow_after_reissue(&state, &session, &key.account_id).await?;
    let page = Reset4Page {
        c: state.chrome(&ctx, Some(&session)),
        key: shown(&key),
    };
    render(StatusCode::OK, &page)
}
