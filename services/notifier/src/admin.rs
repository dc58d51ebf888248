//! `kagi.v1.NotifierAdmin`: the help desk's list of an account's recent mails (FAQ 3, "the
//! mail does not arrive", answered with the SMTP server's own words), and the notice of an
//! operator's action, queued like every other mail. Listing admits `helpdesk`; sending admits
//! `reset`, which owns the recovery address (see `grpc::DEFAULT_ALLOW`).

use std::sync::Arc;

use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_admin_server::{NotifierAdmin, NotifierAdminServer};
use kagi_runtime::AccountId;
use kagi_runtime::mask::mask_email;
use kagi_runtime::operator::parse_operator;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::domain::{InvalidInput, NewMessage, OperatorAction, OperatorFields};
use crate::error::Error;
use crate::grpc::{NotifierService, to_datetime, to_proto};

/// The admin face of the notifier, sharing its queue.
#[derive(Debug, Clone)]
pub struct NotifierAdminService {
    notifier: Arc<NotifierService>,
}

impl NotifierAdminService {
    pub fn new(notifier: Arc<NotifierService>) -> Self {
        Self { notifier }
    }

    /// The tonic service, decoding at most `max_request_bytes`.
    pub fn into_server(self, max_request_bytes: usize) -> NotifierAdminServer<Self> {
        NotifierAdminServer::new(self).max_decoding_message_size(max_request_bytes)
    }
}

fn invalid(e: impl Into<InvalidInput>) -> Status {
    Error::from(e.into()).into()
}

#[tonic::async_trait]
impl NotifierAdmin for NotifierAdminService {
    #[instrument(skip_all, fields(account_id = tracing::field::Empty))]
    async fn list_recent_mails(
        &self,
        request: Request<pb::ListRecentMailsRequest>,
    ) -> Result<Response<pb::ListRecentMailsResponse>, Status> {
        let req = request.get_ref();
        let account = AccountId::parse(&req.account_id).map_err(invalid)?;
        tracing::Span::current().record("account_id", account.as_str());
        let operator = parse_operator(&req.operator)
            .map_err(|e| Status::from(Error::from(InvalidInput::Operator(e.to_string()))))?;
        let limit = match req.page_size {
            0 => 20,
            n @ 1..=100 => i64::from(n),
            _ => return Err(invalid(InvalidInput::PageSize)),
        };
        let records = self
            .notifier
            .store
            .recent_for_account(account.as_str(), limit)
            .await
            .map_err(Error::from)?;
        tracing::info!(operator = %operator, mails = records.len(), "recent mails listed for the help desk");
        crate::metrics::admin_action("list_recent_mails");
        let mails = records
            .into_iter()
            .map(|record| pb::RecentMail {
                masked_recipient: mask_email(&record.recipient),
                delivery: Some(to_proto(record)),
            })
            .collect();
        Ok(Response::new(pb::ListRecentMailsResponse { mails }))
    }

    #[instrument(skip_all, fields(message_id = %request.get_ref().message_id,
        account_id = %request.get_ref().account_id, delivery_id = tracing::field::Empty))]
    async fn send_operator_action_notice(
        &self,
        request: Request<pb::SendOperatorActionNoticeRequest>,
    ) -> Result<Response<pb::SendOperatorActionNoticeResponse>, Status> {
        let req = request.into_inner();
        let now = self.notifier.clock.utc();
        let action = match req.action() {
            pb::OperatorAction::Unlock => Some(OperatorAction::Unlock),
            pb::OperatorAction::RevokeKey => Some(OperatorAction::RevokeKey),
            pb::OperatorAction::CancelReset => Some(OperatorAction::CancelReset),
            pb::OperatorAction::Unspecified => None,
        };
        let fields = OperatorFields {
            message_id: &req.message_id,
            recipient: &req.recipient,
            account_id: &req.account_id,
            action,
            acted_at: req.acted_at.as_ref().and_then(to_datetime),
            locale: &req.locale,
        };
        let max_age = std::time::Duration::from_secs(self.notifier.settings.notice_max_age_secs);
        let message =
            NewMessage::operator_action_notice(&fields, now, max_age).map_err(Error::from)?;
        let delivery_id = self.notifier.enqueue(message, now).await?;
        crate::metrics::admin_action("send_operator_action_notice");
        Ok(Response::new(pb::SendOperatorActionNoticeResponse {
            delivery_id,
        }))
    }
}
