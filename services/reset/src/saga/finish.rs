//! From "2. 再設定メールを送信" to "4. リセット完了": verifying the code, confirming the
//! reissue through the keystore, cancelling, reloading, and the sweeper that finishes what a
//! crash interrupted.

use super::*;

impl ResetSaga {
    /// "コードを確認する": right code → VERIFIED; wrong → one attempt fewer; the last
    /// wrong one locks the reset.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once past CODE_SENT (except LOCKED and EXPIRED, which are
    /// outcomes), storage failures.
    pub async fn verify(
        &self,
        token: &ResetToken,
        code: &ConfirmationCode,
    ) -> Result<CodeOutcome, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            match stored_state(&row)? {
                ResetState::CodeSent => {}
                ResetState::Locked => return Ok(CodeOutcome::Locked),
                ResetState::Expired => return Ok(CodeOutcome::Expired),
                other => return Err(Error::IllegalStep(other.refusal())),
            }
            if now >= row.code_expires_at {
                self.inner
                    .db
                    .move_state(&row.token_hash, row.version, "code_sent", "expired", now)
                    .await?;
                return Ok(CodeOutcome::Expired);
            }
            // Every outcome is decided only once its write wins, so parallel guesses cannot
            // get past the cap.
            if self
                .inner
                .hasher
                .matches(&row.saga_id, code, &row.code_hash)
            {
                if self
                    .inner
                    .db
                    .record_verified(&row.token_hash, row.version, now)
                    .await?
                {
                    tracing::info!("code verified");
                    return Ok(CodeOutcome::Verified {
                        confirm_by: now + ms(policy.confirm_within),
                    });
                }
            } else if self
                .inner
                .db
                .record_wrong_code(&row.token_hash, row.version, policy.max_wrong_codes, now)
                .await?
            {
                let wrong = u32::try_from(row.wrong_attempts + 1).unwrap_or(u32::MAX);
                tracing::info!(wrong_attempts = wrong, "wrong code");
                if wrong >= policy.max_wrong_codes {
                    tracing::warn!("reset locked after too many wrong codes");
                    return Ok(CodeOutcome::Locked);
                }
                return Ok(CodeOutcome::WrongCode {
                    attempts_remaining: policy.max_wrong_codes - wrong,
                });
            }
        }
        Err(Error::Contended)
    }

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
            match stored_state(&row)? {
                ResetState::Verified => {
                    let deadline = row.verified_at.unwrap_or(0) + ms(policy.confirm_within);
                    if now >= deadline {
                        self.inner
                            .db
                            .move_state(&row.token_hash, row.version, "verified", "expired", now)
                            .await?;
                        return Err(Error::IllegalStep(
                            "the 10 minutes to confirm have passed; start again",
                        ));
                    }
                    if !self
                        .inner
                        .db
                        .move_state(&row.token_hash, row.version, "verified", "confirming", now)
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
                        return Err(Error::IllegalStep(
                            "the new key was issued and can no longer be shown here; view it with 現在のセットアップキーを表示する",
                        ));
                    }
                    return self.finish(&row).await;
                }
                other => return Err(Error::IllegalStep(other.refusal())),
            }
        }
        Err(Error::Contended)
    }

    /// "最初からやり直す": ends a reset not yet confirmed. Already-over resets stay as
    /// they are.
    ///
    /// # Errors
    /// [`Error::IllegalStep`] once confirmed.
    pub async fn cancel(&self, token: &ResetToken) -> Result<ResetState, Error> {
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            let stored = stored_state(&row)?;
            match effective(&row, now, &self.inner.policy)? {
                ResetState::CodeSent | ResetState::Verified => {
                    if self
                        .inner
                        .db
                        .move_state(
                            &row.token_hash,
                            row.version,
                            stored.as_str(),
                            "cancelled",
                            now,
                        )
                        .await?
                    {
                        tracing::info!("reset cancelled");
                        return Ok(ResetState::Cancelled);
                    }
                }
                ResetState::Confirming | ResetState::Completed => {
                    return Err(Error::IllegalStep(
                        "the reissue was already confirmed and cannot be cancelled",
                    ));
                }
                over => return Ok(over),
            }
        }
        Err(Error::Contended)
    }

    /// Where a reset stands, for a page reload.
    ///
    /// # Errors
    /// [`Error::UnknownReset`], storage failures.
    pub async fn get(&self, token: &ResetToken) -> Result<ResetView, Error> {
        let row = self.load(token).await?;
        let now = self.now();
        let policy = &self.inner.policy;
        let state = effective(&row, now, policy)?;
        let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
        let wrong = u32::try_from(row.wrong_attempts).unwrap_or(u32::MAX);
        Ok(ResetView {
            state,
            masked_recipient: mask_email(&row.recipient),
            code_expires_at: row.code_expires_at,
            resend_after: row
                .last_sent_at
                .map_or(now, |l| l + ms(policy.resend_after)),
            resends_remaining: policy.max_resends.saturating_sub(resends_done),
            attempts_remaining: policy.max_wrong_codes.saturating_sub(wrong),
            confirm_by: row.verified_at.map(|v| v + ms(policy.confirm_within)),
        })
    }

    /// Finishes what a crash or an outage left: reissues stuck in CONFIRMING, notices not
    /// yet queued; forgets old rate-limit events. Returns the number of sagas completed.
    ///
    /// # Errors
    /// Storage failures (downstream failures are logged and retried next time).
    pub async fn sweep(&self) -> Result<usize, Error> {
        let mut completed = 0;
        for row in self.inner.db.confirming_sagas(50).await? {
            match self.finish(&row).await {
                Ok(_) => completed += 1,
                Err(e) => {
                    tracing::warn!(saga_id = %row.saga_id, error = %e, "interrupted reissue not finished yet");
                }
            }
        }
        let now = self.now();
        let day = 24 * 3600 * 1000;
        for row in self.inner.db.pending_notices(now - day, 50).await? {
            self.send_notice(&row).await;
        }
        let limits = self.inner.limits;
        let oldest = now - limits.per_ip_window_ms.max(limits.per_account_window_ms);
        self.inner.db.prune_rate_events(oldest).await?;
        Ok(completed)
    }

    /// The rotation (replayed when it already happened), its record, and the notice.
    async fn finish(&self, row: &ResetRow) -> Result<pb::SetupKey, Error> {
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
                    tracing::warn!(saga_id = %row.saga_id, error = %refused, "reissue abandoned: the keystore refused it");
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
            tracing::info!(saga_id = %row.saga_id, key_id = %key.key_id, replayed = reply.replayed, "setup key reissued");
        }
        // The notice names the time the completion was recorded, whoever recorded it.
        if let Some(done) = self.inner.db.find_saga(&row.saga_id).await? {
            self.send_notice(&done).await;
        }
        Ok(key)
    }

    /// Queues the "key reissued" notice once; a failure is logged and left to the sweeper,
    /// the confirmation itself has succeeded.
    async fn send_notice(&self, row: &ResetRow) {
        if row.notice_sent != 0 {
            return;
        }
        let request = pb::SendKeyReissuedNoticeRequest {
            message_id: format!("{}:notice", row.saga_id),
            recipient: row.recipient.clone(),
            account_id: row.account_id.clone(),
            reissued_at: Some(timestamp(row.completed_at.unwrap_or(row.updated_at))),
            client_ip: row.client_ip.clone(),
            locale: row.locale.clone(),
        };
        match self
            .inner
            .notifier
            .clone()
            .send_key_reissued_notice(request)
            .await
        {
            Ok(_) => {
                if let Err(e) = self.inner.db.record_notice_sent(&row.saga_id).await {
                    tracing::warn!(error = %e, "notice queued but not recorded; it will be queued again (same message ID)");
                }
            }
            Err(status) => {
                tracing::warn!(saga_id = %row.saga_id, code = ?status.code(), "reissue notice not queued yet");
            }
        }
    }
}

fn keystore_error(status: tonic::Status) -> Error {
    match status.code() {
        Code::FailedPrecondition => Error::IllegalStep(
            "the setup key was reissued again since; view it with 現在のセットアップキーを表示する",
        ),
        Code::NotFound => Error::IllegalStep("this account has no setup key to reissue"),
        code => {
            tracing::warn!(code = ?code, "keystore RotateKey failed");
            Error::KeystoreUnavailable
        }
    }
}
