//! The `kagi.v1.Notifier` gRPC service: validate, queue durably, wake the worker, map errors.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_server::Notifier;
use kagi_runtime::Clock;
use tokio::sync::Notify;
use tonic::{Request, Response, Status};
use tracing::instrument;
use zeroize::{Zeroize as _, Zeroizing};

use crate::config::DeliverySettings;
use crate::domain::{DeliveryState, DisplayedFields, MessageKind, NewMessage, NoticeFields};
use crate::error::Error;
use crate::seal::PayloadSeal;
use crate::store::{Db, DeliveryRecord, Enqueued};

/// Callers admitted to each RPC unless the settings say otherwise: the reset saga.
pub const DEFAULT_ALLOW: &[(&str, &[&str])] = &[
    ("SendResetCode", &["reset"]),
    ("SendKeyReissuedNotice", &["reset"]),
    ("SendKeyDisplayedNotice", &["reset"]),
    ("GetDelivery", &["reset"]),
    // kagi.v1.NotifierAdmin: the help desk looks; only the reset service (which holds the
    // address) sends an operator's notice.
    ("ListRecentMails", &["helpdesk"]),
    ("SendOperatorActionNotice", &["reset"]),
];

/// The gRPC face of the queue.
#[derive(Debug)]
pub struct NotifierService {
    pub store: Db,
    pub clock: Arc<dyn Clock>,
    pub wake: Arc<Notify>,
    pub settings: DeliverySettings,
    /// Seals each payload before it is stored.
    pub seal: Arc<PayloadSeal>,
}

const HOUR_MS: i64 = 3_600_000;

impl NotifierService {
    /// Queues a validated message once per message ID and returns its delivery ID.
    pub(crate) async fn enqueue(
        &self,
        message: NewMessage,
        now: DateTime<Utc>,
    ) -> Result<String, Error> {
        let id = uuid::Uuid::new_v4().to_string();
        let json =
            Zeroizing::new(serde_json::to_string(&message.payload).map_err(anyhow::Error::from)?);
        let payload = self.seal.seal(&id, json.as_bytes())?;
        let now_ms = now.timestamp_millis();
        // Each kind that has an allowance counts only its own kind: notices of displayed
        // keys never use up the reset codes' allowance.
        let limit = match message.kind {
            MessageKind::ResetCode => self.settings.reset_codes_per_recipient_per_hour,
            MessageKind::KeyDisplayedNotice => {
                self.settings.key_display_notices_per_recipient_per_hour
            }
            // Only a human operator's action sends these: no allowance needed.
            MessageKind::KeyReissuedNotice | MessageKind::OperatorActionNotice => 0,
        };
        let rate_limit = (limit > 0).then(|| (now_ms - HOUR_MS, i64::from(limit)));
        match self
            .store
            .enqueue(&id, &message, &payload, now_ms, rate_limit)
            .await?
        {
            Enqueued::Created(id) => {
                self.wake.notify_one();
                tracing::Span::current().record("delivery_id", id.as_str());
                tracing::info!("mail queued");
                Ok(id)
            }
            Enqueued::Existing(existing) => {
                let same = existing.kind == message.kind
                    && existing
                        .recipient
                        .eq_ignore_ascii_case(message.recipient.as_ref())
                    && existing.account_id == message.account_id;
                if !same {
                    return Err(Error::MessageIdReused);
                }
                tracing::Span::current().record("delivery_id", existing.id.as_str());
                tracing::info!("message_id seen before; nothing new queued");
                Ok(existing.id)
            }
            Enqueued::RateLimited => {
                tracing::warn!(
                    kind = message.kind.as_str(),
                    "mail refused by the per-recipient rate limit"
                );
                Err(Error::RateLimited)
            }
        }
    }
}

#[tonic::async_trait]
impl Notifier for NotifierService {
    #[instrument(skip_all, fields(message_id = %request.get_ref().message_id,
        account_id = %request.get_ref().account_id, delivery_id = tracing::field::Empty))]
    async fn send_reset_code(
        &self,
        request: Request<pb::SendResetCodeRequest>,
    ) -> Result<Response<pb::SendResetCodeResponse>, Status> {
        let mut req = request.into_inner();
        let now = self.clock.utc();
        let parsed = NewMessage::reset_code(
            &req.message_id,
            &req.recipient,
            &req.account_id,
            &req.code,
            req.expires_at.as_ref().and_then(to_datetime),
            &req.locale,
            now,
        );
        req.code.zeroize();
        let delivery_id = self.enqueue(parsed.map_err(Error::from)?, now).await?;
        Ok(Response::new(pb::SendResetCodeResponse { delivery_id }))
    }

    #[instrument(skip_all, fields(message_id = %request.get_ref().message_id,
        account_id = %request.get_ref().account_id, delivery_id = tracing::field::Empty))]
    async fn send_key_reissued_notice(
        &self,
        request: Request<pb::SendKeyReissuedNoticeRequest>,
    ) -> Result<Response<pb::SendKeyReissuedNoticeResponse>, Status> {
        let req = request.into_inner();
        let now = self.clock.utc();
        let fields = NoticeFields {
            message_id: &req.message_id,
            recipient: &req.recipient,
            account_id: &req.account_id,
            reissued_at: req.reissued_at.as_ref().and_then(to_datetime),
            client_ip: &req.client_ip,
            locale: &req.locale,
        };
        let max_age = std::time::Duration::from_secs(self.settings.notice_max_age_secs);
        let message =
            NewMessage::key_reissued_notice(&fields, now, max_age).map_err(Error::from)?;
        let delivery_id = self.enqueue(message, now).await?;
        Ok(Response::new(pb::SendKeyReissuedNoticeResponse {
            delivery_id,
        }))
    }

    #[instrument(skip_all, fields(message_id = %request.get_ref().message_id,
        account_id = %request.get_ref().account_id, delivery_id = tracing::field::Empty))]
    async fn send_key_displayed_notice(
        &self,
        request: Request<pb::SendKeyDisplayedNoticeRequest>,
    ) -> Result<Response<pb::SendKeyDisplayedNoticeResponse>, Status> {
        let req = request.into_inner();
        let now = self.clock.utc();
        let fields = DisplayedFields {
            message_id: &req.message_id,
            recipient: &req.recipient,
            account_id: &req.account_id,
            displayed_at: req.displayed_at.as_ref().and_then(to_datetime),
            client_ip: &req.client_ip,
            user_agent: &req.user_agent,
            locale: &req.locale,
        };
        let max_age = std::time::Duration::from_secs(self.settings.notice_max_age_secs);
        let message =
            NewMessage::key_displayed_notice(&fields, now, max_age).map_err(Error::from)?;
        let delivery_id = self.enqueue(message, now).await?;
        Ok(Response::new(pb::SendKeyDisplayedNoticeResponse {
            delivery_id,
        }))
    }

    #[instrument(skip_all, fields(delivery_id = %request.get_ref().delivery_id))]
    async fn get_delivery(
        &self,
        request: Request<pb::GetDeliveryRequest>,
    ) -> Result<Response<pb::GetDeliveryResponse>, Status> {
        let record = self
            .store
            .get(&request.get_ref().delivery_id)
            .await
            .map_err(Error::from)?
            .ok_or(Error::NotFound)?;
        Ok(Response::new(pb::GetDeliveryResponse {
            delivery: Some(to_proto(record)),
        }))
    }
}

pub(crate) fn to_datetime(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

pub(crate) fn to_proto(record: DeliveryRecord) -> pb::Delivery {
    let state = match record.state {
        DeliveryState::Queued => pb::DeliveryState::Queued,
        DeliveryState::Sent => pb::DeliveryState::Sent,
        DeliveryState::Failed => pb::DeliveryState::Failed,
    };
    let kind = match record.kind {
        MessageKind::ResetCode => pb::MessageKind::ResetCode,
        MessageKind::KeyReissuedNotice => pb::MessageKind::KeyReissuedNotice,
        MessageKind::KeyDisplayedNotice => pb::MessageKind::KeyDisplayedNotice,
        MessageKind::OperatorActionNotice => pb::MessageKind::OperatorActionNotice,
    };
    pb::Delivery {
        delivery_id: record.id,
        message_id: record.message_id,
        kind: kind.into(),
        state: state.into(),
        attempts: u32::try_from(record.attempts).unwrap_or(u32::MAX),
        last_reply: record.last_reply.unwrap_or_default(),
        queued_at: Some(timestamp(record.created_at)),
        sent_at: record.sent_at.map(timestamp),
        next_attempt_at: (record.state == DeliveryState::Queued)
            .then(|| timestamp(record.next_attempt_at)),
    }
}
