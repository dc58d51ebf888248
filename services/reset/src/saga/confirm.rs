//! "3. 最終確認" → "4. リセット完了": VERIFIED → CONFIRMING → the keystore's rotation →
//! COMPLETED → the "key reissued" notice. [`ResetSaga::finish`] is also how the sweeper
//! completes a reissue a crash interrupted.

use kagi_proto::timestamp;
use kagi_proto::v1 as pb;
use kagi_proto::v1::ErrorReason;
use tonic::Code;

use crate::domain::state::ms;
use crate::domain::token::{saga_message_stem, saga_tag};
use crate::domain::{ResetState, ResetToken};
use crate::error::{Error, Refusal};
use crate::store::ResetRow;

use super::{ROUNDS, ResetSaga};

impl ResetSaga {
    /// "セットアップキーを再発行する": VERIFIED → CONFIRMING → keystore rotation →
    /// COMPLETED → notice. A retry (CONFIRMING after a crash, or COMPLETED within the view
    /// window) replays the same rotation and returns the same key.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] before a verify or after the windows,
    /// [`Error::KeystoreUnavailable`] (retry), storage failures.
    pub async fn confirm(&self, token: &ResetToken) -> Result<pb::SetupKey, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match row.state {
                ResetState::Verified => {
                    let deadline = row.verified_at.unwrap_or(0) + ms(policy.confirm_within);
                    if now >= deadline {
                        self.inner
                            .db
                            .move_state(
                                &row.token_hash,
                                row.version,
                                ResetState::Verified,
                                ResetState::Expired,
                                now,
                            )
                            .await?;
                        crate::metrics::saga(crate::metrics::SagaEvent::Expired);
                        return Err(Error::IllegalStep(Refusal::ConfirmWindowPassed));
                    }
                    if !self.account_unchanged(&row).await? {
                        self.inner
                            .db
                            .move_state(
                                &row.token_hash,
                                row.version,
                                ResetState::Verified,
                                ResetState::Cancelled,
                                now,
                            )
                            .await?;
                        tracing::warn!(
                            "reissue refused: the account changed since the reset began"
                        );
                        return Err(Error::IllegalStep(Refusal::AccountChanged));
                    }
                    // An account change committed from here on cancels this reset (and
                    // bumps its version), so the move below loses and the next round sees it.
                    if !self
                        .inner
                        .db
                        .move_state(
                            &row.token_hash,
                            row.version,
                            ResetState::Verified,
                            ResetState::Confirming,
                            now,
                        )
                        .await?
                    {
                        continue;
                    }
                    tracing::info!("reissue confirmed");
                    return self.finish(&row).await;
                }
                ResetState::Confirming => return self.finish(&row).await,
                ResetState::Completed => {
                    let until = row.completed_at.unwrap_or(0) + ms(policy.completed_view);
                    if now >= until {
                        return Err(Error::IllegalStep(Refusal::NoLongerShown));
                    }
                    return self.finish(&row).await;
                }
                other => return Err(Error::IllegalStep(other.refusal())),
            }
        }
        Err(Error::Contended)
    }

    /// The rotation (replayed when it already happened), its record, and the notice.
    pub(super) async fn finish(&self, row: &ResetRow) -> Result<pb::SetupKey, Error> {
        let request = pb::RotateKeyRequest {
            account_id: row.account_id.clone(),
            idempotency_key: row.saga_id.clone(),
        };
        let reply = match self
            .inner
            .keystore
            .clone()
            .rotate_key(request)
            .await
            .map_err(keystore_error)
        {
            Ok(reply) => reply.into_inner(),
            Err(refused @ Error::IllegalStep(_)) => {
                // Retrying cannot help; leaving the saga in CONFIRMING would block start-over.
                if self
                    .inner
                    .db
                    .record_abandoned(&row.saga_id, self.now())
                    .await?
                {
                    tracing::warn!(saga = %saga_tag(&row.saga_id), error = %refused, "reissue abandoned: the keystore refused it");
                }
                return Err(refused);
            }
            Err(e) => return Err(e),
        };
        let key = reply
            .key
            .ok_or_else(|| anyhow::anyhow!("the keystore returned no key"))?;
        if let Some(recorded) = &row.new_key_id
            && *recorded != key.key_id
        {
            return Err(
                anyhow::anyhow!("the keystore replayed a different key for this saga").into(),
            );
        }
        if self
            .inner
            .db
            .record_completed(&row.saga_id, &key.key_id, self.now())
            .await?
        {
            tracing::info!(saga = %saga_tag(&row.saga_id), key_id = %key.key_id, replayed = reply.replayed, "setup key reissued");
            crate::metrics::saga(crate::metrics::SagaEvent::Completed);
        }
        // The notice names the time the completion was recorded, whoever recorded it.
        if let Some(done) = self.inner.db.find_saga(&row.saga_id).await? {
            self.send_notice(&done).await;
        }
        Ok(key)
    }

    /// Queues the "key reissued" notice once, to the address the code went to and, when the
    /// account's recovery address has changed since, to the current one as well; a failure
    /// is logged and left to the sweeper, the confirmation itself has succeeded.
    pub(super) async fn send_notice(&self, row: &ResetRow) {
        if row.notice_sent != 0 {
            return;
        }
        let current = match self.inner.directory.lookup(&row.account_id).await {
            Ok(account) => account.map(|a| a.recovery_email),
            Err(e) => {
                tracing::warn!(error = %e, "reissue notice not queued yet: directory unavailable");
                return;
            }
        };
        let mut recipients = vec![(notice_message_id(row, ""), row.recipient.clone())];
        if let Some(current) = current.filter(|c| *c != row.recipient) {
            recipients.push((notice_message_id(row, ":current"), current));
        }
        for (message_id, recipient) in recipients {
            let request = pb::SendKeyReissuedNoticeRequest {
                message_id,
                recipient,
                account_id: row.account_id.clone(),
                reissued_at: Some(timestamp(row.completed_at.unwrap_or(row.updated_at))),
                client_ip: row.client_ip.clone(),
                locale: row.locale.clone(),
            };
            if let Err(status) = self
                .inner
                .notifier
                .clone()
                .send_key_reissued_notice(request)
                .await
            {
                tracing::warn!(code = ?status.code(), "reissue notice not queued yet");
                return;
            }
        }
        if let Err(e) = self.inner.db.record_notice_sent(&row.saga_id).await {
            tracing::warn!(error = %e, "notice queued but not recorded; it will be queued again (same message ID)");
        }
    }

    /// Whether the reset's account still exists, is enabled, and has the recovery address
    /// the reset's codes were mailed to.
    pub(super) async fn account_unchanged(&self, row: &ResetRow) -> Result<bool, Error> {
        let account = self.inner.directory.lookup(&row.account_id).await?;
        Ok(account.is_some_and(|a| a.recovery_email == row.recipient))
    }
}

/// The notifier's message ID of a saga's notice (`suffix` tells a second recipient apart).
fn notice_message_id(row: &ResetRow, suffix: &str) -> String {
    format!("{}:notice{suffix}", saga_message_stem(&row.saga_id))
}

/// The keystore's refusal of a rotation, by its reason: a replay after the keystore's
/// window shows nothing more (the key is seen in menu 1), a later rotation replaced this
/// one's key, or there is no key at all.
fn keystore_error(status: tonic::Status) -> Error {
    match (status.code(), kagi_proto::reason::of(&status)) {
        (Code::FailedPrecondition, ErrorReason::ReplayWindowPassed) => {
            Error::IllegalStep(Refusal::NoLongerShown)
        }
        (Code::FailedPrecondition, _) => Error::IllegalStep(Refusal::KeyReissuedSince),
        (Code::NotFound, _) => Error::IllegalStep(Refusal::NoSetupKey),
        code => {
            tracing::warn!(code = ?code, "keystore RotateKey failed");
            Error::KeystoreUnavailable
        }
    }
}
