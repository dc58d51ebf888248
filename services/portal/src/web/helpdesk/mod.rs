//! `/helpdesk`: the help desk's console (issue 15). An operator searches an account by ID
//! and sees on one page its key, lockout, last login, reissue in progress, recent mail and
//! audit trail, read from each owning service's admin contract; and acts (unlock, revoke,
//! cancel the reissue) with a mandatory reason, each action audited by the owning service
//! with the operator's ID, the user mailed, and the result shown after a redirect (PRG).
//!
//! Everyone else is refused before any service is asked: no session → the login; a
//! session without the operator role (checked on every request, see
//! [`crate::config::HelpdeskSettings`]) → 403 with nothing about any account.

mod texts;
mod view;

use axum::extract::{Form, Query, State};

use http::StatusCode;
use kagi_proto::v1 as pb;
use serde::Deserialize;

use self::texts::HelpdeskTexts;
use self::view::{EventRow, KeyView, MailRow, ResetView};
use super::response::{PageResult, query_value, render, see_other};
use super::templates::Chrome;
use super::{AppState, Ctx};
use crate::clients::HelpdeskClients;
use crate::config::LoginMode;
use crate::store::Session;

#[derive(Debug, askama::Template)]
#[template(path = "helpdesk.html")]
pub struct HelpdeskPage {
    pub c: Chrome,
    pub h: &'static HelpdeskTexts,
    pub account: String,
    pub message: Option<String>,
    pub looked_up: bool,
    pub key: Option<KeyView>,
    pub key_note: Option<&'static str>,
    pub reset: Option<ResetView>,
    pub reset_note: Option<&'static str>,
    pub mails: Vec<MailRow>,
    pub mails_note: Option<&'static str>,
    pub events: Vec<EventRow>,
}

#[derive(Debug, Deserialize)]
pub struct Lookup {
    #[serde(default)]
    account: String,
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

/// An operator's session and the console's clients; or the response refusing the request.
struct Operator {
    session: Session,
    id: String,
    clients: HelpdeskClients,
}

impl AppState {
    /// Whether `session`'s account holds the operator role on this request.
    fn is_operator(&self, ctx: &Ctx, account: &str) -> bool {
        let helpdesk = &self.settings.helpdesk;
        match self.settings.login.mode {
            LoginMode::Local => helpdesk.operators.iter().any(|o| o == account),
            LoginMode::TrustedHeader => {
                ctx.vouched_account.as_deref() == Some(account)
                    && ctx
                        .vouched_groups
                        .iter()
                        .any(|g| helpdesk.group_values.contains(g))
            }
        }
    }

    /// The operator behind the request, or the refusal: 404 while the console is off, the
    /// login for no session, 403 for anyone without the role.
    async fn operator(&self, ctx: &Ctx, session: Option<Session>) -> Result<Operator, PageResult> {
        let Some(clients) = self.clients.helpdesk.clone() else {
            return Err(super::pages::not_found(State(self.clone()), ctx.clone()).await);
        };
        let Some((session, id)) = session.and_then(|s| s.account_id.clone().map(|a| (s, a))) else {
            return Err(Ok(see_other("/login?next=/helpdesk")));
        };
        if !self.is_operator(ctx, &id) {
            tracing::warn!(account_id = %id, "help desk refused to a non-operator");
            let text = HelpdeskTexts::of(ctx.lang).not_operator.to_owned();
            return Err(self.text_page(ctx, Some(&session), StatusCode::FORBIDDEN, text, false));
        }
        Ok(Operator {
            session,
            id,
            clients,
        })
    }
}

/// GET /helpdesk[?account=ID]: the search, and the account's page.
pub async fn page(State(state): State<AppState>, ctx: Ctx, Query(q): Query<Lookup>) -> PageResult {
    let session = state.session(&ctx).await?;
    let op = match state.operator(&ctx, session).await {
        Ok(op) => op,
        Err(refused) => return refused,
    };
    let h = HelpdeskTexts::of(ctx.lang);
    let mut page = HelpdeskPage {
        c: state.chrome(&ctx, Some(&op.session)),
        h,
        account: q.account.trim().to_owned(),
        message: state.flash(&op.session).await?,
        looked_up: false,
        key: None,
        key_note: None,
        reset: None,
        reset_note: None,
        mails: Vec::new(),
        mails_note: None,
        events: Vec::new(),
    };
    if page.account.is_empty() {
        return render(StatusCode::OK, &page);
    }
    if kagi_runtime::AccountId::parse(&page.account).is_err() {
        page.message = Some(h.bad_account.to_owned());
        return render(StatusCode::BAD_REQUEST, &page);
    }
    page.looked_up = true;
    let (account, operator) = (page.account.clone(), op.id.clone());
    let mut c = op.clients;
    let (mut ks, mut rs, mut ns) = (c.keystore.clone(), c.reset.clone(), c.notifier.clone());
    let (key, reset, mails) = tokio::join!(
        ks.get_account(pb::GetAccountRequest {
            account_id: account.clone(),
            operator: operator.clone(),
        }),
        rs.get_account_reset(pb::GetAccountResetRequest {
            account_id: account.clone(),
            operator: operator.clone(),
        }),
        ns.list_recent_mails(pb::ListRecentMailsRequest {
            account_id: account.clone(),
            operator,
            page_size: 20,
        }),
    );
    c.keystore = ks;
    let mut key_events = Vec::new();
    match key {
        Ok(reply) => {
            let reply = reply.into_inner();
            page.key = Some(state.key_view(h, &reply));
            key_events = reply.recent_events;
        }
        Err(status) if status.code() == tonic::Code::NotFound => {
            page.key_note = Some(h.never_known)
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "KeystoreAdmin.GetAccount failed");
            page.key_note = Some(h.unavailable);
        }
    }
    let mut reset_events = Vec::new();
    match reset {
        Ok(reply) => {
            let reply = reply.into_inner();
            page.reset = Some(state.reset_view(h, &reply));
            reset_events = reply.recent_events;
        }
        Err(status) => {
            tracing::warn!(code = ?status.code(), "ResetAdmin.GetAccountReset failed");
            page.reset_note = Some(h.unavailable);
        }
    }
    match mails {
        Ok(reply) => page.mails = state.mail_rows(h, &reply.into_inner().mails),
        Err(status) => {
            tracing::warn!(code = ?status.code(), "NotifierAdmin.ListRecentMails failed");
            page.mails_note = Some(h.unavailable);
        }
    }
    page.events = state.event_rows(&key_events, &reset_events);
    render(StatusCode::OK, &page)
}

/// POST /helpdesk/action: unlock, revoke or cancel the reissue, with a reason; the outcome
/// is kept for the account's page, where the browser is sent (PRG).
pub async fn act(
    State(state): State<AppState>,
    ctx: Ctx,
    Form(form): Form<ActionForm>,
) -> PageResult {
    let session = match state.check_csrf(&ctx, &form.csrf).await? {
        Ok(session) => session,
        Err(refused) => return Ok(refused),
    };
    let op = match state.operator(&ctx, Some(session)).await {
        Ok(op) => op,
        Err(refused) => return refused,
    };
    let h = HelpdeskTexts::of(ctx.lang);
    let account = form.account.trim().to_owned();
    if kagi_runtime::AccountId::parse(&account).is_err() {
        return state
            .refuse_to(&op.session, "/helpdesk", h.bad_account.to_owned(), None)
            .await;
    }
    let back = format!("/helpdesk?account={}", query_value(&account));
    let reason = form.reason.trim();
    if reason.is_empty() {
        return state
            .refuse_to(&op.session, &back, h.reason_required.to_owned(), None)
            .await;
    }
    let context = Some(pb::OperatorContext {
        operator: op.id.clone(),
        reason: reason.to_owned(),
    });
    let outcome = perform(&state, op.clients, &account, &form.action, context, h).await;
    if let Ok(message) = &outcome {
        tracing::info!(operator = %op.id, account_id = %account, action = %form.action, "help desk action");
        state
            .db
            .set_flash(&op.session.id_hash, message, None)
            .await?;
        return Ok(see_other(&back));
    }
    let message = outcome.unwrap_or_else(|m| m);
    state.refuse_to(&op.session, &back, message, None).await
}

/// Runs one action; `Ok` with what to tell the operator, `Err` with why it was refused.
async fn perform(
    state: &AppState,
    mut clients: HelpdeskClients,
    account: &str,
    action: &str,
    context: Option<pb::OperatorContext>,
    h: &'static HelpdeskTexts,
) -> Result<String, String> {
    let refused = |status: tonic::Status| match status.code() {
        tonic::Code::InvalidArgument => h.reason_required.to_owned(),
        tonic::Code::NotFound | tonic::Code::FailedPrecondition => h.not_applicable.to_owned(),
        code => {
            tracing::warn!(?code, "help desk action failed");
            h.unavailable.to_owned()
        }
    };
    let (done, kind) = match action {
        "unlock" => {
            let request = pb::UnlockAccountRequest {
                account_id: account.to_owned(),
                context: context.clone(),
            };
            clients
                .keystore
                .unlock_account(request)
                .await
                .map_err(refused)?;
            (h.done_unlock, pb::OperatorAction::Unlock)
        }
        "revoke" => {
            let request = pb::RevokeKeyRequest {
                account_id: account.to_owned(),
                context: context.clone(),
            };
            clients
                .keystore
                .revoke_key(request)
                .await
                .map_err(refused)?;
            (h.done_revoke, pb::OperatorAction::RevokeKey)
        }
        "cancel_reset" => {
            let request = pb::CancelAccountResetRequest {
                account_id: account.to_owned(),
                context,
                locale: String::new(),
            };
            let reply = clients
                .reset
                .cancel_account_reset(request)
                .await
                .map_err(refused)?;
            let mailed = if reply.into_inner().notified {
                h.mailed
            } else {
                h.not_mailed
            };
            return Ok(format!("{} {mailed}", h.done_cancel));
        }
        _ => return Err(h.not_applicable.to_owned()),
    };
    // The keystore holds no address: the reset service mails the user.
    let notice = pb::NotifyOperatorActionRequest {
        account_id: account.to_owned(),
        action: kind.into(),
        context,
        notice_id: crate::store::random_token().map_err(|_| h.unavailable.to_owned())?,
        acted_at: Some(kagi_proto::timestamp(state.now())),
        locale: String::new(),
    };
    let mailed = match clients.reset.notify_operator_action(notice).await {
        Ok(reply) if reply.get_ref().queued => h.mailed,
        Ok(_) => h.not_mailed,
        Err(status) => {
            tracing::warn!(code = ?status.code(), "operator notice not queued; the action stands");
            h.not_mailed
        }
    };
    Ok(format!("{done} {mailed}"))
}
