//! `Stack::start`: a keystore, a notifier delivering to an SMTP sink, and the reset service
//! under test, each on 127.0.0.1:0 with a fresh database, started by the one stack builder
//! ([`LocalStack`]); the reset service on the backend under test and a clock the test moves;
//! and the calls the tests make in the portal's place.

use std::sync::Arc;
use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_reset::accounts::AccountAdmin;
use kagi_runtime::ManualClock;
use kagi_stack::LocalStack;
use secrecy::SecretString;
use sqlx::Connection as _;
use tonic::transport::Channel;

pub use kagi_stack::local::{CODE_KEY, InProcess as Running, Sink as SmtpSink, token_of, wrong};
pub use kagi_stack::mailbox::code_in;
pub use kagi_testkit::{Backend, TestDatabase};

pub const PASSWORD: &str = "correct-horse-battery-staple";
pub const EMAIL: &str = "taro@example.ac.jp";

/// Runs a statement against the reset service's database (to look behind the API).
pub async fn sql(db: &TestDatabase, statement: &str) -> Vec<sqlx::any::AnyRow> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

/// Every log line (JSON, with span fields, at trace level) of every service started in
/// this test binary.
pub fn captured_logs() -> String {
    kagi_testkit::logs::captured()
}

// ---------------------------------------------------------------- the stack

/// Everything one scenario talks to: [`LocalStack`] without a portal (the tests call the
/// reset service as the portal does), the keystore and the notifier on SQLite, the reset
/// service on the backend under test.
pub struct Stack {
    /// The reset service as the stack started it; `None` once a test took it.
    pub reset: Option<Running>,
    pub saga: kagi_reset::saga::ResetSaga,
    pub accounts: AccountAdmin,
    /// Its argon2id hasher, counting the verifications it ran.
    pub hasher: std::sync::Arc<kagi_reset::directory::PasswordHasher>,
    /// Its settings, to start more replicas of it.
    pub settings: kagi_reset::Settings,
    pub client: ResetClient<Channel>,
    /// The clocks, the SMTP server (`sink`), the keystore (stopped and restarted by some
    /// scenarios, `keystore_settings`), the databases (`reset_db`, `notifier_db`).
    system: LocalStack,
}

impl std::ops::Deref for Stack {
    type Target = LocalStack;

    fn deref(&self) -> &LocalStack {
        &self.system
    }
}

impl Stack {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the stack, letting the test change the reset service's settings first.
    pub async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut kagi_reset::Settings) + Send,
    ) -> Self {
        let mut system = LocalStack::builder(backend)
            .backend_of(kagi_stack::Service::Keystore, Backend::Sqlite)
            .backend_of(kagi_stack::Service::Notifier, Backend::Sqlite)
            .without_portal()
            // Concurrent scenarios (races, replicas) hold more connections at once.
            .reset(|s| s.database.max_connections = 8)
            .reset(tweak)
            .start()
            .await
            .expect("the system starts");
        let reset = system.reset.take().expect("the reset service");
        Self {
            client: ResetClient::new(channel(reset.running.addr).await),
            reset: Some(reset.running),
            saga: reset.saga,
            accounts: reset.accounts,
            hasher: reset.hasher,
            settings: system.reset_settings.clone(),
            system,
        }
    }

    /// Waits until every message the notifier has queued reached the SMTP server, then
    /// checks there were exactly `n`: with nothing left in the queue, no other mail can
    /// still arrive.
    pub async fn assert_exactly_mailed(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let (queued, sent) = loop {
            let rows = sql(
                &self.notifier_db,
                "SELECT COUNT(*) AS queued, COUNT(sent_at) AS sent FROM deliveries",
            )
            .await;
            let queued: i64 = sqlx::Row::get(&rows[0], "queued");
            let sent: i64 = sqlx::Row::get(&rows[0], "sent");
            if queued == sent || tokio::time::Instant::now() > deadline {
                break (queued, sent);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        };
        assert_eq!(sent, queued, "every queued mail delivered");
        assert_eq!(usize::try_from(queued).unwrap(), n, "mails queued");
        assert_eq!(self.sink.wait_for_mails(n).await.len(), n, "mails received");
    }

    /// An account in the directory, enrolled at the keystore; returns its first key.
    pub async fn account(&self, id: &str) -> pb::SetupKey {
        self.accounts
            .add(id, EMAIL, SecretString::from(PASSWORD), 0)
            .await
            .unwrap();
        self.enroll(id).await
    }

    pub async fn enroll(&self, id: &str) -> pb::SetupKey {
        let mut ks = self.keystore_client().await;
        ks.enroll(as_caller(
            "onboarding",
            pb::EnrollRequest {
                account_id: id.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
    }

    pub async fn keystore_client(&self) -> KeystoreClient<Channel> {
        let addr = self.keystore_settings.server.listen_addr;
        KeystoreClient::new(channel(addr).await)
    }

    /// The keystore's answer to a login with `key`'s current code.
    pub async fn login_with(&self, account: &str, key: &pb::SetupKey) -> pb::VerifyResult {
        use kagi_runtime::Clock as _;
        let now = u64::try_from(self.keystore_clock.now_ms() / 1000).unwrap();
        let request = as_caller(
            "login",
            pb::VerifyCodeRequest {
                account_id: account.into(),
                code: totp_at(key, now),
            },
        );
        let reply = self
            .keystore_client()
            .await
            .verify_code(request)
            .await
            .unwrap()
            .into_inner();
        // Each step accepts a code once; the next login must be in a later step.
        self.keystore_clock.advance(Duration::from_secs(30));
        reply.result()
    }

    /// How many times the keystore rotated `account`'s key.
    pub async fn rotations(&self, account: &str) -> usize {
        let request = as_caller(
            "admin",
            pb::ListAuditEventsRequest {
                account_id: account.into(),
                page_size: 1000,
                before: 0,
            },
        );
        self.keystore_client()
            .await
            .list_audit_events(request)
            .await
            .unwrap()
            .into_inner()
            .events
            .iter()
            .filter(|e| e.action == "rotate")
            .count()
    }

    pub async fn stop_keystore(&mut self) {
        self.system.stop_keystore().await;
    }

    pub async fn restart_keystore(&mut self) {
        self.system
            .restart_keystore()
            .await
            .expect("the keystore restarts");
    }

    // ---- the portal's calls

    pub async fn start_reset(
        &self,
        account: &str,
        password: &str,
        ip: &str,
    ) -> Result<pb::StartResetResponse, tonic::Status> {
        let request = pb::StartResetRequest {
            account_id: account.into(),
            password: password.into(),
            client_ip: ip.into(),
            user_agent: "Mozilla/5.0 (test)".into(),
            locale: String::new(),
        };
        Ok(self
            .client
            .clone()
            .start_reset(portal(request))
            .await?
            .into_inner())
    }

    /// StartReset with the right password, and the code from the mail that follows.
    pub async fn start_and_read_code(&self, account: &str) -> (String, String) {
        let before = self.sink.mails().len();
        let started = self
            .start_reset(account, PASSWORD, "192.0.2.10")
            .await
            .unwrap();
        let code = self.sink.code_in_mail(before + 1).await;
        (started.reset_id, code)
    }

    pub async fn resend(&self, reset_id: &str) -> Result<pb::ResendCodeResponse, tonic::Status> {
        let request = pb::ResendCodeRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .resend_code(portal(request))
            .await?
            .into_inner())
    }

    pub async fn verify(
        &self,
        reset_id: &str,
        code: &str,
    ) -> Result<pb::VerifyResetCodeResponse, tonic::Status> {
        let request = pb::VerifyResetCodeRequest {
            reset_id: reset_id.into(),
            code: code.into(),
        };
        Ok(self
            .client
            .clone()
            .verify_code(portal(request))
            .await?
            .into_inner())
    }

    pub async fn confirm(&self, reset_id: &str) -> Result<pb::SetupKey, tonic::Status> {
        let request = pb::ConfirmResetRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .confirm_reset(portal(request))
            .await?
            .into_inner()
            .key
            .unwrap())
    }

    pub async fn cancel(&self, reset_id: &str) -> Result<pb::ResetState, tonic::Status> {
        let request = pb::CancelResetRequest {
            reset_id: reset_id.into(),
        };
        Ok(self
            .client
            .clone()
            .cancel_reset(portal(request))
            .await?
            .into_inner()
            .state())
    }

    pub async fn get(&self, reset_id: &str) -> pb::GetResetResponse {
        let request = pb::GetResetRequest {
            reset_id: reset_id.into(),
        };
        self.client
            .clone()
            .get_reset(portal(request))
            .await
            .unwrap()
            .into_inner()
    }
}

/// Another reset service replica on `settings` (the same database) and `clock`.
pub async fn start_reset(
    settings: &kagi_reset::Settings,
    clock: Arc<ManualClock>,
) -> (Running, kagi_reset::saga::ResetSaga, AccountAdmin) {
    let replica = kagi_stack::local::ResetReplica::start(settings, clock)
        .await
        .expect("reset service starts");
    (replica.running, replica.saga, replica.accounts)
}

pub async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

pub fn as_caller<T>(caller: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of(caller)).parse().unwrap(),
    );
    request
}

pub fn portal<T>(message: T) -> tonic::Request<T> {
    as_caller("portal", message)
}

/// The code `key` shows at `unix_secs`.
pub fn totp_at(key: &pb::SetupKey, unix_secs: u64) -> String {
    kagi_stack::local::totp_of(key, unix_secs)
}
