//! `kagi.v1.Reset` over tonic: validate the request, call the saga, shape the reply.
//! Span fields are only safe ones: the account ID (once valid) and the internal saga ID,
//! never the password, the code or the reset ID.

mod admin;
mod directory;

pub use admin::ResetAdminGrpc;
pub use directory::DirectoryGrpc;

use std::net::IpAddr;

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use secrecy::SecretString;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::domain::{self, ConfirmationCode, InvalidInput, ResetState, ResetToken};
use crate::error::Error;
use crate::saga::{CodeOutcome, KeyDisplay, ResetSaga, StartRequest};

/// Largest request decoded: the messages are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The gRPC face of a [`ResetSaga`].
#[derive(Debug, Clone)]
pub struct ResetGrpc {
    saga: ResetSaga,
}

impl ResetGrpc {
    pub fn new(saga: ResetSaga) -> Self {
        Self { saga }
    }

    pub fn into_server(self) -> pb::reset_server::ResetServer<Self> {
        pb::reset_server::ResetServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

pub fn state_to_pb(state: ResetState) -> pb::ResetState {
    match state {
        ResetState::CodeSent => pb::ResetState::CodeSent,
        ResetState::Verified => pb::ResetState::Verified,
        ResetState::Confirming => pb::ResetState::Confirming,
        ResetState::Completed => pb::ResetState::Completed,
        ResetState::Cancelled => pb::ResetState::Cancelled,
        ResetState::Expired => pb::ResetState::Expired,
        ResetState::Locked => pb::ResetState::Locked,
        ResetState::Superseded => pb::ResetState::Superseded,
    }
}

fn token(raw: &str) -> Result<ResetToken, Status> {
    ResetToken::parse(raw).map_err(|e| Error::from(e).into())
}

fn invalid(e: InvalidInput) -> Status {
    Error::from(e).into()
}

/// Checks the ID, password and address a user typed (StartReset, Directory.Authenticate),
/// taking the password out of the request, and records the valid ID on the span.
fn credentials(
    account_id: &str,
    password: &mut String,
    client_ip: &str,
) -> Result<(SecretString, IpAddr), Status> {
    let password = SecretString::from(std::mem::take(password));
    domain::check_account_id(account_id).map_err(invalid)?;
    tracing::Span::current().record("account_id", account_id);
    let secret_len = secrecy::ExposeSecret::expose_secret(&password).len();
    if secret_len == 0 || secret_len > 1024 {
        return Err(invalid(InvalidInput::Password));
    }
    let client_ip = client_ip
        .trim()
        .parse()
        .map_err(|_| invalid(InvalidInput::ClientIp))?;
    Ok((password, client_ip))
}

#[tonic::async_trait]
impl pb::reset_server::Reset for ResetGrpc {
    #[instrument(name = "Reset.StartReset", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty))]
    async fn start_reset(
        &self,
        request: Request<pb::StartResetRequest>,
    ) -> Result<Response<pb::StartResetResponse>, Status> {
        let mut req = request.into_inner();
        let (password, client_ip) =
            credentials(&req.account_id, &mut req.password, &req.client_ip)?;
        let locale = domain::parse_locale(&req.locale).map_err(invalid)?;
        let user_agent: String = req.user_agent.chars().take(256).collect();
        let started = self
            .saga
            .start(StartRequest {
                account_id: &req.account_id,
                password,
                client_ip,
                user_agent: &user_agent,
                locale,
            })
            .await?;
        Ok(Response::new(pb::StartResetResponse {
            reset_id: started.token.expose().to_owned(),
            masked_recipient: started.masked_recipient,
            code_expires_at: Some(timestamp(started.code_expires_at)),
            resend_after: Some(timestamp(started.resend_after)),
        }))
    }

    #[instrument(name = "Reset.ResendCode", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty))]
    async fn resend_code(
        &self,
        request: Request<pb::ResendCodeRequest>,
    ) -> Result<Response<pb::ResendCodeResponse>, Status> {
        let token = token(&request.get_ref().reset_id)?;
        let resent = self.saga.resend(&token).await?;
        Ok(Response::new(pb::ResendCodeResponse {
            code_expires_at: Some(timestamp(resent.code_expires_at)),
            resend_after: Some(timestamp(resent.resend_after)),
            resends_remaining: resent.resends_remaining,
        }))
    }

    #[instrument(name = "Reset.VerifyCode", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty, result = tracing::field::Empty))]
    async fn verify_code(
        &self,
        request: Request<pb::VerifyResetCodeRequest>,
    ) -> Result<Response<pb::VerifyResetCodeResponse>, Status> {
        let token = token(&request.get_ref().reset_id)?;
        let code = ConfirmationCode::parse(&request.get_ref().code).map_err(invalid)?;
        let outcome = self.saga.verify(&token, &code).await?;
        let mut reply = pb::VerifyResetCodeResponse::default();
        let result = match outcome {
            CodeOutcome::Verified { confirm_by } => {
                reply.confirm_by = Some(timestamp(confirm_by));
                pb::CodeCheck::Verified
            }
            CodeOutcome::WrongCode {
                attempts_remaining,
                replaced,
            } => {
                reply.attempts_remaining = attempts_remaining;
                if replaced {
                    reply.set_reason(pb::ErrorReason::CodeReplaced);
                }
                pb::CodeCheck::WrongCode
            }
            CodeOutcome::Expired => pb::CodeCheck::Expired,
            CodeOutcome::Locked => pb::CodeCheck::Locked,
        };
        tracing::Span::current().record("result", result.as_str_name());
        reply.result = result.into();
        Ok(Response::new(reply))
    }

    #[instrument(name = "Reset.ConfirmReset", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty))]
    async fn confirm_reset(
        &self,
        request: Request<pb::ConfirmResetRequest>,
    ) -> Result<Response<pb::ConfirmResetResponse>, Status> {
        let token = token(&request.get_ref().reset_id)?;
        let key = self.saga.confirm(&token).await?;
        Ok(Response::new(pb::ConfirmResetResponse { key: Some(key) }))
    }

    #[instrument(name = "Reset.CancelReset", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty))]
    async fn cancel_reset(
        &self,
        request: Request<pb::CancelResetRequest>,
    ) -> Result<Response<pb::CancelResetResponse>, Status> {
        let token = token(&request.get_ref().reset_id)?;
        let state = self.saga.cancel(&token).await?;
        Ok(Response::new(pb::CancelResetResponse {
            state: state_to_pb(state).into(),
        }))
    }

    #[instrument(name = "Reset.NotifyKeyDisplayed", skip_all, fields(account_id = tracing::field::Empty))]
    async fn notify_key_displayed(
        &self,
        request: Request<pb::NotifyKeyDisplayedRequest>,
    ) -> Result<Response<pb::NotifyKeyDisplayedResponse>, Status> {
        let req = request.into_inner();
        domain::check_account_id(&req.account_id).map_err(invalid)?;
        tracing::Span::current().record("account_id", req.account_id.as_str());
        let view_id_ok = (1..=64).contains(&req.view_id.len())
            && req.view_id.bytes().all(|b| b.is_ascii_graphic());
        if !view_id_ok {
            return Err(invalid(InvalidInput::ViewId));
        }
        let displayed_at = req
            .displayed_at
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000)
            .ok_or_else(|| invalid(InvalidInput::DisplayedAt))?;
        let client_ip = req
            .client_ip
            .trim()
            .parse()
            .map_err(|_| invalid(InvalidInput::ClientIp))?;
        let locale = domain::parse_locale(&req.locale).map_err(invalid)?;
        let user_agent: String = req.user_agent.chars().take(256).collect();
        let queued = self
            .saga
            .notify_key_displayed(&KeyDisplay {
                account_id: &req.account_id,
                view_id: &req.view_id,
                displayed_at,
                client_ip,
                user_agent: &user_agent,
                locale,
            })
            .await?;
        Ok(Response::new(pb::NotifyKeyDisplayedResponse { queued }))
    }

    #[instrument(name = "Reset.GetReset", skip_all, fields(account_id = tracing::field::Empty, saga = tracing::field::Empty))]
    async fn get_reset(
        &self,
        request: Request<pb::GetResetRequest>,
    ) -> Result<Response<pb::GetResetResponse>, Status> {
        let token = token(&request.get_ref().reset_id)?;
        let view = self.saga.get(&token).await?;
        let live_code = view.state == ResetState::CodeSent;
        Ok(Response::new(pb::GetResetResponse {
            state: state_to_pb(view.state).into(),
            masked_recipient: view.masked_recipient,
            code_expires_at: live_code.then(|| timestamp(view.code_expires_at)),
            resend_after: live_code.then(|| timestamp(view.resend_after)),
            resends_remaining: view.resends_remaining,
            attempts_remaining: view.attempts_remaining,
            confirm_by: (view.state == ResetState::Verified)
                .then_some(view.confirm_by)
                .flatten()
                .map(timestamp),
        }))
    }
}
