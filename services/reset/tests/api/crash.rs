//! Crashes mid-saga: a `kagi-reset` process killed with SIGKILL and restarted, and a crash
//! after the keystore rotated but before the saga recorded it.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::reset_client::ResetClient;
use sqlx::Row as _;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{Backend, CODE_KEY, EMAIL, PASSWORD, Stack, as_caller, portal, sql, token_of};
use kagi_testkit::both_backends;

both_backends!(
    a_reset_process_killed_after_verify_confirms_after_restart,
    a_crash_after_the_keystore_rotated_is_finished_once,
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

async fn a_crash_after_the_keystore_rotated_is_finished_once(backend: Backend) {
    let stack = Stack::start(backend).await;
    let old_key = stack.account("d2").await;
    let (reset_id, code) = stack.start_and_read_code("d2").await;
    stack.verify(&reset_id, &code).await.unwrap();

    // The saga persisted CONFIRMING and the keystore rotated; then the process died before
    // recording it.
    sql(&stack.db, "UPDATE resets SET state = 'confirming'").await;
    let saga_id: String = sql(&stack.db, "SELECT saga_id FROM resets").await[0].get("saga_id");
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
        &stack.db,
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stack.sink.mails().len(), 2, "one notice");
}
