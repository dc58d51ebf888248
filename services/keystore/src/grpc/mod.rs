//! `kagi.v1.Keystore` over tonic: validate the request, call the use case, shape the reply.
//! [`admin`] is `kagi.v1.KeystoreAdmin`, the help desk's contract, served beside it.

pub mod admin;

use std::sync::Arc;

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_runtime::Caller;
use tonic::{Request, Response, Status};
use tracing::instrument;

use crate::domain::Diagnosis;
use crate::domain::setup_key::Algorithm;
use crate::domain::{AccountId, IdempotencyKey, InvalidInput, OneTimeCode};
use crate::error::Error;
use crate::render::{self, Forms};
use crate::service::{Actor, CheckReport, Keystore, RevealedKey, Verification};

/// Largest request the keystore decodes: its messages are a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// The gRPC face of a [`Keystore`].
#[derive(Debug, Clone)]
pub struct KeystoreGrpc {
    keystore: Keystore,
    /// The issuer of keys issued before each key recorded its own (`totp.issuer`).
    issuer: Arc<str>,
}

impl KeystoreGrpc {
    pub fn new(keystore: Keystore, issuer: &str) -> Self {
        Self {
            keystore,
            issuer: issuer.into(),
        }
    }

    /// The tonic service, with the request size limit applied.
    pub fn into_server(self) -> pb::keystore_server::KeystoreServer<Self> {
        pb::keystore_server::KeystoreServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// The reply's key in the asked-for `forms`. A QR code is bulk CPU work (hundreds of
    /// microseconds on a key's first drawing), so it is drawn on a blocking thread, with
    /// the request's span, like other bulk crypto; the text forms alone are not worth the
    /// hop. A key drawn for the first time has its mask choice remembered.
    async fn setup_key(&self, key: RevealedKey, forms: Forms) -> Result<pb::SetupKey, Error> {
        if !(forms.qr_png || forms.qr_svg) {
            return Ok(setup_key_message(&self.issuer, &key, forms)?.0);
        }
        let (account, key_id) = (key.account.clone(), key.key_id.clone());
        let issuer = self.issuer.clone();
        let span = tracing::Span::current();
        let (message, new_mask) = tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            setup_key_message(&issuer, &key, forms)
        })
        .await
        .map_err(|e| anyhow::anyhow!("rendering the key: {e}"))??;
        if let Some(mask) = new_mask {
            self.keystore
                .remember_qr_mask(&account, &key_id, mask)
                .await;
        }
        Ok(message)
    }
}

/// The key's message, and the QR mask chosen if the key was drawn for the first time.
fn setup_key_message(
    issuer: &str,
    key: &RevealedKey,
    forms: Forms,
) -> Result<(pb::SetupKey, Option<u8>), Error> {
    let rendered =
        render::render(issuer, key, forms).map_err(|e| anyhow::anyhow!("QR encoding: {e}"))?;
    let message = pb::SetupKey {
        account_id: key.account.to_string(),
        key_id: key.key_id.clone(),
        created_at: Some(timestamp(key.created_at_ms)),
        secret_base32: key.secret.to_base32().to_string(),
        otpauth_uri: rendered.uri.to_string(),
        qr_png: rendered.qr_png,
        qr_svg: rendered.qr_svg,
        algorithm: match key.params.algorithm {
            Algorithm::Sha1 => pb::HashAlgorithm::Sha1,
            Algorithm::Sha256 => pb::HashAlgorithm::Sha256,
            Algorithm::Sha512 => pb::HashAlgorithm::Sha512,
        }
        .into(),
        digits: key.params.digits,
        period_seconds: key.params.period,
        issuer: key.issuer.clone().unwrap_or_else(|| issuer.to_owned()),
    };
    Ok((message, rendered.new_qr_mask))
}

/// The authenticated caller, put there by the auth layer.
fn caller<T>(request: &Request<T>) -> Result<&str, Status> {
    request
        .extensions()
        .get::<Caller>()
        .map(|c| c.0.as_str())
        .ok_or_else(|| Status::unauthenticated("missing bearer token"))
}

/// Parses the account ID and records it on the current span (only once it is valid, so
/// nothing a caller sends lands in logs unchecked).
fn account(raw: &str) -> Result<AccountId, Error> {
    let account = AccountId::parse(raw).map_err(InvalidInput::from)?;
    tracing::Span::current().record("account_id", account.as_str());
    Ok(account)
}

#[tonic::async_trait]
impl pb::keystore_server::Keystore for KeystoreGrpc {
    #[instrument(name = "Keystore.Enroll", skip_all, fields(account_id = tracing::field::Empty))]
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let account = account(&request.get_ref().account_id)?;
        let key = self.keystore.enroll(actor, account).await?;
        Ok(Response::new(pb::EnrollResponse {
            key: Some(self.setup_key(key, Forms::ALL).await?),
        }))
    }

    #[instrument(name = "Keystore.GetCurrentKey", skip_all, fields(account_id = tracing::field::Empty))]
    async fn get_current_key(
        &self,
        request: Request<pb::GetCurrentKeyRequest>,
    ) -> Result<Response<pb::GetCurrentKeyResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let account = account(&request.get_ref().account_id)?;
        let forms = Forms::from_request(&request.get_ref().forms);
        let key = self.keystore.current_key(actor, account).await?;
        Ok(Response::new(pb::GetCurrentKeyResponse {
            key: Some(self.setup_key(key, forms).await?),
        }))
    }

    #[instrument(name = "Keystore.RotateKey", skip_all, fields(account_id = tracing::field::Empty))]
    async fn rotate_key(
        &self,
        request: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let account = account(&request.get_ref().account_id)?;
        let idempotency =
            IdempotencyKey::parse(&request.get_ref().idempotency_key).map_err(Error::from)?;
        let rotation = self.keystore.rotate(actor, account, idempotency).await?;
        crate::metrics::rotated(rotation.replayed);
        Ok(Response::new(pb::RotateKeyResponse {
            key: Some(self.setup_key(rotation.key, Forms::ALL).await?),
            previous_key_id: rotation.previous_key_id.unwrap_or_default(),
            replayed: rotation.replayed,
        }))
    }

    #[instrument(name = "Keystore.VerifyCode", skip_all, fields(account_id = tracing::field::Empty, result = tracing::field::Empty))]
    async fn verify_code(
        &self,
        request: Request<pb::VerifyCodeRequest>,
    ) -> Result<Response<pb::VerifyCodeResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let account = account(&request.get_ref().account_id)?;
        OneTimeCode::check_shape(&request.get_ref().code).map_err(Error::from)?;
        let outcome = self
            .keystore
            .verify(actor, account, &request.get_ref().code)
            .await?;
        let mut reply = pb::VerifyCodeResponse::default();
        let result = match outcome {
            Verification::Accepted { drift } => {
                reply.drift_steps = drift;
                pb::VerifyResult::Accepted
            }
            Verification::Replayed { drift } => {
                reply.drift_steps = drift;
                pb::VerifyResult::Replayed
            }
            Verification::Rejected {
                attempts_remaining,
                locked_until_ms,
            } => {
                reply.attempts_remaining = attempts_remaining;
                reply.locked_until = locked_until_ms.map(timestamp);
                pb::VerifyResult::Rejected
            }
            Verification::LockedOut { until_ms } => {
                reply.locked_until = Some(timestamp(until_ms));
                pb::VerifyResult::LockedOut
            }
            Verification::NoKey => pb::VerifyResult::NoKey,
        };
        tracing::Span::current().record("result", result.as_str_name());
        let matched = matches!(
            result,
            pb::VerifyResult::Accepted | pb::VerifyResult::Replayed
        );
        crate::metrics::verified(
            result.as_str_name().trim_start_matches("VERIFY_RESULT_"),
            matched.then_some(reply.drift_steps),
        );
        reply.result = result.into();
        Ok(Response::new(reply))
    }

    #[instrument(name = "Keystore.CheckLoginPolicy", skip_all)]
    async fn check_login_policy(
        &self,
        request: Request<pb::CheckLoginPolicyRequest>,
    ) -> Result<Response<pb::CheckLoginPolicyResponse>, Status> {
        let ip = request
            .get_ref()
            .client_ip
            .trim()
            .parse()
            .map_err(|_| Error::from(InvalidInput::ClientIp))?;
        let matched = self.keystore.campus_network(ip);
        Ok(Response::new(pb::CheckLoginPolicyResponse {
            otp_required: matched.is_none(),
            matched_network: matched.unwrap_or_default(),
        }))
    }

    #[instrument(name = "Keystore.ListAuditEvents", skip_all)]
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.get_ref();
        let account = if req.account_id.is_empty() {
            None
        } else {
            Some(account(&req.account_id)?)
        };
        let limit = match req.page_size {
            0 => 100,
            n @ 1..=1000 => i64::from(n),
            _ => return Err(Error::from(InvalidInput::PageSize).into()),
        };
        let events = self
            .keystore
            .db()
            .audit_events(account.as_ref().map(AccountId::as_str), req.before, limit)
            .await
            .map_err(Error::from)?;
        let next_before = if events.len() == usize::try_from(limit).unwrap_or(usize::MAX) {
            events.last().map_or(0, |e| e.seq)
        } else {
            0
        };
        let events = events.into_iter().map(audit_event).collect();
        Ok(Response::new(pb::ListAuditEventsResponse {
            events,
            next_before,
        }))
    }

    #[instrument(name = "Keystore.CheckAuthenticator", skip_all, fields(account_id = tracing::field::Empty, outcome = tracing::field::Empty))]
    async fn check_authenticator(
        &self,
        request: Request<pb::CheckAuthenticatorRequest>,
    ) -> Result<Response<pb::CheckAuthenticatorResponse>, Status> {
        let actor = Actor {
            caller: caller(&request)?,
        };
        let account = account(&request.get_ref().account_id)?;
        OneTimeCode::check_shape(&request.get_ref().code).map_err(Error::from)?;
        let report = match self
            .keystore
            .check_authenticator(actor, account, &request.get_ref().code)
            .await
        {
            Ok(report) => report,
            Err(err @ Error::CheckLimited { .. }) => {
                crate::metrics::checked("RATE_LIMITED");
                return Err(err.into());
            }
            Err(err) => return Err(err.into()),
        };
        let reply = check_reply(report);
        let outcome = reply.outcome();
        tracing::Span::current().record("outcome", outcome.as_str_name());
        crate::metrics::checked(
            outcome
                .as_str_name()
                .trim_start_matches("CHECK_AUTHENTICATOR_OUTCOME_"),
        );
        Ok(Response::new(reply))
    }
}

/// A check's report as the contract says it.
fn check_reply(report: CheckReport) -> pb::CheckAuthenticatorResponse {
    use pb::CheckAuthenticatorOutcome as Outcome;
    let CheckReport::Checked {
        diagnosis,
        period,
        checks_remaining,
    } = report
    else {
        let mut reply = pb::CheckAuthenticatorResponse::default();
        reply.set_outcome(Outcome::NoKey);
        return reply;
    };
    let (outcome, drift) = match diagnosis {
        Diagnosis::Ready { drift } => (Outcome::Ready, drift),
        Diagnosis::ClockSkewed { drift } => (Outcome::ClockSkewed, drift),
        Diagnosis::NoMatch => (Outcome::NoMatch, 0),
    };
    pb::CheckAuthenticatorResponse {
        outcome: outcome.into(),
        drift_steps: drift,
        offset_seconds: i64::from(drift) * i64::from(period),
        checks_remaining,
    }
}

/// A recorded audit event as the contract shows it.
fn audit_event(e: crate::store::AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        sequence: e.seq,
        at: Some(timestamp(e.at)),
        caller: e.caller,
        action: e.action,
        account_id: e.account_id,
        key_id: e.key_id,
        detail: e.detail,
        trace_id: e.trace_id,
    }
}
