//! Encrypted, mutually authenticated calls to the keystore, over real TLS on 127.0.0.1 with
//! certificates made for each test: a caller known by its certificate meets the same allow
//! lists as a token; a certificate from another CA and a plaintext client get nothing; a
//! token rotated on disk is taken without a restart; one client spreads its calls over three
//! replicas behind one name.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kagi_keystore::domain::AccountId;
use kagi_keystore::service::Actor;
use kagi_keystore::{Application, Settings};
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_runtime::client::{ClientSettings, Resolve, channel, channel_with_resolver};
use kagi_runtime::{ManualClock, ServiceChannel};
use kagi_testkit::both_backends;
use kagi_testkit::tls::{SERVICE_NAME, TestPki};
use tonic::Code;

use crate::helpers::{Backend, TestDatabase, test_settings, token_of};

both_backends!(
    an_mtls_caller_is_known_by_its_certificate_under_its_allow_list,
    a_certificate_from_another_ca_is_refused,
    a_plaintext_client_gets_nothing_from_a_tls_keystore,
    a_rotated_token_is_accepted_without_a_restart_and_the_removed_one_refused,
    calls_from_one_client_spread_over_three_replicas_behind_one_name,
);

/// A keystore serving until the test ends.
struct Running {
    addr: SocketAddr,
    keystore: kagi_keystore::service::Keystore,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(settings: &Settings) -> Running {
    kagi_testkit::logs::init();
    let app =
        Application::build_with_clock(settings, Arc::new(ManualClock::new(SystemTime::now())))
            .await
            .expect("keystore starts");
    let (addr, keystore) = (app.local_addr(), app.keystore().clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        keystore,
        _stop: stop,
    }
}

/// Test settings served over mTLS, `callers` known by their certificates.
fn mtls_settings(db: &TestDatabase, pki: &TestPki, callers: &[&str]) -> Settings {
    let mut settings = test_settings(db);
    pki.serve_mtls(&mut settings.server, &mut settings.auth, callers);
    settings
}

fn client(settings: &ClientSettings) -> KeystoreClient<ServiceChannel> {
    KeystoreClient::new(channel(settings).unwrap())
}

fn verify_request() -> pb::VerifyCodeRequest {
    pb::VerifyCodeRequest {
        account_id: "taro".into(),
        code: "000000".into(),
    }
}

async fn an_mtls_caller_is_known_by_its_certificate_under_its_allow_list(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let pki = TestPki::new();
    let app = start(&mtls_settings(&db, &pki, &["login", "onboarding"])).await;

    // No bearer token anywhere: the certificate is the credential.
    let mut onboarding = client(&pki.client_settings(app.addr, Some("onboarding")));
    let enrolled = onboarding
        .enroll(pb::EnrollRequest {
            account_id: "taro".into(),
        })
        .await
        .expect("onboarding may enroll, known by its certificate");
    assert!(enrolled.into_inner().key.is_some());

    let mut login = client(&pki.client_settings(app.addr, Some("login")));
    let verified = login.verify_code(verify_request()).await.unwrap();
    assert_ne!(
        verified.into_inner().result,
        pb::VerifyResult::Unspecified as i32
    );

    // The same allow lists as tokens: the login system may not rotate keys.
    let denied = login
        .rotate_key(pb::RotateKeyRequest {
            account_id: "taro".into(),
            idempotency_key: "k".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A certificate from the right CA whose name maps to no caller proves nothing.
    let mut stranger = client(&pki.client_settings(app.addr, Some("stranger")));
    let err = stranger.verify_code(verify_request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

async fn a_certificate_from_another_ca_is_refused(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let pki = TestPki::new();
    let app = start(&mtls_settings(&db, &pki, &["login"])).await;
    client(&pki.client_settings(app.addr, Some("login")))
        .verify_code(verify_request())
        .await
        .expect("the login system's own certificate is accepted");

    // The same caller name, signed by an attacker's CA: the handshake is refused (under TLS
    // 1.3 the client learns it on first use of the connection, as a transport error).
    let forger = TestPki::new();
    let forged_cert = forger.client("login");
    let mut settings = pki.client_settings(app.addr, None);
    settings.cert_file = Some(forged_cert.cert);
    settings.key_file = Some(forged_cert.key);
    settings.token = Some(token_of("login").into());
    let err = client(&settings)
        .verify_code(verify_request())
        .await
        .unwrap_err();
    assert!(refused_in_handshake(&err), "{err:?}");

    // Without any certificate the handshake fails as well, even with a valid token.
    let mut no_cert = pki.client_settings(app.addr, None);
    no_cert.token = Some(token_of("login").into());
    let err = client(&no_cert)
        .verify_code(verify_request())
        .await
        .unwrap_err();
    assert!(refused_in_handshake(&err), "{err:?}");
}

/// The call never reached the service: the client's transport failed (a status a server
/// sends carries no local error source).
fn refused_in_handshake(status: &tonic::Status) -> bool {
    std::error::Error::source(status).is_some()
        && matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        )
}

async fn a_plaintext_client_gets_nothing_from_a_tls_keystore(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let pki = TestPki::new();
    let app = start(&mtls_settings(&db, &pki, &["login"])).await;

    let mut settings = ClientSettings::at(format!("http://{}", app.addr));
    settings.token = Some(token_of("login").into());
    let err = client(&settings)
        .verify_code(verify_request())
        .await
        .unwrap_err();
    // The TLS server reads garbage where a ClientHello should be and closes the connection;
    // the client sees that as a failed or cancelled transport, never as a served answer.
    assert!(
        refused_in_handshake(&err) || err.code() == Code::Internal,
        "{err:?}"
    );

    // And a keystore on a non-loopback address will not serve plaintext at all.
    let mut open = test_settings(&db);
    open.server.listen_addr = "0.0.0.0:0".parse().unwrap();
    let refused = Application::build(&open).await.unwrap_err().to_string();
    assert!(refused.contains("refusing to serve plaintext"), "{refused}");
    assert!(refused.contains("allow_plaintext"), "{refused}");
}

async fn a_rotated_token_is_accepted_without_a_restart_and_the_removed_one_refused(
    backend: Backend,
) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let dir = tempfile::tempdir().unwrap();
    let (callers, client_side) = (dir.path().join("callers"), dir.path().join("login-token"));
    std::fs::create_dir_all(&callers).unwrap();
    let (old, new) = ("login-token-old-0123456789", "login-token-new-0123456789");
    std::fs::write(callers.join("login"), old).unwrap();
    std::fs::write(&client_side, old).unwrap();
    let mut settings = test_settings(&db);
    settings.auth.tokens = BTreeMap::new();
    settings.auth.tokens_dir = Some(callers.clone());
    settings.auth.tokens_reload_ms = 100;
    let app = start(&settings).await;
    let mut login = KeystoreClient::new(
        channel(&ClientSettings {
            token_file: Some(client_side.clone()),
            token_reload_ms: 100,
            ..ClientSettings::at(format!("http://{}", app.addr))
        })
        .unwrap(),
    );
    login.verify_code(verify_request()).await.unwrap();

    // Rotation: the keystore learns the new token beside the old, the caller switches,
    // then the old one is removed. No restart on either side.
    std::fs::write(callers.join("login.next"), new).unwrap();
    std::fs::write(&client_side, new).unwrap();
    wait_until_accepted(&app, new, true).await;
    std::fs::remove_file(callers.join("login")).unwrap();
    wait_until_accepted(&app, old, false).await;
    login
        .verify_code(verify_request())
        .await
        .expect("the caller's reloaded token is the new one");

    // A tokens directory giving two callers one token is refused at start, by name.
    std::fs::write(callers.join("portal"), new).unwrap();
    let err = Application::build(&settings).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(message.contains("the same token"), "{message}");
    assert!(!message.contains(new), "the token itself is never printed");
}

/// Polls until a call with `token` is accepted (or refused as unknown).
async fn wait_until_accepted(app: &Running, token: &str, accepted: bool) {
    let mut client = KeystoreClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
            .unwrap()
            .connect_lazy(),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let result = client
            .verify_code(kagi_testkit::bearer(token, verify_request()))
            .await;
        match (&result, accepted) {
            (Ok(_), true) => return,
            (Err(status), false) if status.code() == Code::Unauthenticated => return,
            _ => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "token never {}: {result:?}",
            if accepted { "accepted" } else { "refused" }
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One name, three addresses: what a headless Kubernetes Service answers for three ready
/// replicas. (The system resolver is not used here: nothing on a test machine resolves one
/// name to three loopback addresses. What this proves is the balancer over resolved
/// addresses, per-address TLS checked against the name, and re-resolution.)
#[derive(Debug)]
struct Replicas(Vec<SocketAddr>);

impl Resolve for Replicas {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        _port: u16,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send + 'a>,
    > {
        assert_eq!(host, SERVICE_NAME);
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

/// Under load two things could make this fail without the balancer being at fault: the
/// port, picked free and only bound after the databases were made (seconds on PostgreSQL),
/// could be taken meanwhile by one of the many loopback sockets of the tests running beside
/// it; and a replica whose TLS handshake finished late sat out the first calls, while the
/// balancer (which picks among connected replicas only) sent them to the others. So the first replica binds port 0
/// and the others take its port on addresses no other test uses, and the counted calls
/// start once every replica has answered one, as a pool that has been up a while.
async fn calls_from_one_client_spread_over_three_replicas_behind_one_name(backend: Backend) {
    let pki = TestPki::new();
    // Three replicas on 127.0.0.1, .2 and .3, one port, each with its own database so
    // each enrollment shows which replica took it.
    let mut dbs = Vec::new();
    for _ in 0..3 {
        dbs.push(TestDatabase::new(backend, "keystore.db").await);
    }
    let mut replicas: Vec<Running> = Vec::new();
    for (db, host) in dbs.iter().zip(["127.0.0.1", "127.0.0.2", "127.0.0.3"]) {
        let port = replicas.first().map_or(0, |first| first.addr.port());
        let mut settings = mtls_settings(db, &pki, &["onboarding"]);
        settings.server.listen_addr = format!("{host}:{port}").parse().unwrap();
        replicas.push(start(&settings).await);
    }
    let port = replicas[0].addr.port();
    let mut settings = pki.client_settings(replicas[0].addr, Some("onboarding"));
    settings.endpoint = format!("https://{SERVICE_NAME}:{port}");
    settings.tls_server_name = None;
    settings.balance = true;
    // What is proven is where calls go, not how fast: a loaded machine gets time.
    settings.timeout_ms = 60_000;
    let resolver = Arc::new(Replicas(replicas.iter().map(|r| r.addr).collect()));
    let mut client = KeystoreClient::new(channel_with_resolver(&settings, resolver).unwrap());
    let enroll = async |client: &mut KeystoreClient<ServiceChannel>, account: &str| {
        client
            .enroll(pb::EnrollRequest {
                account_id: account.into(),
            })
            .await
            .unwrap();
    };
    let holds = async |replica: &Running, account: &str| {
        let id = AccountId::parse(account).unwrap();
        replica
            .keystore
            .current_key(Actor { caller: "test" }, id)
            .await
            .is_ok()
    };

    // Until each replica has answered: its connection is up (bounded, so a balancer that
    // pins one replica still fails here).
    let mut answered = [false; 3];
    for i in 0..300 {
        let account = format!("warm{i:03}");
        enroll(&mut client, &account).await;
        for (replica, answered) in replicas.iter().zip(&mut answered) {
            *answered |= holds(replica, &account).await;
        }
        if answered.iter().all(|a| *a) {
            break;
        }
    }
    assert!(
        answered.iter().all(|a| *a),
        "a replica never answered: {answered:?}"
    );

    let accounts: Vec<String> = (0..60).map(|i| format!("user{i:03}")).collect();
    for account in &accounts {
        enroll(&mut client, account).await;
    }

    let mut taken = Vec::new();
    for replica in &replicas {
        let mut count = 0;
        for account in &accounts {
            count += usize::from(holds(replica, account).await);
        }
        taken.push(count);
    }
    assert_eq!(taken.iter().sum::<usize>(), accounts.len(), "{taken:?}");
    assert!(
        taken.iter().all(|n| *n >= 5),
        "every replica took calls: {taken:?}"
    );
}
