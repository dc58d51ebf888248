//! Starting the real notifier (on 127.0.0.1:0, with a fresh SQLite or PostgreSQL database),
//! a real SMTP server (kagi-testkit's aiosmtpd sink) and a gRPC client, and reading mail.

use std::sync::Arc;
use std::time::Duration;

use kagi_notifier::config::{SmtpTls, TransportKind};
use kagi_notifier::store::Db;
use kagi_notifier::{Application, Settings};
use kagi_proto::v1 as pb;
use kagi_proto::v1::notifier_client::NotifierClient;
use kagi_runtime::{Clock as _, OffsetClock};
use secrecy::SecretString;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const TOKEN: &str = "reset-saga-test-token-0123456789";
pub const SUBJECT_JA: &str = "[サンプル大学]二要素認証の再設定のご案内";
pub const SENDER_JA: &str = "サンプル大学 二要素認証管理システム";

pub use crate::relay::StallingRelay;
pub use kagi_testkit::smtp::{SmtpSink, test_ca};
pub use kagi_testkit::{Backend, TestDatabase, free_port};

/// Every log line of this test binary.
pub fn captured_logs() -> String {
    kagi_testkit::logs::captured()
}

// ---------------------------------------------------------------- the notifier

pub type Client =
    NotifierClient<InterceptedService<Channel, fn(Request<()>) -> Result<Request<()>, Status>>>;

#[allow(clippy::result_large_err)]
fn bearer(mut request: Request<()>) -> Result<Request<()>, Status> {
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    Ok(request)
}

/// Settings of a notifier sending to `smtp_port` on 127.0.0.1, with fast polling and backoff.
pub fn test_settings(db: &TestDatabase, smtp_port: u16) -> Settings {
    let mut settings = Settings {
        server: kagi_runtime::ServerSettings::on("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    settings.server.shutdown_grace_secs = 2;
    settings
        .auth
        .tokens
        .insert("reset".into(), SecretString::from(TOKEN));
    settings.database.url = db.url.clone();
    // Every notifier on this queue shares one payload key, created on first use.
    settings.sealing.key_file = db.side_file("notifier-payload-key");
    settings.database.max_connections = 4;
    settings.mail.templates_dir = None;
    settings.transport.kind = TransportKind::Smtp;
    settings.transport.smtp.host = "127.0.0.1".into();
    settings.transport.smtp.port = smtp_port;
    settings.transport.smtp.tls = SmtpTls::None;
    settings.transport.smtp.timeout_ms = 3_000;
    settings.transport.smtp.pool_max_size = 4;
    settings.transport.smtp.hello_name = Some("notifier.test".into());
    settings.delivery.poll_interval_ms = 25;
    settings.delivery.backoff_initial_ms = 40;
    settings.delivery.backoff_max_ms = 200;
    settings.delivery.lease_secs = 30;
    settings
}

/// A running notifier and a client authenticated as the reset saga.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` is served, when the settings asked for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub client: Client,
    pub store: Db,
    pub clock: Arc<OffsetClock>,
    /// The replica name its worker puts in lease owners.
    pub replica: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        kagi_testkit::logs::init();
        let clock = Arc::new(OffsetClock::default());
        let app = Application::build_with_clock(&settings, clock.clone())
            .await
            .expect("build");
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let store = app.store().clone();
        let replica = app.replica().map(str::to_owned);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let client = client(addr).await;
        Self {
            addr,
            metrics_addr,
            client,
            store,
            clock,
            replica,
            stop: Some(stop),
            task,
        }
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    /// Abrupt end, as when the process is killed: nothing gets to finish.
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn send_reset_code(
        &self,
        message_id: &str,
        recipient: &str,
        code: &str,
    ) -> Result<String, Status> {
        self.client
            .clone()
            .send_reset_code(reset_request(
                message_id,
                recipient,
                code,
                self.clock.utc() + chrono::Duration::minutes(30),
            ))
            .await
            .map(|r| r.into_inner().delivery_id)
    }

    /// GetDelivery without a bearer token.
    pub async fn delivery_without_token(&self, id: &str) -> Result<pb::Delivery, Status> {
        let mut client = NotifierClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap();
        let request = pb::GetDeliveryRequest {
            delivery_id: id.to_owned(),
        };
        Ok(client
            .get_delivery(request)
            .await?
            .into_inner()
            .delivery
            .unwrap_or_default())
    }

    pub async fn delivery(&self, id: &str) -> pb::Delivery {
        let request = pb::GetDeliveryRequest {
            delivery_id: id.to_owned(),
        };
        self.client
            .clone()
            .get_delivery(request)
            .await
            .unwrap()
            .into_inner()
            .delivery
            .unwrap()
    }

    /// Polls GetDelivery until `done` holds.
    pub async fn wait_for(
        &self,
        id: &str,
        mut done: impl FnMut(&pb::Delivery) -> bool,
    ) -> pb::Delivery {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let delivery = self.delivery(id).await;
            if done(&delivery) {
                return delivery;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "delivery never got there: {delivery:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the message is no longer queued.
    pub async fn wait_handled(&self, id: &str) -> pb::Delivery {
        self.wait_for(id, |d| d.state() != pb::DeliveryState::Queued)
            .await
    }
}

/// A gRPC client to a notifier at `addr`, authenticated as the reset saga.
pub async fn client(addr: std::net::SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    NotifierClient::with_interceptor(channel, bearer as fn(_) -> _)
}

/// A notifier in a tokio runtime of its own, on the system clock. Killing it shuts that
/// runtime down: the server, the worker and every send in flight end where they are, their
/// sockets closed, as when the process is killed (aborting one task would leave the sends
/// it spawned running).
pub struct ProcessLikeApp {
    pub client: Client,
    /// The replica name its worker puts in lease owners.
    pub replica: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl ProcessLikeApp {
    pub async fn spawn(settings: Settings) -> Self {
        kagi_testkit::logs::init();
        // Built on a thread of its own: a runtime cannot be entered from this test's.
        let (built, ready) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let app = runtime.block_on(Application::build(&settings));
            let _ = built.send((runtime, app));
        });
        let (runtime, app) = ready.await.unwrap();
        let app = app.expect("build");
        let addr = app.local_addr();
        let replica = app.replica().expect("worker enabled").to_owned();
        runtime.spawn(app.run_until_stopped(std::future::pending()));
        Self {
            client: client(addr).await,
            replica,
            runtime: Some(runtime),
        }
    }

    /// Ends everything at once; nothing gets to finish or record anything.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for ProcessLikeApp {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Polls `check` every 20 ms until it holds, failing the test after 15 s.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The replica that holds `id`'s lease, or that finished it: the part of its lease owner
/// before the `/`.
pub async fn replica_of(store: &Db, id: &str) -> String {
    let owner = store.lease_owner(id).await.unwrap().expect("a lease owner");
    owner.rsplit_once('/').expect("replica/claim").0.to_owned()
}

/// Asserts that the worker has nothing left to send, now or a day from now: no row is
/// claimable, so every message is final (sent or failed). A claim is what the worker does
/// before each send, so a message it could still send would be taken here instead.
pub async fn assert_nothing_left_to_send(app: &TestApp) {
    let day_later = app.clock.utc().timestamp_millis() + 86_400_000;
    let due = app
        .store
        .claim_due("probe/nothing-left", day_later, day_later + 1, 1_000)
        .await
        .unwrap();
    let due: Vec<_> = due.iter().map(|d| &d.record).collect();
    assert!(due.is_empty(), "still sendable: {due:?}");
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    }
}

pub fn reset_request(
    message_id: &str,
    recipient: &str,
    code: &str,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> pb::SendResetCodeRequest {
    pb::SendResetCodeRequest {
        message_id: message_id.into(),
        recipient: recipient.into(),
        account_id: "a23b456c".into(),
        code: code.into(),
        expires_at: Some(timestamp(expires_at)),
        locale: String::new(),
    }
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}
