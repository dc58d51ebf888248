//! `kagi.v1.ResetAdmin` over tonic: the help desk's look at an account's resets, the
//! cancellation and the operator notices. Only the `helpdesk` caller reaches these (the
//! auth layer's allow list, see `app::DEFAULT_ALLOW`).

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_runtime::operator::parse_operator;
use kagi_runtime::{AccountId, Caller, OperatorContext};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{invalid, state_to_pb};
use crate::domain::{self, InvalidInput};
use crate::saga::{AccountResets, AdminActor, OperatorNotice, ResetSaga};

/// The gRPC face of the saga's admin use cases.
#[derive(Debug, Clone)]
pub struct ResetAdminGrpc {
    saga: ResetSaga,
}

impl ResetAdminGrpc {
    pub fn new(saga: ResetSaga) -> Self {
        Self { saga }
    }

    pub fn into_server(self) -> pb::reset_admin_server::ResetAdminServer<Self> {
        pb::reset_admin_server::ResetAdminServer::new(self)
            .max_decoding_message_size(super::MAX_REQUEST_BYTES)
    }
}

/// The authenticated calling service, put there by the auth layer.
fn actor<T>(request: &Request<T>) -> Result<AdminActor<'_>, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| AdminActor { caller: &c.0 })
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

fn account(raw: &str) -> Result<AccountId, Status> {
    let account = AccountId::parse(raw).map_err(|e| invalid(e.into()))?;
    tracing::Span::current().record("account_id", account.as_str());
    Ok(account)
}

fn context(raw: Option<&pb::OperatorContext>) -> Result<OperatorContext, Status> {
    let (operator, reason) = raw.map_or(("", ""), |c| (c.operator.as_str(), c.reason.as_str()));
    OperatorContext::parse(operator, reason).map_err(|e| invalid(e.into()))
}

fn resets_reply(
    account_id: String,
    resets: AccountResets,
    saga: &ResetSaga,
) -> pb::GetAccountResetResponse {
    let policy = saga.policy();
    let in_progress = resets.latest.as_ref().is_some_and(|(_, state)| {
        matches!(
            state,
            domain::ResetState::CodeSent
                | domain::ResetState::Verified
                | domain::ResetState::Confirming
        )
    });
    let latest = resets.latest.map(|(row, state)| {
        let resends = u32::try_from(row.sends - 1).unwrap_or(0);
        let wrong = u32::try_from(row.wrong_attempts).unwrap_or(u32::MAX);
        pb::AccountReset {
            state: state_to_pb(state).into(),
            started_at: Some(timestamp(row.created_at)),
            code_sent_at: row.last_sent_at.map(timestamp),
            code_expires_at: Some(timestamp(row.code_expires_at)),
            attempts_remaining: policy.max_wrong_codes.saturating_sub(wrong),
            resends,
            resends_remaining: policy.max_resends.saturating_sub(resends),
        }
    });
    pb::GetAccountResetResponse {
        account_id,
        masked_recipient: resets.masked_recipient,
        latest,
        in_progress,
        recent_events: resets
            .recent_events
            .into_iter()
            .map(|e| pb::AuditEvent {
                sequence: e.seq,
                at: Some(timestamp(e.at)),
                caller: e.caller,
                action: e.action,
                account_id: e.account_id,
                key_id: String::new(),
                detail: e.detail,
                trace_id: e.trace_id,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::reset_admin_server::ResetAdmin for ResetAdminGrpc {
    #[instrument(name = "ResetAdmin.GetAccountReset", skip_all, fields(account_id = tracing::field::Empty))]
    async fn get_account_reset(
        &self,
        request: Request<pb::GetAccountResetRequest>,
    ) -> Result<Response<pb::GetAccountResetResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let operator = parse_operator(&req.operator).map_err(|e| invalid(e.into()))?;
        let resets = self
            .saga
            .admin_resets(actor, &operator, account.as_str())
            .await?;
        crate::metrics::admin_action("get_account_reset");
        Ok(Response::new(resets_reply(
            account.into_string(),
            resets,
            &self.saga,
        )))
    }

    #[instrument(name = "ResetAdmin.CancelAccountReset", skip_all, fields(account_id = tracing::field::Empty))]
    async fn cancel_account_reset(
        &self,
        request: Request<pb::CancelAccountResetRequest>,
    ) -> Result<Response<pb::CancelAccountResetResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let context = context(req.context.as_ref())?;
        let locale = domain::parse_locale(&req.locale).map_err(invalid)?;
        let (previous, notified) = self
            .saga
            .admin_cancel(actor, account.as_str(), &context, locale)
            .await?;
        crate::metrics::admin_action("cancel_reset");
        Ok(Response::new(pb::CancelAccountResetResponse {
            previous_state: state_to_pb(previous).into(),
            notified,
        }))
    }

    #[instrument(name = "ResetAdmin.NotifyOperatorAction", skip_all, fields(account_id = tracing::field::Empty))]
    async fn notify_operator_action(
        &self,
        request: Request<pb::NotifyOperatorActionRequest>,
    ) -> Result<Response<pb::NotifyOperatorActionResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let context = context(req.context.as_ref())?;
        let action = match req.action() {
            a @ (pb::OperatorAction::Unlock | pb::OperatorAction::RevokeKey) => a,
            _ => return Err(invalid(InvalidInput::Action)),
        };
        let notice_ok = (1..=64).contains(&req.notice_id.len())
            && req.notice_id.bytes().all(|b| b.is_ascii_graphic());
        if !notice_ok {
            return Err(invalid(InvalidInput::NoticeId));
        }
        let acted_at = req
            .acted_at
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000)
            .ok_or_else(|| invalid(InvalidInput::ActedAt))?;
        let locale = domain::parse_locale(&req.locale).map_err(invalid)?;
        let notice = OperatorNotice {
            account_id: account.as_str(),
            action,
            notice_id: &req.notice_id,
            acted_at,
            locale,
        };
        let queued = self.saga.admin_notify(actor, &context, &notice).await?;
        crate::metrics::admin_action("notify_operator_action");
        Ok(Response::new(pb::NotifyOperatorActionResponse { queued }))
    }
}
