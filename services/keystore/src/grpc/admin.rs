//! `kagi.v1.KeystoreAdmin` over tonic: the help desk's look-up, unlock and revoke. Only the
//! `helpdesk` caller reaches these (the auth layer's allow list, see `app::DEFAULT_ALLOW`).

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_runtime::OperatorContext;
use kagi_runtime::operator::parse_operator;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::{account, audit_event, caller};
use crate::admin::AccountOverview;
use crate::domain::InvalidInput;
use crate::error::Error;
use crate::service::{Actor, Keystore};

/// The gRPC face of the keystore's admin use cases.
#[derive(Debug, Clone)]
pub struct KeystoreAdminGrpc {
    keystore: Keystore,
}

impl KeystoreAdminGrpc {
    pub fn new(keystore: Keystore) -> Self {
        Self { keystore }
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_server(self) -> pb::keystore_admin_server::KeystoreAdminServer<Self> {
        pb::keystore_admin_server::KeystoreAdminServer::new(self)
            .max_decoding_message_size(super::MAX_REQUEST_BYTES)
    }
}

/// The operator context of an action, checked: a missing one is an empty reason.
fn context(raw: Option<&pb::OperatorContext>) -> Result<OperatorContext, Error> {
    let (operator, reason) = raw.map_or(("", ""), |c| (c.operator.as_str(), c.reason.as_str()));
    Ok(OperatorContext::parse(operator, reason).map_err(InvalidInput::from)?)
}

fn overview_reply(overview: AccountOverview) -> Result<pb::GetAccountResponse, Error> {
    let r = overview.record;
    let algorithm = match r.algorithm.as_str() {
        "SHA1" => pb::HashAlgorithm::Sha1,
        "SHA256" => pb::HashAlgorithm::Sha256,
        "SHA512" => pb::HashAlgorithm::Sha512,
        _ => pb::HashAlgorithm::Unspecified,
    };
    let to_u32 = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(pb::GetAccountResponse {
        account_id: r.account_id,
        enrolled: r.revoked_at.is_none(),
        key_id: r.current_key_id,
        key_created_at: Some(timestamp(r.key_created_at)),
        reissued: r.key_created_at > r.created_at,
        algorithm: algorithm.into(),
        digits: to_u32(r.digits),
        period_seconds: to_u32(r.period),
        revoked_at: r.revoked_at.map(timestamp),
        lockout: Some(pb::LockoutState {
            failures: to_u32(r.failures),
            locked_until: r.locked_until.map(timestamp),
            times_locked: to_u32(r.lockouts),
        }),
        last_login_at: overview.last_login.map(|(at, _)| timestamp(at)),
        last_login_drift_steps: overview.last_login.map_or(0, |(_, drift)| drift),
        recent_events: overview
            .recent_events
            .into_iter()
            .map(audit_event)
            .collect(),
    })
}

#[tonic::async_trait]
impl pb::keystore_admin_server::KeystoreAdmin for KeystoreAdminGrpc {
    #[instrument(name = "KeystoreAdmin.GetAccount", skip_all, fields(account_id = tracing::field::Empty))]
    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let operator =
            parse_operator(&req.operator).map_err(|e| Error::from(InvalidInput::from(e)))?;
        let overview = self
            .keystore
            .admin_overview(actor, &operator, &account)
            .await?;
        crate::metrics::admin_action("get_account");
        Ok(Response::new(overview_reply(overview)?))
    }

    #[instrument(name = "KeystoreAdmin.UnlockAccount", skip_all, fields(account_id = tracing::field::Empty))]
    async fn unlock_account(
        &self,
        request: Request<pb::UnlockAccountRequest>,
    ) -> Result<Response<pb::UnlockAccountResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let context = context(req.context.as_ref())?;
        let was_locked = self
            .keystore
            .admin_unlock(actor, &account, &context)
            .await?;
        crate::metrics::admin_action("unlock");
        Ok(Response::new(pb::UnlockAccountResponse { was_locked }))
    }

    #[instrument(name = "KeystoreAdmin.RevokeKey", skip_all, fields(account_id = tracing::field::Empty))]
    async fn revoke_key(
        &self,
        request: Request<pb::RevokeKeyRequest>,
    ) -> Result<Response<pb::RevokeKeyResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let req = request.get_ref();
        let account = account(&req.account_id)?;
        let context = context(req.context.as_ref())?;
        let revoked_key_id = self
            .keystore
            .admin_revoke(actor, &account, &context)
            .await?;
        crate::metrics::admin_action("revoke_key");
        Ok(Response::new(pb::RevokeKeyResponse { revoked_key_id }))
    }
}
