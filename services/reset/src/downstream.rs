//! Clients of the keystore and the notifier, built by [`kagi_runtime::client`]: each call
//! carries this service's bearer token (or client certificate) and the W3C trace context,
//! has a deadline, and goes over TLS when the endpoint is `https://`.
//!
//! Every call the saga makes downstream is idempotent by construction (RotateKey carries the
//! saga ID as its idempotency key, each mail its message ID), so each is retried on
//! `UNAVAILABLE` ([`kagi_runtime::client::Retry`]): a keystore replica restarting mid-saga
//! costs a retry, not a failed reset.

use kagi_proto::v1 as pb;
use kagi_runtime::ServiceChannel;
use kagi_runtime::client::{ClientError, ClientSettings, Retry, channel};
use tonic::{Response, Status};

type KeystoreGrpc = pb::keystore_client::KeystoreClient<ServiceChannel>;
type NotifierGrpc = pb::notifier_client::NotifierClient<ServiceChannel>;
type NotifierAdminGrpc = pb::notifier_admin_client::NotifierAdminClient<ServiceChannel>;

/// The keystore calls the saga makes.
#[derive(Debug, Clone)]
pub struct KeystoreClient {
    grpc: KeystoreGrpc,
    retry: Retry,
}

impl KeystoreClient {
    /// RotateKey; replayed by the keystore when the idempotency key was seen before.
    ///
    /// # Errors
    /// The keystore's status after the retries.
    pub async fn rotate_key(
        &mut self,
        request: pb::RotateKeyRequest,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        self.retry
            .idempotent(|| {
                let (mut grpc, request) = (self.grpc.clone(), request.clone());
                async move { grpc.rotate_key(request).await }
            })
            .await
    }
}

/// The notifier calls the saga makes.
#[derive(Debug, Clone)]
pub struct NotifierClient {
    grpc: NotifierGrpc,
    /// The same channel, for the operator notices (`kagi.v1.NotifierAdmin`).
    admin: NotifierAdminGrpc,
    retry: Retry,
}

impl NotifierClient {
    /// SendResetCode; the message ID makes a repeat a no-op.
    ///
    /// # Errors
    /// The notifier's status after the retries.
    pub async fn send_reset_code(
        &mut self,
        request: pb::SendResetCodeRequest,
    ) -> Result<Response<pb::SendResetCodeResponse>, Status> {
        self.retry
            .idempotent(|| {
                let (mut grpc, request) = (self.grpc.clone(), request.clone());
                async move { grpc.send_reset_code(request).await }
            })
            .await
    }

    /// SendKeyReissuedNotice; the message ID makes a repeat a no-op.
    ///
    /// # Errors
    /// The notifier's status after the retries.
    pub async fn send_key_reissued_notice(
        &mut self,
        request: pb::SendKeyReissuedNoticeRequest,
    ) -> Result<Response<pb::SendKeyReissuedNoticeResponse>, Status> {
        self.retry
            .idempotent(|| {
                let (mut grpc, request) = (self.grpc.clone(), request.clone());
                async move { grpc.send_key_reissued_notice(request).await }
            })
            .await
    }

    /// SendOperatorActionNotice; the message ID makes a repeat a no-op.
    ///
    /// # Errors
    /// The notifier's status after the retries.
    pub async fn send_operator_action_notice(
        &mut self,
        request: pb::SendOperatorActionNoticeRequest,
    ) -> Result<Response<pb::SendOperatorActionNoticeResponse>, Status> {
        self.retry
            .idempotent(|| {
                let (mut grpc, request) = (self.admin.clone(), request.clone());
                async move { grpc.send_operator_action_notice(request).await }
            })
            .await
    }

    /// SendKeyDisplayedNotice; the message ID makes a repeat a no-op.
    ///
    /// # Errors
    /// The notifier's status after the retries.
    pub async fn send_key_displayed_notice(
        &mut self,
        request: pb::SendKeyDisplayedNoticeRequest,
    ) -> Result<Response<pb::SendKeyDisplayedNoticeResponse>, Status> {
        self.retry
            .idempotent(|| {
                let (mut grpc, request) = (self.grpc.clone(), request.clone());
                async move { grpc.send_key_displayed_notice(request).await }
            })
            .await
    }
}

/// # Errors
/// A malformed endpoint or token, inconsistent TLS settings, or an unreadable file.
pub fn keystore(settings: &ClientSettings) -> Result<KeystoreClient, ClientError> {
    Ok(KeystoreClient {
        grpc: KeystoreGrpc::new(channel(settings)?),
        retry: settings.retry(),
    })
}

/// # Errors
/// A malformed endpoint or token, inconsistent TLS settings, or an unreadable file.
pub fn notifier(settings: &ClientSettings) -> Result<NotifierClient, ClientError> {
    let channel = channel(settings)?;
    Ok(NotifierClient {
        grpc: NotifierGrpc::new(channel.clone()),
        admin: NotifierAdminGrpc::new(channel),
        retry: settings.retry(),
    })
}
