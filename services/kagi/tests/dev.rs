//! README's first command, `kagi dev`, run as a newcomer would: it starts every service,
//! enrolls the demo account, and the printed key and tokens really work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use kagi_proto::v1 as pb;
use tokio::io::{AsyncBufReadExt as _, BufReader};

fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kagi_dev_runs_the_system_with_a_working_demo_account() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi"))
        .args([
            "dev",
            "--keystore-addr",
            "127.0.0.1:0",
            "--notifier-addr",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // Read the banner up to its last line.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            banner.push_str(&line);
            banner.push('\n');
            if line.contains("Ctrl-C stops everything") {
                break;
            }
        }
    })
    .await
    .expect("kagi dev prints its banner");
    let field = |prefix: &str| -> String {
        let line = banner
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("{banner}"));
        line.split_whitespace()
            .nth(if prefix == "keystore" || prefix == "notifier" {
                1
            } else {
                3
            })
            .unwrap()
            .to_owned()
    };
    let keystore = field("keystore").replace("grpc://", "http://");
    let notifier = field("notifier").replace("grpc://", "http://");
    let account = field("demo account");
    let secret_line = banner
        .lines()
        .find(|l| l.trim_start().starts_with("setup key"))
        .unwrap();
    let secret: String = secret_line
        .split(':')
        .nth(1)
        .unwrap()
        .split_whitespace()
        .collect();
    let token = |caller: &str| {
        std::fs::read_to_string(dir.path().join("data/callers").join(caller)).unwrap()
    };

    // The printed key works with the keystore, as the login system would check it.
    let raw = data_encoding::BASE32_NOPAD
        .decode(secret.as_bytes())
        .unwrap();
    let totp = totp_rs::Builder::new().with_secret(raw).build().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut keystore_client = pb::keystore_client::KeystoreClient::connect(keystore)
        .await
        .unwrap();
    let request = pb::VerifyCodeRequest {
        account_id: account.clone(),
        code: totp.generate(now).to_string(),
    };
    let reply = keystore_client
        .verify_code(bearer(&token("login"), request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.result(), pb::VerifyResult::Accepted, "{banner}");

    // The notifier writes mail to the outbox, no SMTP server needed.
    let mut notifier_client = pb::notifier_client::NotifierClient::connect(notifier)
        .await
        .unwrap();
    let expires_at = prost_types::Timestamp {
        seconds: i64::try_from(now).unwrap() + 1800,
        nanos: 0,
    };
    let request = pb::SendResetCodeRequest {
        message_id: "dev-test-1".into(),
        recipient: "demo@example.ac.jp".into(),
        account_id: account,
        code: "123456".into(),
        expires_at: Some(expires_at),
        locale: "ja".into(),
    };
    notifier_client
        .send_reset_code(bearer(&token("reset"), request))
        .await
        .unwrap();
    let outbox = dir.path().join("data/outbox");
    let mut mails = 0;
    for _ in 0..100 {
        mails = std::fs::read_dir(&outbox).map(|d| d.count()).unwrap_or(0);
        if mails > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mails, 1, "one .eml in the outbox");

    // Ctrl-C stops everything cleanly.
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .await
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
