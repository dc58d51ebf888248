//! Crashes mid-saga: a `kagi-reset` process killed with SIGKILL after the verify, and one
//! killed during ConfirmReset with the rotation in flight, each restarted; and, at unit
//! level, the sweep over a saga whose rotation happened but was never recorded.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::reset_client::ResetClient;
use sqlx::Row as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::{Backend, CODE_KEY, EMAIL, PASSWORD, Stack, as_caller, portal, sql, token_of};
use kagi_testkit::both_backends;

both_backends!(
    a_reset_process_killed_after_verify_confirms_after_restart,
    a_reset_process_killed_during_confirm_is_finished_once_by_its_sweeper,
    sweep_records_a_rotation_the_keystore_made_for_a_confirming_saga,
);

fn reset_binary(stack: &Stack, port: u16) -> tokio::process::Command {
    let s = &stack.settings;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi-reset"));
    command
        .env("KAGI_RESET_DATABASE__URL", &s.database.url)
        .env(
            "KAGI_RESET_SERVER__LISTEN_ADDR",
            format!("127.0.0.1:{port}"),
        )
        .env(
            "KAGI_RESET_CODE_HMAC_KEY",
            base64::engine::general_purpose::STANDARD.encode(CODE_KEY),
        )
        .env("KAGI_RESET_AUTH__TOKENS__PORTAL", token_of("portal"))
        .env("KAGI_RESET_KEYSTORE__ENDPOINT", &s.keystore.endpoint)
        .env("KAGI_RESET_KEYSTORE__TOKEN", token_of("reset"))
        .env("KAGI_RESET_NOTIFIER__ENDPOINT", &s.notifier.endpoint)
        .env("KAGI_RESET_NOTIFIER__TOKEN", token_of("reset"))
        .env("KAGI_RESET_PASSWORD__MEMORY_KIB", "1024")
        .env("KAGI_RESET_PASSWORD__ITERATIONS", "1")
        .env("KAGI_RESET_TELEMETRY__LOG_FILTER", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn connect(port: u16) -> ResetClient<tonic::transport::Channel> {
    let endpoint =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return ResetClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kagi-reset did not come up on {port}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn a_reset_process_killed_after_verify_confirms_after_restart(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old_key = stack.enroll("d1").await;

    // The operator adds the account with the CLI, the password on stdin.
    let mut add = reset_binary(&stack, 0)
        .args([
            "accounts",
            "add",
            "d1",
            "--recovery-email",
            EMAIL,
            "--password-stdin",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    add.stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .await
        .unwrap();
    let added = add.wait_with_output().await.unwrap();
    assert!(added.status.success());
    assert!(String::from_utf8_lossy(&added.stdout).contains("account d1: added"));

    let port = free_port();
    let mut child = reset_binary(&stack, port).arg("serve").spawn().unwrap();
    let mut client = connect(port).await;
    let started = client
        .start_reset(portal(pb::StartResetRequest {
            account_id: "d1".into(),
            password: PASSWORD.into(),
            client_ip: "192.0.2.20".into(),
            user_agent: "test".into(),
            locale: "en".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let mails = stack.sink.wait_for_mails(1).await;
    let code = crate::helpers::code_in(&mails[0].body).unwrap();
    let verified = client
        .verify_code(portal(pb::VerifyResetCodeRequest {
            reset_id: started.reset_id.clone(),
            code,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.result(), pb::CodeCheck::Verified);

    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();

    let _restarted = reset_binary(&stack, port).arg("serve").spawn().unwrap();
    let mut client = connect(port).await;
    let key = client
        .confirm_reset(portal(pb::ConfirmResetRequest {
            reset_id: started.reset_id,
        }))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_ne!(key.key_id, old_key.key_id);
    assert_eq!(stack.rotations("d1").await, 1);
    assert_eq!(
        stack.login_with("d1", &key).await,
        pb::VerifyResult::Accepted
    );
    let mails = stack.sink.wait_for_mails(2).await;
    assert!(
        mails[1].subject.contains("reissued") || mails[1].subject.contains("再発行"),
        "{}",
        mails[1].subject
    );
}

/// Unit level: the saga's `sweep()` called by hand over a reset set to CONFIRMING by SQL,
/// after a RotateKey made here with its saga ID (the process-level crash is above).
async fn sweep_records_a_rotation_the_keystore_made_for_a_confirming_saga(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old_key = stack.account("d2").await;
    let (reset_id, code) = stack.start_and_read_code("d2").await;
    stack.verify(&reset_id, &code).await.unwrap();

    // The saga persisted CONFIRMING and the keystore rotated; then the process died before
    // recording it.
    sql(&stack.reset_db, "UPDATE resets SET state = 'confirming'").await;
    let saga_id: String =
        sql(&stack.reset_db, "SELECT saga_id FROM resets").await[0].get("saga_id");
    let rotated = stack
        .keystore_client()
        .await
        .rotate_key(as_caller(
            "reset",
            pb::RotateKeyRequest {
                account_id: "d2".into(),
                idempotency_key: saga_id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();

    // On restart the sweeper finishes it: one rotation, recorded, notice sent.
    assert_eq!(stack.saga.sweep().await.unwrap(), 1);
    let rows = sql(
        &stack.reset_db,
        "SELECT state, new_key_id, notice_sent FROM resets",
    )
    .await;
    assert_eq!(rows[0].get::<String, _>("state"), "completed");
    assert_eq!(rows[0].get::<String, _>("new_key_id"), rotated.key_id);
    assert_eq!(rows[0].get::<i64, _>("notice_sent"), 1);
    stack.sink.wait_for_mails(2).await;

    // The user's retried ConfirmReset shows the key the keystore issued, once more.
    let key = stack.confirm(&reset_id).await.unwrap();
    assert_eq!(key.key_id, rotated.key_id);
    assert_eq!(key.secret_base32, rotated.secret_base32);
    assert_ne!(key.key_id, old_key.key_id);
    assert_eq!(stack.rotations("d2").await, 1);
    stack.assert_exactly_mailed(2).await; // the code mail and one notice
}

/// A TCP proxy in front of the keystore that can stall: while stalled it accepts
/// connections and keeps what the client sends without passing it on, as a keystore that
/// has stopped answering would; released, it passes the held bytes on and relays as usual.
struct StallingProxy {
    addr: std::net::SocketAddr,
    release: tokio::sync::watch::Sender<bool>,
    held: Arc<Mutex<Vec<u8>>>,
}

impl StallingProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (release, released) = tokio::sync::watch::channel(false);
        let held = Arc::new(Mutex::new(Vec::new()));
        let all_held = Arc::clone(&held);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut released = released.clone();
                let all_held = Arc::clone(&all_held);
                tokio::spawn(async move {
                    let mut kept = Vec::new();
                    let mut buf = [0_u8; 4096];
                    while !*released.borrow() {
                        tokio::select! {
                            read = client.read(&mut buf) => match read {
                                Ok(n) if n > 0 => {
                                    kept.extend_from_slice(&buf[..n]);
                                    all_held.lock().unwrap().extend_from_slice(&buf[..n]);
                                }
                                // The caller is gone; what it sent is still passed on.
                                _ => { let _ = released.wait_for(|r| *r).await; }
                            },
                            _ = released.changed() => {}
                        }
                    }
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if server.write_all(&kept).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            release,
            held,
        }
    }

    /// Whether a complete request (an HTTP/2 HEADERS frame and the DATA frame ending its
    /// stream) is being held.
    fn holds_a_whole_request(&self) -> bool {
        const PREFACE: usize = 24;
        let held = self.held.lock().unwrap();
        let mut at = PREFACE;
        let (mut headers, mut ended) = (false, false);
        while held.len() >= at + 9 {
            let len = usize::from(held[at]) << 16
                | usize::from(held[at + 1]) << 8
                | usize::from(held[at + 2]);
            let (kind, flags) = (held[at + 3], held[at + 4]);
            let stream =
                u32::from_be_bytes([held[at + 5], held[at + 6], held[at + 7], held[at + 8]])
                    & 0x7fff_ffff;
            headers |= kind == 0x1 && stream != 0;
            ended |= kind == 0x0 && stream != 0 && flags & 0x1 != 0;
            at += 9 + len;
        }
        headers && ended
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

async fn reset_state(stack: &Stack) -> (String, Option<String>, i64) {
    let rows = sql(
        &stack.reset_db,
        "SELECT state, new_key_id, notice_sent FROM resets",
    )
    .await;
    assert_eq!(rows.len(), 1);
    (
        rows[0].get("state"),
        rows[0].get("new_key_id"),
        rows[0].get("notice_sent"),
    )
}

/// Polls `check` every 25 ms until it holds or `secs` have passed.
async fn eventually<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The crash the saga is built for: the `kagi-reset` process is SIGKILLed while
/// ConfirmReset's rotation is in flight (CONFIRMING written, the RotateKey request held by
/// a stalled keystore). Restarted with its own sweeper, it finishes the reissue without
/// the user: one rotation, one notice, and the user's retried confirm shows that key.
async fn a_reset_process_killed_during_confirm_is_finished_once_by_its_sweeper(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old_key = stack.account("d3").await;
    let proxy = StallingProxy::start(stack.keystore_settings.server.listen_addr).await;
    let serve = |port: u16| {
        let mut command = reset_binary(&stack, port);
        command
            .env(
                "KAGI_RESET_KEYSTORE__ENDPOINT",
                format!("http://{}", proxy.addr),
            )
            .env("KAGI_RESET_KEYSTORE__TIMEOUT_MS", "30000")
            .env("KAGI_RESET_SWEEPER__INTERVAL_SECS", "1")
            .arg("serve");
        command
    };
    let port = free_port();
    let mut child = serve(port).spawn().unwrap();
    let client = connect(port).await;
    let started = client
        .clone()
        .start_reset(portal(pb::StartResetRequest {
            account_id: "d3".into(),
            password: PASSWORD.into(),
            client_ip: "192.0.2.21".into(),
            user_agent: "test".into(),
            locale: String::new(),
        }))
        .await
        .unwrap()
        .into_inner();
    let code = stack.sink.code_in_mail(1).await;
    let verified = client
        .clone()
        .verify_code(portal(pb::VerifyResetCodeRequest {
            reset_id: started.reset_id.clone(),
            code,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.result(), pb::CodeCheck::Verified);

    // 3. 最終確認: the user confirms; the keystore does not answer.
    let mut confirming = client.clone();
    let reset_id = started.reset_id.clone();
    let confirm = tokio::spawn(async move {
        confirming
            .confirm_reset(portal(pb::ConfirmResetRequest { reset_id }))
            .await
    });
    let held = &proxy;
    eventually(
        15,
        "RotateKey held at the stalled keystore",
        || async move { held.holds_a_whole_request() },
    )
    .await;
    assert_eq!(reset_state(&stack).await.0, "confirming");
    assert!(!confirm.is_finished(), "ConfirmReset is in flight");

    child.start_kill().unwrap(); // SIGKILL
    child.wait().await.unwrap();
    assert!(confirm.await.unwrap().is_err(), "the user saw the crash");
    assert_eq!(reset_state(&stack).await, ("confirming".into(), None, 0));
    assert_eq!(stack.rotations("d3").await, 0, "nothing rotated yet");

    // The keystore answers again (the held request goes through now), and the service is
    // restarted; its sweeper finishes the reissue before the user comes back.
    proxy.release();
    let _restarted = serve(port).spawn().unwrap();
    let stack = &stack;
    eventually(
        20,
        "the sweeper completes the saga and mails the notice",
        || async move {
            let (state, _, notice_sent) = reset_state(stack).await;
            state == "completed" && notice_sent == 1
        },
    )
    .await;
    let (_, recorded, _) = reset_state(stack).await;
    let recorded = recorded.unwrap();
    assert_ne!(recorded, old_key.key_id);

    // The user retries the confirmation: the key the sweeper recorded, shown again.
    let key = connect(port)
        .await
        .confirm_reset(portal(pb::ConfirmResetRequest {
            reset_id: started.reset_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.key_id, recorded);
    assert_eq!(stack.rotations("d3").await, 1, "exactly one rotation");
    assert_eq!(
        stack.login_with("d3", &key).await,
        pb::VerifyResult::Accepted
    );
    assert_eq!(
        stack.login_with("d3", &old_key).await,
        pb::VerifyResult::Rejected
    );
    // The code mail and one notice, to the recovery address.
    stack.assert_exactly_mailed(2).await;
    let notice = &stack.sink.mails()[1];
    assert!(notice.subject.contains("再発行"), "{}", notice.subject);
    assert_eq!(notice.to, [EMAIL]);
}
