//! Whole reset sagas as the portal drives them: StartReset with the password, the code read
//! from the mail the SMTP server accepted, VerifyCode, ConfirmReset, then the user's check
//! that the old key is refused and the new one accepted. Each account resets once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kagi_proto::v1 as pb;

use super::load::{Clients, bearer, code_at, current_step, retry};

/// The password every saga account has.
pub const PASSWORD: &str = "chaos-run-password-0123";

/// An account that will reset its key once.
#[derive(Debug, Clone)]
pub struct SagaAccount {
    pub id: String,
    pub email: String,
    pub old_secret: Vec<u8>,
}

/// How one saga ended, as its client saw it.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// StartReset was not answered: nothing is promised about this account.
    NotStarted,
    /// The new key the user got.
    Completed { new_secret: Vec<u8> },
    /// StartReset was answered but the saga did not complete: an invariant broken.
    Broken(String),
}

#[derive(Debug, Clone)]
pub struct Saga {
    pub account: SagaAccount,
    pub reset_id: Option<String>,
    pub outcome: Outcome,
}

/// How long a step of a started saga keeps retrying (a failover must fit in it).
const STEP_BUDGET: Duration = Duration::from_secs(45);
/// How long the user waits for the mail (an SMTP outage plus its greylisting must fit).
const MAIL_WAIT: Duration = Duration::from_secs(180);

/// Runs sagas one after another over accounts taken from `pool` until the run stops or
/// the pool is empty.
pub async fn worker(
    clients: Clients,
    pool: Arc<Mutex<Vec<SagaAccount>>>,
    done: Arc<Mutex<Vec<Saga>>>,
    pause: Duration,
    worker: usize,
) {
    let mut n = 0_u32;
    while !clients.stop.load(Ordering::Relaxed) {
        let account = pool
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        let Some(account) = account else { return };
        n += 1;
        // A distinct documentation address per saga: the per-IP limits stay out of the way.
        let ip = format!("198.51.{}.{}", 100 + worker % 50, n % 250 + 1);
        let saga = run(&clients, account, &ip).await;
        if let Outcome::Broken(why) = &saga.outcome {
            clients
                .journal
                .violation(format!("saga of {}: {why}", saga.account.id));
        }
        done.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(saga);
        tokio::time::sleep(pause).await;
    }
}

async fn run(clients: &Clients, account: SagaAccount, ip: &str) -> Saga {
    let journal = &clients.journal;
    let token = clients.tokens.portal.clone();
    let start = pb::StartResetRequest {
        account_id: account.id.clone(),
        password: PASSWORD.into(),
        client_ip: ip.to_owned(),
        user_agent: "kagi-stack chaos".into(),
        locale: "en".into(),
    };
    // StartReset is not idempotent (it mails a code): one attempt, as the portal makes.
    let started = retry(journal, "reset.StartReset", Duration::ZERO, || {
        let (mut reset, request) = (clients.reset.clone(), bearer(&token, start.clone()));
        async move { reset.start_reset(request).await }
    })
    .await;
    let Ok(started) = started else {
        return Saga {
            account,
            reset_id: None,
            outcome: Outcome::NotStarted,
        };
    };
    let reset_id = started.into_inner().reset_id;
    let outcome = finish(clients, &account, &reset_id, &token).await;
    Saga {
        account,
        reset_id: Some(reset_id),
        outcome,
    }
}

async fn finish(clients: &Clients, account: &SagaAccount, reset_id: &str, token: &str) -> Outcome {
    let journal = &clients.journal;
    let asked = Instant::now();
    let code = loop {
        if let Some(code) = clients
            .mail
            .to(&account.email)
            .iter()
            .find_map(crate::mailbox::Mail::reset_code)
        {
            journal.mail_wait(asked.elapsed());
            break code;
        }
        if asked.elapsed() > MAIL_WAIT {
            return Outcome::Broken(format!("no mail within {MAIL_WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let check = pb::VerifyResetCodeRequest {
        reset_id: reset_id.to_owned(),
        code,
    };
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let verified = retry(journal, "reset.VerifyCode", STEP_BUDGET, || {
        let retried = attempts.fetch_add(1, Ordering::Relaxed) > 0;
        let (mut reset, request) = (clients.reset.clone(), bearer(token, check.clone()));
        async move {
            match reset.verify_code(request).await {
                // The first attempt went through but its reply was lost: the retry is told
                // the code was already verified, a right answer; ConfirmReset follows.
                Err(status) if retried && status.code() == tonic::Code::FailedPrecondition => {
                    Ok(tonic::Response::new(pb::VerifyResetCodeResponse {
                        result: pb::CodeCheck::Verified.into(),
                        ..Default::default()
                    }))
                }
                other => other,
            }
        }
    })
    .await;
    match verified.map(|r| r.into_inner().result()) {
        Ok(pb::CodeCheck::Verified) => {}
        other => return Outcome::Broken(format!("VerifyCode: {other:?}")),
    }
    let confirm = pb::ConfirmResetRequest {
        reset_id: reset_id.to_owned(),
    };
    let confirmed = retry(journal, "reset.ConfirmReset", STEP_BUDGET, || {
        let (mut reset, request) = (clients.reset.clone(), bearer(token, confirm.clone()));
        async move { reset.confirm_reset(request).await }
    })
    .await;
    let key = match confirmed.map(|r| r.into_inner().key) {
        Ok(Some(key)) => key,
        other => return Outcome::Broken(format!("ConfirmReset: {other:?}")),
    };
    let Ok(new_secret) = data_encoding::BASE32_NOPAD.decode(key.secret_base32.as_bytes()) else {
        return Outcome::Broken("the new key is not Base32".into());
    };
    if let Err(why) = old_refused_new_accepted(clients, account, &new_secret).await {
        return Outcome::Broken(why);
    }
    Outcome::Completed { new_secret }
}

/// What the user checks after a reset: the old key's code is refused, the new key's
/// accepted.
async fn old_refused_new_accepted(
    clients: &Clients,
    account: &SagaAccount,
    new_secret: &[u8],
) -> Result<(), String> {
    let step = current_step();
    for (secret, want) in [
        (&account.old_secret[..], pb::VerifyResult::Rejected),
        (new_secret, pb::VerifyResult::Accepted),
    ] {
        let request = pb::VerifyCodeRequest {
            account_id: account.id.clone(),
            code: code_at(secret, step),
        };
        let reply = retry(&clients.journal, "keystore.VerifyCode", STEP_BUDGET, || {
            let (mut ks, request) = (
                clients.keystore.clone(),
                bearer(&clients.tokens.login, request.clone()),
            );
            async move { ks.verify_code(request).await }
        })
        .await
        .map(|r| r.into_inner().result());
        match reply {
            Ok(got) if got == want => {
                if got == pb::VerifyResult::Accepted {
                    clients.journal.accepted(&account.id, step);
                }
            }
            other => return Err(format!("after the reset, want {want:?}, got {other:?}")),
        }
    }
    Ok(())
}
