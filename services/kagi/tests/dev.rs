//! README's first command, `kagi dev`, run as a newcomer would: it starts every service,
//! enrolls the demo account, and the printed key, password and tokens really work, down to
//! a whole reissue with the code read from the outbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
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

/// The value printed after `label` in the banner (`keystore  grpc://…`, `password     : …`).
fn field(banner: &str, label: &str) -> String {
    let line = banner
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("{banner}"));
    let value = line.trim_start()[label.len()..]
        .trim_start()
        .trim_start_matches(':')
        .trim();
    value.split_whitespace().next().unwrap().to_owned()
}

/// The `/metrics` address printed on `service`'s banner line (`… metrics http://…/metrics)`).
fn metrics_of(banner: &str, service: &str) -> std::net::SocketAddr {
    let line = banner
        .lines()
        .find(|l| l.trim_start().starts_with(service))
        .unwrap_or_else(|| panic!("{banner}"));
    let url = line
        .split("metrics http://")
        .nth(1)
        .unwrap_or_else(|| panic!("no metrics address on {line:?}"));
    url.split('/').next().unwrap().parse().unwrap()
}

/// Every service's `/metrics` on a free port, so tests never collide on 9051….
const FREE_METRICS_PORTS: [&str; 8] = [
    "--keystore-metrics-addr",
    "127.0.0.1:0",
    "--reset-metrics-addr",
    "127.0.0.1:0",
    "--notifier-metrics-addr",
    "127.0.0.1:0",
    "--portal-metrics-addr",
    "127.0.0.1:0",
];

/// The confirmation codes in the outbox's mails so far.
fn codes_in_outbox(outbox: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(outbox) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let raw = std::fs::read(e.unwrap().path()).unwrap();
            let mail = mail_parser::MessageParser::default().parse(&raw)?;
            let body = mail.body_text(0)?.into_owned();
            body.lines()
                .find_map(|l| l.strip_prefix("確認コード: ").map(|c| c.trim().to_owned()))
        })
        .collect()
}

/// A plain HTTP/1.1 GET, as a browser's first request would be: (status line, body).
async fn http_get(url: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept-Language: ja\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

async fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..200 {
        if let Some(found) = probe() {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kagi_dev_runs_the_system_with_a_working_demo_account() {
    let dir = tempfile::tempdir().unwrap();
    // A code mail a previous run left behind, long past its 30 minutes.
    let outbox = dir.path().join("data/outbox");
    std::fs::create_dir_all(&outbox).unwrap();
    let stale = outbox.join("left-behind.eml");
    std::fs::File::create(&stale)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi"))
        .args([
            "dev",
            "--keystore-addr",
            "127.0.0.1:0",
            "--reset-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--notifier-addr",
            "127.0.0.1:0",
            "--portal-addr",
            "127.0.0.1:0",
        ])
        .args(FREE_METRICS_PORTS)
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
    let endpoint = |service: &str| field(&banner, service).replace("grpc://", "http://");
    // Codes do not pile up in clear: stale mails are gone, the folder is its owner's only.
    assert!(
        !stale.exists(),
        "a mail past the code's lifetime was deleted"
    );
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&outbox).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the outbox is private");
    }
    let portal = field(&banner, "portal");

    // The portal's top page is the manual's: the three menus.
    let (status, top) = http_get(&portal).await;
    assert!(status.ends_with("200 OK"), "{status}");
    for menu in [
        "二要素認証管理システム",
        "現在のセットアップキーを表示する",
        "セットアップキーを再発行する",
    ] {
        assert!(top.contains(menu), "top page lacks {menu}");
    }
    let account = field(&banner, "demo account");
    let secret: String = {
        let line = banner
            .lines()
            .find(|l| l.trim_start().starts_with("setup key"))
            .unwrap();
        line.split(':').nth(1).unwrap().split_whitespace().collect()
    };
    let token = |caller: &str| {
        std::fs::read_to_string(dir.path().join("data/callers").join(caller)).unwrap()
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let code_of = |base32: &str, at: u64| {
        let raw = data_encoding::BASE32_NOPAD
            .decode(base32.as_bytes())
            .unwrap();
        totp_rs::Builder::new()
            .with_secret(raw)
            .build()
            .unwrap()
            .generate(at)
            .to_string()
    };

    // The printed key works with the keystore, as the login system would check it.
    let mut keystore = pb::keystore_client::KeystoreClient::connect(endpoint("keystore"))
        .await
        .unwrap();
    let check = |code: String| pb::VerifyCodeRequest {
        account_id: account.clone(),
        code,
    };
    let reply = keystore
        .verify_code(bearer(&token("login"), check(code_of(&secret, now()))))
        .await
        .unwrap();
    assert_eq!(
        reply.into_inner().result(),
        pb::VerifyResult::Accepted,
        "{banner}"
    );

    // Menu 2 end to end, as the portal drives it, with the printed password and the code
    // read from the outbox (no SMTP server).
    let mut reset = pb::reset_client::ResetClient::connect(endpoint("reset"))
        .await
        .unwrap();
    let start = pb::StartResetRequest {
        account_id: account.clone(),
        password: field(&banner, "password"),
        client_ip: "203.0.113.5".into(),
        user_agent: "kagi-dev-test".into(),
        locale: "ja".into(),
    };
    let reset_id = reset
        .start_reset(bearer(&token("portal"), start))
        .await
        .unwrap()
        .into_inner()
        .reset_id;
    let outbox = dir.path().join("data/outbox");
    let code = until("the code mail", || codes_in_outbox(&outbox).pop()).await;
    let verify = pb::VerifyResetCodeRequest {
        reset_id: reset_id.clone(),
        code: code.clone(),
    };
    let checked = reset
        .verify_code(bearer(&token("portal"), verify))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checked.result(), pb::CodeCheck::Verified);
    let confirm = pb::ConfirmResetRequest { reset_id };
    let new_key = reset
        .confirm_reset(bearer(&token("portal"), confirm))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_ne!(new_key.secret_base32, secret, "a new key was issued");

    // The new key works from the next time step; the old one no longer does.
    let next_step = (now() / 30 + 1) * 30;
    let old = keystore
        .verify_code(bearer(&token("login"), check(code_of(&secret, next_step))))
        .await
        .unwrap();
    assert_eq!(old.into_inner().result(), pb::VerifyResult::Rejected);
    let new = keystore
        .verify_code(bearer(
            &token("login"),
            check(code_of(&new_key.secret_base32, next_step)),
        ))
        .await
        .unwrap();
    assert_eq!(new.into_inner().result(), pb::VerifyResult::Accepted);
    until("the key-reissued notice", || {
        (std::fs::read_dir(&outbox).unwrap().count() >= 2).then_some(())
    })
    .await;
    // In dev mode the portal shows the outbox, so a newcomer can read the code there.
    let (status, outbox_page) = http_get(&format!("{}/outbox", portal.trim_end_matches('/'))).await;
    assert!(status.ends_with("200 OK"), "{status}");
    assert!(
        outbox_page.contains("二要素認証の再設定のご案内"),
        "the code mail is listed"
    );
    assert!(outbox_page.contains(&code), "with the code in it");

    // Metrics are on in dev, each service on the port its banner line names: the
    // keystore's counted the three VerifyCode calls above, and promtool accepts them.
    let metrics = metrics_of(&banner, "keystore");
    let text = kagi_testkit::metrics::scrape(metrics).await;
    assert_eq!(
        kagi_testkit::metrics::value(
            &text,
            "grpc_server_handled_total{grpc_service=\"kagi.v1.Keystore\",grpc_method=\"VerifyCode\",grpc_code=\"OK\"}"
        ),
        3.0,
        "{text}"
    );
    kagi_testkit::metrics::promtool_check(&kagi_testkit::metrics::scrape_text(metrics).await);
    for service in ["keystore", "reset", "notifier", "portal"] {
        let addr = metrics_of(&banner, service);
        assert_eq!(
            kagi_testkit::metrics::probe(addr, "/readyz").await,
            200,
            "{service}"
        );
    }

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

/// A TLS channel to `endpoint` (`grpcs://host:port` as the banner prints it), trusting the
/// dev CA and presenting `caller`'s certificate from `<data>/tls/`.
async fn mtls_channel(data: &Path, endpoint: &str, caller: &str) -> tonic::transport::Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |name: String| std::fs::read(data.join("tls").join(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt".into())))
        .identity(Identity::from_pem(
            read(format!("{caller}.crt")),
            read(format!("{caller}.key")),
        ))
        .domain_name("localhost");
    tonic::transport::Endpoint::from_shared(endpoint.replace("grpcs://", "https://"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// `kagi dev --tls`: every gRPC hop on TLS with client certificates from a CA it generates;
/// a caller's certificate alone (no token) is its credential, as the printed grpcurl line
/// shows; a plaintext client gets nothing; the reissue runs through the reset service's own
/// mTLS hops to the keystore and the notifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kagi_dev_tls_runs_every_hop_on_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi"))
        .args(["dev", "--tls", "--keystore-addr", "127.0.0.1:0"])
        .args([
            "--reset-addr",
            "127.0.0.1:0",
            "--notifier-addr",
            "127.0.0.1:0",
        ])
        .args(["--portal-addr", "127.0.0.1:0"])
        .args(FREE_METRICS_PORTS)
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    .expect("kagi dev --tls prints its banner");
    let data = dir.path().join("data");
    let keystore_at = field(&banner, "keystore");
    assert!(keystore_at.starts_with("grpcs://"), "{banner}");
    assert!(banner.contains("grpcurl -cacert"), "{banner}");
    assert!(!banner.contains("-plaintext"), "{banner}");

    // The login system's certificate alone is enough to check a code.
    let account = field(&banner, "demo account");
    let mut keystore =
        pb::keystore_client::KeystoreClient::new(mtls_channel(&data, &keystore_at, "login").await);
    let reply = keystore
        .verify_code(pb::VerifyCodeRequest {
            account_id: account.clone(),
            code: "000000".into(),
        })
        .await
        .expect("known by its certificate");
    assert_ne!(reply.into_inner().result(), pb::VerifyResult::Unspecified);

    // A plaintext client, even with the right token, gets nothing.
    let plaintext =
        pb::keystore_client::KeystoreClient::connect(keystore_at.replace("grpcs://", "http://"))
            .await;
    if let Ok(mut plaintext) = plaintext {
        let token = std::fs::read_to_string(data.join("callers/login")).unwrap();
        let refused = plaintext
            .verify_code(bearer(
                &token,
                pb::VerifyCodeRequest {
                    account_id: account.clone(),
                    code: "000000".into(),
                },
            ))
            .await;
        assert!(refused.is_err(), "plaintext was served");
    }

    // The portal's certificate starts a reset: the reset service reaches the notifier over
    // mTLS (the code mail lands in the outbox).
    let mut reset = pb::reset_client::ResetClient::new(
        mtls_channel(&data, &field(&banner, "reset"), "portal").await,
    );
    reset
        .start_reset(pb::StartResetRequest {
            account_id: account,
            password: field(&banner, "password"),
            client_ip: "203.0.113.5".into(),
            user_agent: "kagi-dev-test".into(),
            locale: "ja".into(),
        })
        .await
        .expect("the portal's certificate starts a reset");
    until("the code mail", || {
        codes_in_outbox(&data.join("outbox")).pop()
    })
    .await;

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

/// `kagi admin` (issue 15, part 3) against the services `kagi dev` runs: the account as a
/// table or JSON, an unlock with its reason in the keystore's trail and a mail queued for
/// the user, and no action without a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kagi_admin_looks_up_and_unlocks_over_grpc_as_the_help_desk() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kagi"))
        .args([
            "dev",
            "--keystore-addr",
            "127.0.0.1:0",
            "--reset-addr",
            "127.0.0.1:0",
        ])
        .args([
            "--notifier-addr",
            "127.0.0.1:0",
            "--portal-addr",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
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
    let endpoint = |service: &str| field(&banner, service).replace("grpc://", "http://");
    assert_eq!(
        field(&banner, "operator"),
        "operator",
        "the demo operator is printed"
    );
    let admin = |args: &[&str]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kagi"));
        command
            .arg("admin")
            .args(args)
            .args(["--operator", "operator"])
            .args([
                "--keystore",
                &endpoint("keystore"),
                "--reset",
                &endpoint("reset"),
            ])
            .args(["--notifier", &endpoint("notifier")])
            .current_dir(dir.path());
        command.output().unwrap()
    };
    let json = |args: &[&str]| -> serde_json::Value {
        let out = admin(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let token = std::fs::read_to_string(dir.path().join("data/callers/login")).unwrap();
    let mut keystore = pb::keystore_client::KeystoreClient::connect(endpoint("keystore"))
        .await
        .unwrap();
    for _ in 0..5 {
        let wrong = pb::VerifyCodeRequest {
            account_id: "demo".into(),
            code: "000000".into(),
        };
        keystore.verify_code(bearer(&token, wrong)).await.unwrap();
    }

    let seen = json(&["account", "demo", "--json"]);

    assert_eq!(seen["key"]["enrolled"], true);
    assert_eq!(seen["key"]["algorithm"], "SHA1");
    assert_eq!(seen["key"]["times_locked"], 1);
    assert!(seen["key"]["locked_until"].is_string(), "{seen}");
    assert_eq!(seen["reset"]["recovery"], "d****@e*****.ac.jp");
    let table = admin(&["account", "demo"]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.contains("times_locked") && table.contains("lockout"),
        "{table}"
    );

    let no_reason = admin(&["unlock", "demo", "--reason", " "]);
    assert!(!no_reason.status.success());
    assert!(
        String::from_utf8_lossy(&no_reason.stderr).contains("reason is required"),
        "{}",
        String::from_utf8_lossy(&no_reason.stderr)
    );
    let unlocked = json(&[
        "unlock",
        "demo",
        "--reason",
        "user called from the exam room",
        "--json",
    ]);
    assert_eq!(unlocked["was_locked"], true);
    assert_eq!(unlocked["user_mailed"], true);

    let after = json(&["account", "demo", "--json"]);
    assert!(after["key"]["locked_until"].is_null(), "{after}");
    let audit = after["audit"].as_array().unwrap();
    let unlock = audit
        .iter()
        .find(|e| e["action"] == "admin_unlock")
        .unwrap_or_else(|| panic!("{after}"));
    assert_eq!(unlock["caller"], "helpdesk");
    assert_eq!(
        unlock["detail"],
        "operator=operator reason=user called from the exam room"
    );
    let kinds: Vec<&str> = after["mails"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"OPERATOR_ACTION_NOTICE"), "{kinds:?}");
}
