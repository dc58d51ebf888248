//! "Check my authenticator" under the key on menu 1 and on 「4. リセット完了」: the user types
//! the code the device shows now; the keystore's `CheckAuthenticator` says whether the
//! device holds the current key and whether its clock is right. POST /key/check asks and
//! keeps the answer in the session; GET /key/check (POST/redirect/GET) shows it, with the
//! key above it only when the answer is to register it again (FAQ 7).
//!
//! Who may check: a session that may see the key on menu 1 (a recent login), or the session
//! that 「4. リセット完了」 just showed the new key to, for as long as a login would show it.

use axum::Form;
use axum::extract::State;
use http::StatusCode;
use kagi_proto::v1 as pb;
use pb::CheckAuthenticatorOutcome as Outcome;
use serde::Deserialize;

use super::login_otp::normalized;
use super::pages::fetch_key;
use super::response::{PageResult, render, see_other};
use super::templates::{CheckPage, Chrome};
use super::{AppState, Ctx, PageError};
use crate::domain::{CheckAnswer, Lang, UserMessage};
use crate::store::Session;

/// The check form's and answer page's fixed words.
#[derive(Debug)]
pub struct CheckTexts {
    pub title: &'static str,
    pub intro: &'static str,
    pub label: &'static str,
    pub button: &'static str,
    pub note: &'static str,
    pub manual: &'static str,
    pub back_to_key: &'static str,
}

const JA: CheckTexts = CheckTexts {
    title: "認証アプリの設定を確認する",
    intro: "セットアップキーを登録した端末に、いま表示されているワンタイムパスワードを入力してください。正しく登録されているか、端末の時計が合っているかを確認します。",
    label: "端末に表示されているワンタイムパスワード",
    button: "確認する",
    note: "この確認はログインではありません。入力したワンタイムパスワードは、このあとのログインにも使えます。",
    manual: "マニュアルの「よくある質問」を見る",
    back_to_key: "セットアップキーの表示に戻る",
};

const EN: CheckTexts = CheckTexts {
    title: "Check your authenticator",
    intro: "Type the one-time password the device you registered the setup key on shows now. This checks that it holds the current key and that its clock is right.",
    label: "The one-time password your device shows",
    button: "Check",
    note: "This check is not a login: the one-time password you type still works for logging in afterwards.",
    manual: "See the FAQ in the manual",
    back_to_key: "Back to the setup key",
};

impl CheckTexts {
    pub fn of(lang: Lang) -> &'static Self {
        match lang {
            Lang::Ja => &JA,
            Lang::En => &EN,
        }
    }
}

impl Chrome {
    /// The check form's words in the page's language (for the `check_form.html` partial,
    /// which any page showing the key can include).
    pub fn check_texts(&self) -> &'static CheckTexts {
        CheckTexts::of(Lang::from_code(self.lang))
    }
}

#[derive(Deserialize)]
pub struct CheckForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

/// POST /key/check: asks the keystore, keeps the answer for the GET.
pub async fn submit(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<CheckForm>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    let Some(account) = state.check_subject(&session).await? else {
        // Menu 1 says why (log in, or log in again).
        return Ok(see_other("/key"));
    };
    let answer = match normalized(&form.code) {
        Some(code) => state.check_authenticator(&account, code).await,
        None => CheckAnswer::CodeFormat,
    };
    state
        .db
        .set_flash(&session.id_hash, &answer.token(), None)
        .await?;
    Ok(see_other("/key/check"))
}

/// GET /key/check: the answer the POST kept, once; without one, menu 1.
pub async fn answer(State(state): State<AppState>, ctx: Ctx) -> PageResult {
    let Some(session) = state.session(&ctx).await? else {
        return Ok(see_other("/key"));
    };
    let Some(account) = state.check_subject(&session).await? else {
        return Ok(see_other("/key"));
    };
    let kept = state.db.take_flash(&session).await?;
    let Some(answer) = kept.and_then(|(token, _)| CheckAnswer::from_token(&token)) else {
        return Ok(see_other("/key"));
    };
    let mut lines = answer.lines(ctx.lang, |at| state.local_time(at));
    let mut key = None;
    if answer.shows_key() {
        // Shown to be registered again: a display like menu 1's, audited and mailed.
        match fetch_key(&state, &ctx, &account, pb::KeyForm::QrPng).await {
            Ok(shown) => key = Some(shown),
            Err(message) => lines.push(message.text(ctx.lang)),
        }
    }
    let status = match answer {
        CheckAnswer::Limited { .. } => StatusCode::TOO_MANY_REQUESTS,
        CheckAnswer::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    let page = CheckPage {
        c: state.chrome(&ctx, Some(&session)),
        kind: answer.kind(),
        ready: answer.is_ready(),
        lines,
        key,
        again: !matches!(answer, CheckAnswer::Limited { .. } | CheckAnswer::NoKey),
        logged_in: state.key_viewer(Some(&session)).is_ok(),
    };
    render(status, &page)
}

impl AppState {
    /// The account this session may check: the one it may see the key of on menu 1, or
    /// the one whose new key 「4. リセット完了」 just showed it.
    async fn check_subject(&self, session: &Session) -> Result<Option<String>, PageError> {
        if let Ok(account) = self.key_viewer(Some(session)) {
            return Ok(Some(account));
        }
        Ok(self.db.check_allowed(&session.id_hash, self.now()).await?)
    }

    /// The keystore's answer to `code` for `account`.
    async fn check_authenticator(&self, account: &str, code: String) -> CheckAnswer {
        let request = pb::CheckAuthenticatorRequest {
            account_id: account.to_owned(),
            code,
        };
        match self
            .clients
            .keystore
            .clone()
            .check_authenticator(request)
            .await
        {
            Ok(reply) => {
                let reply = reply.into_inner();
                match reply.outcome() {
                    Outcome::Ready => CheckAnswer::Ready,
                    Outcome::ClockSkewed => CheckAnswer::ClockOff {
                        offset_secs: reply.offset_seconds,
                    },
                    Outcome::NoMatch => CheckAnswer::NoMatch,
                    Outcome::NoKey => CheckAnswer::NoKey,
                    Outcome::Unspecified => CheckAnswer::Unavailable,
                }
            }
            Err(status) => match UserMessage::from_reset_status(&status) {
                UserMessage::TooManyAttempts => CheckAnswer::Limited {
                    retry_at: kagi_proto::retry_at(&status),
                },
                UserMessage::CodeFormat => CheckAnswer::CodeFormat,
                UserMessage::NoSetupKey => CheckAnswer::NoKey,
                _ => {
                    tracing::warn!(code = ?status.code(), "keystore CheckAuthenticator failed");
                    CheckAnswer::Unavailable
                }
            },
        }
    }
}

/// Lets the session that 「4. リセット完了」 showed `account`'s new key to check that
/// account's authenticator, for as long as a login would show the key.
///
/// # Errors
/// A database failure.
pub async fn allow_after_reissue(
    state: &AppState,
    session: &Session,
    account: &str,
) -> Result<(), PageError> {
    let window = i64::try_from(
        state
            .settings
            .session
            .key_view_max_age_secs
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX);
    state
        .db
        .allow_check(
            &session.id_hash,
            account,
            state.now().saturating_add(window),
        )
        .await?;
    Ok(())
}
