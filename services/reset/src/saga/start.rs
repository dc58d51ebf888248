//! "1. 二要素認証のリセット" and "メールを再送信する": checking the password (also for the
//! portal's local login), the rate limits, and mailing codes.

use super::*;

impl ResetSaga {
    /// The portal's `local` login: is this the account's password? Rate-limited like
    /// StartReset (on counters of its own), and as silent about why as StartReset.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// directory or storage failures.
    pub async fn check_password(
        &self,
        account_id: &str,
        password: &SecretString,
        client_ip: IpAddr,
    ) -> Result<(), Error> {
        self.admit(RateScope::Login, client_ip, account_id, self.now())
            .await?;
        match self
            .inner
            .directory
            .authenticate(account_id, password)
            .await?
        {
            Some(_) => Ok(()),
            None => {
                tracing::info!("login refused: bad credentials");
                Err(Error::BadCredentials)
            }
        }
    }

    /// Counts one attempt against the per-IP limit first (before any argon2 work is spent
    /// on the caller), then the per-account one.
    async fn admit(
        &self,
        scope: RateScope,
        client_ip: IpAddr,
        account_id: &str,
        now: i64,
    ) -> Result<(), Error> {
        let limits = self.inner.limits;
        let (ip_scope, account_scope) = scope.names();
        let ip_subject = rate_subject(client_ip);
        if !self
            .inner
            .db
            .rate_hit(
                ip_scope,
                &ip_subject,
                now,
                limits.per_ip_window_ms,
                limits.per_ip_max,
            )
            .await?
        {
            tracing::warn!(client_ip = %ip_subject, scope = ip_scope, "rate-limited by client IP");
            return Err(Error::RateLimited);
        }
        if !self
            .inner
            .db
            .rate_hit(
                account_scope,
                account_id,
                now,
                limits.per_account_window_ms,
                limits.per_account_max,
            )
            .await?
        {
            tracing::warn!(scope = account_scope, "rate-limited by account");
            return Err(Error::RateLimited);
        }
        Ok(())
    }

    /// "1. 二要素認証のリセット": check the password, create the reset, mail the first code.
    ///
    /// # Errors
    /// [`Error::RateLimited`], [`Error::BadCredentials`] (the same for every reason),
    /// [`Error::MailUnavailable`] (the reset is cancelled; start again), storage failures.
    pub async fn start(&self, request: StartRequest<'_>) -> Result<Started, Error> {
        let now = self.now();
        self.admit(RateScope::Reset, request.client_ip, request.account_id, now)
            .await?;
        let Some(account) = self
            .inner
            .directory
            .authenticate(request.account_id, &request.password)
            .await?
        else {
            tracing::info!("StartReset refused: bad credentials");
            return Err(Error::BadCredentials);
        };

        let token = ResetToken::from_random(&random_bytes::<{ ResetToken::BYTES }>()?);
        let token_hash = token.digest();
        let saga_id = uuid::Uuid::new_v4().to_string();
        tracing::Span::current().record("saga_id", saga_id.as_str());
        let code = new_code()?;
        let code_expires_at = now + ms(self.inner.policy.code_ttl);
        let code_hash = self.inner.hasher.hash(&saga_id, &code);
        let new = NewReset {
            token_hash: &token_hash,
            saga_id: &saga_id,
            account_id: &account.account_id,
            recipient: &account.recovery_email,
            locale: request.locale,
            client_ip: &request.client_ip.to_string(),
            user_agent: request.user_agent,
            code_hash: &code_hash,
            code_expires_at,
            now,
        };
        let mut outcome = StartOutcome::Raced;
        for _ in 0..ROUNDS {
            outcome = self.inner.db.start_reset(&new).await?;
            if outcome != StartOutcome::Raced {
                break;
            }
        }
        match outcome {
            StartOutcome::Started => {}
            StartOutcome::ConfirmingElsewhere => {
                return Err(Error::IllegalStep(
                    "a reissue for this account is being completed; try again in a minute",
                ));
            }
            StartOutcome::Raced => return Err(Error::Contended),
        }
        tracing::info!("reset started");

        let sent = self
            .send_code(
                &saga_id,
                1,
                &account.recovery_email,
                &account.account_id,
                &code,
                code_expires_at,
                request.locale,
            )
            .await;
        if let Err(e) = sent {
            // Nothing half-done: the reset whose first mail failed is over.
            self.inner
                .db
                .move_state(&token_hash, 0, "code_sent", "cancelled", self.now())
                .await?;
            return Err(e);
        }
        Ok(Started {
            token,
            masked_recipient: mask_email(&account.recovery_email),
            code_expires_at,
            resend_after: now + ms(self.inner.policy.resend_after),
        })
    }

    /// "メールを再送信する": a new code, the old one dead.
    ///
    /// # Errors
    /// [`Error::ResendTooSoon`], [`Error::ResendLimit`], [`Error::IllegalStep`] outside
    /// CODE_SENT, [`Error::MailUnavailable`] (the user may resend at once).
    pub async fn resend(&self, token: &ResetToken) -> Result<Resent, Error> {
        let policy = &self.inner.policy;
        for _ in 0..ROUNDS {
            let row = self.load(token).await?;
            let now = self.now();
            let state = effective(&row, now, policy)?;
            if state != ResetState::CodeSent {
                return Err(Error::IllegalStep(state.refusal()));
            }
            let resends_done = u32::try_from(row.sends - 1).unwrap_or(u32::MAX);
            if resends_done >= policy.max_resends {
                return Err(Error::ResendLimit);
            }
            if let Some(last) = row.last_sent_at {
                let allowed_at = last + ms(policy.resend_after);
                if now < allowed_at {
                    return Err(Error::ResendTooSoon {
                        wait_secs: (allowed_at - now + 999) / 1000,
                    });
                }
            }
            let code = new_code()?;
            let code_expires_at = now + ms(policy.code_ttl);
            let code_hash = self.inner.hasher.hash(&row.saga_id, &code);
            if !self
                .inner
                .db
                .reissue_code(
                    &row.token_hash,
                    row.version,
                    &code_hash,
                    code_expires_at,
                    now,
                )
                .await?
            {
                continue;
            }
            let send = row.sends + 1;
            tracing::info!(send, "code reissued");
            if let Err(e) = self
                .send_code(
                    &row.saga_id,
                    send,
                    &row.recipient,
                    &row.account_id,
                    &code,
                    code_expires_at,
                    &row.locale,
                )
                .await
            {
                self.inner
                    .db
                    .mail_not_sent(&row.token_hash, send, self.now())
                    .await?;
                return Err(e);
            }
            return Ok(Resent {
                code_expires_at,
                resend_after: now + ms(policy.resend_after),
                resends_remaining: policy.max_resends.saturating_sub(resends_done + 1),
            });
        }
        Err(Error::Contended)
    }

    #[allow(clippy::too_many_arguments)]
    async fn send_code(
        &self,
        saga_id: &str,
        send: i64,
        recipient: &str,
        account_id: &str,
        code: &ConfirmationCode,
        expires_at: i64,
        locale: &str,
    ) -> Result<(), Error> {
        let request = pb::SendResetCodeRequest {
            message_id: format!("{saga_id}:code:{send}"),
            recipient: recipient.to_owned(),
            account_id: account_id.to_owned(),
            code: code.expose().to_owned(),
            expires_at: Some(timestamp(expires_at)),
            locale: locale.to_owned(),
        };
        match self.inner.notifier.clone().send_reset_code(request).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::ResourceExhausted => Err(Error::MailRateLimited),
            Err(status) => {
                tracing::warn!(code = ?status.code(), "reset code mail not queued");
                Err(Error::MailUnavailable)
            }
        }
    }
}
