//! The help desk's use cases (`kagi.v1.ResetAdmin`): an account's newest reset, cancelling
//! the one in progress, and mailing the user about an operator's action. The reset service
//! owns the recovery address, so every operator notice leaves from here, for the keystore's
//! actions too. Each look and action is recorded in `admin_audit` with the operator.

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_runtime::OperatorContext;

use crate::domain::token::saga_message_stem;
use crate::domain::{ResetState, mask_email};
use crate::error::{Error, Refusal};
use crate::store::{AdminEvent, NewAdminEvent, ResetRow};

use super::{ROUNDS, ResetSaga, effective};

/// How many trail entries a look-up returns.
pub const RECENT_ADMIN_EVENTS: i64 = 20;

/// The newest reset of an account as the help desk sees it.
#[derive(Debug)]
pub struct AccountResets {
    pub masked_recipient: String,
    /// The newest reset and what its state means now.
    pub latest: Option<(ResetRow, ResetState)>,
    pub recent_events: Vec<AdminEvent>,
}

/// Who acts through which calling service.
#[derive(Debug, Clone, Copy)]
pub struct AdminActor<'a> {
    pub caller: &'a str,
}

impl ResetSaga {
    /// The account's masked address, newest reset and the help desk's trail. Audited as
    /// `admin_view`.
    ///
    /// # Errors
    /// [`Error::Directory`], storage failures.
    pub async fn admin_resets(
        &self,
        actor: AdminActor<'_>,
        operator: &kagi_runtime::AccountId,
        account_id: &str,
    ) -> Result<AccountResets, Error> {
        let look = self.event(
            actor,
            "admin_view",
            account_id,
            format!("operator={operator}"),
        );
        self.inner.db.record_look(&look).await?;
        let masked_recipient = self
            .inner
            .directory
            .lookup(account_id)
            .await?
            .map(|a| mask_email(&a.recovery_email))
            .unwrap_or_default();
        let now = self.now();
        let latest = self.inner.db.latest_reset(account_id).await?.map(|row| {
            let state = effective(&row, now, &self.inner.policy);
            (row, state)
        });
        let recent_events = self
            .inner
            .db
            .admin_events(account_id, RECENT_ADMIN_EVENTS)
            .await?;
        Ok(AccountResets {
            masked_recipient,
            latest,
            recent_events,
        })
    }

    /// Cancels the account's reset in progress (its code stops working), records it and
    /// mails the user. Returns the state it was in and whether the mail was queued.
    ///
    /// # Errors
    /// [`Error::NoResetInProgress`]; [`Error::IllegalStep`] while its reissue is being
    /// confirmed; [`Error::Contended`]; storage failures. A mail that cannot be queued
    /// leaves the cancellation standing and answers `notified = false`.
    pub async fn admin_cancel(
        &self,
        actor: AdminActor<'_>,
        account_id: &str,
        context: &OperatorContext,
        locale: &'static str,
    ) -> Result<(ResetState, bool), Error> {
        for _ in 0..ROUNDS {
            let row = self
                .inner
                .db
                .latest_reset(account_id)
                .await?
                .ok_or(Error::NoResetInProgress)?;
            let now = self.now();
            let state = effective(&row, now, &self.inner.policy);
            match state {
                ResetState::CodeSent | ResetState::Verified => {}
                ResetState::Confirming => return Err(Error::IllegalStep(Refusal::NotCancellable)),
                _ => return Err(Error::NoResetInProgress),
            }
            let detail = context.audit_detail();
            let event = self.event(actor, "admin_cancel_reset", account_id, detail);
            let moved = self
                .inner
                .db
                .cancel_by_operator(&row.token_hash, row.version, row.state, &event)
                .await?;
            if !moved {
                continue;
            }
            tracing::info!(operator = %context.operator, "reset cancelled by an operator");
            let notice = OperatorNotice {
                account_id,
                action: pb::OperatorAction::CancelReset,
                notice_id: &format!("cancel:{}", saga_message_stem(&row.saga_id)),
                acted_at: now,
                locale,
            };
            let notified = match self.mail_operator_notice(&notice).await {
                Ok(queued) => queued,
                Err(e) => {
                    tracing::warn!(error = %e, "operator notice not queued; the cancellation stands");
                    false
                }
            };
            return Ok((state, notified));
        }
        Err(Error::Contended)
    }

    /// Mails the user that an operator unlocked the account or revoked its key (the
    /// keystore's actions: it holds no address). Recorded as `admin_notify`.
    ///
    /// # Errors
    /// [`Error::MailRateLimited`], [`Error::MailUnavailable`], [`Error::Directory`],
    /// storage failures.
    pub async fn admin_notify(
        &self,
        actor: AdminActor<'_>,
        context: &OperatorContext,
        notice: &OperatorNotice<'_>,
    ) -> Result<bool, Error> {
        let queued = self.mail_operator_notice(notice).await?;
        let detail = format!(
            "{} action={} queued={queued}",
            context.audit_detail(),
            notice.action.as_str_name()
        );
        self.record(actor, "admin_notify", notice.account_id, detail)
            .await?;
        Ok(queued)
    }

    /// Queues the notice to the account's current recovery address; `false` without an
    /// enabled directory entry.
    async fn mail_operator_notice(&self, notice: &OperatorNotice<'_>) -> Result<bool, Error> {
        let Some(account) = self.inner.directory.lookup(notice.account_id).await? else {
            tracing::info!("operator action on an account without a directory entry; no notice");
            return Ok(false);
        };
        let request = pb::SendOperatorActionNoticeRequest {
            message_id: format!(
                "{}:operator",
                saga_message_stem(&format!("{}\n{}", notice.account_id, notice.notice_id))
            ),
            recipient: account.recovery_email,
            account_id: notice.account_id.to_owned(),
            action: notice.action.into(),
            acted_at: Some(timestamp(notice.acted_at)),
            locale: notice.locale.to_owned(),
        };
        self.inner
            .notifier
            .clone()
            .send_operator_action_notice(request)
            .await
            .map_err(|status| {
                tracing::warn!(code = ?status.code(), "operator notice not queued");
                if status.code() == tonic::Code::ResourceExhausted {
                    Error::MailRateLimited
                } else {
                    Error::MailUnavailable
                }
            })?;
        Ok(true)
    }

    async fn record(
        &self,
        actor: AdminActor<'_>,
        action: &str,
        account_id: &str,
        detail: String,
    ) -> Result<(), Error> {
        let event = self.event(actor, action, account_id, detail);
        Ok(self.inner.db.admin_audit(&event).await?)
    }

    fn event<'a>(
        &self,
        actor: AdminActor<'a>,
        action: &'a str,
        account_id: &'a str,
        detail: String,
    ) -> NewAdminEvent<'a> {
        NewAdminEvent {
            at: self.now(),
            caller: actor.caller,
            action,
            account_id,
            detail,
            trace_id: kagi_runtime::telemetry::current_trace_id().unwrap_or_default(),
        }
    }
}

/// One mail about an operator's action.
#[derive(Debug)]
pub struct OperatorNotice<'a> {
    pub account_id: &'a str,
    pub action: pb::OperatorAction,
    /// The caller's ID of this action: a retry with it mails nothing new.
    pub notice_id: &'a str,
    pub acted_at: i64,
    pub locale: &'static str,
}
