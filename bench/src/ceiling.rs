//! Ceiling services for the same load generator: `kagi.v1.Keystore` servers whose
//! `VerifyCode` does nothing (bare tonic) or one conditional UPDATE (bare database), so the
//! keystore's numbers can be read against what the transport and the database allow.

use kagi_keystore::store::Db;
use kagi_proto::v1 as pb;
use tonic::{Request, Response, Status};

/// What the ceiling's `VerifyCode` does.
#[derive(Debug, Clone)]
pub enum Ceiling {
    /// Answers at once.
    Echo,
    /// One `UPDATE bench_steps SET last_step = $1 WHERE id = $2 AND last_step < $1`.
    Update(Db),
    /// The keystore's minimum for an accepted code: read the account row, then the same
    /// conditional UPDATE (two round trips, no crypto).
    ReadThenUpdate(Db),
}

#[tonic::async_trait]
impl pb::keystore_server::Keystore for Ceiling {
    async fn enroll(
        &self,
        _: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }

    async fn get_current_key(
        &self,
        _: Request<pb::GetCurrentKeyRequest>,
    ) -> Result<Response<pb::GetCurrentKeyResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }

    async fn rotate_key(
        &self,
        _: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }

    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        let result = match self {
            Self::Echo => pb::VerifyResult::Accepted,
            Self::ReadThenUpdate(db) => {
                sqlx::query(
                    "SELECT account_id, current_key_id, key_created_at, algorithm, digits, period, kek_id, nonce, ciphertext, \
                     last_step, failures, lockouts, locked_until FROM accounts WHERE account_id = $1",
                )
                .bind(&request.get_ref().account_id)
                .fetch_optional(db.pool())
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
                conditional_update(db, &request.get_ref().account_id).await?
            }
            Self::Update(db) => conditional_update(db, &request.get_ref().account_id).await?,
        };
        Ok(Response::new(pb::VerifyCodeResponse {
            result: result.into(),
            ..Default::default()
        }))
    }

    async fn check_login_policy(
        &self,
        _: Request<pb::CheckLoginPolicyRequest>,
    ) -> Result<Response<pb::CheckLoginPolicyResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }

    async fn list_audit_events(
        &self,
        _: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }

    async fn check_authenticator(
        &self,
        _: Request<pb::CheckAuthenticatorRequest>,
    ) -> Result<Response<pb::CheckAuthenticatorResponse>, Status> {
        Err(Status::unimplemented("ceiling"))
    }
}

/// `UPDATE bench_steps SET last_step = now WHERE id = $account AND last_step < now`.
async fn conditional_update(db: &Db, account_id: &str) -> Result<pb::VerifyResult, Status> {
    let step = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros(),
    )
    .unwrap_or(i64::MAX);
    let done =
        sqlx::query("UPDATE bench_steps SET last_step = $1 WHERE id = $2 AND last_step < $1")
            .bind(step)
            .bind(account_id)
            .execute(db.pool())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(if done.rows_affected() == 1 {
        pb::VerifyResult::Accepted
    } else {
        pb::VerifyResult::Replayed
    })
}

/// Serves `ceiling` on `listener` until the process is killed.
///
/// # Errors
/// Transport failures.
pub async fn serve(ceiling: Ceiling, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(pb::keystore_server::KeystoreServer::new(ceiling))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
