//! One reset, StartReset to ConfirmReset, is one trace across kagi-reset, kagi-keystore and
//! kagi-notifier (W3C context over gRPC), exported to a real OTLP receiver on 127.0.0.1.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_testkit::otlp::ExportedSpan;
use tonic::transport::Channel;

use crate::helpers::{Backend, CODE_KEY, EMAIL, PASSWORD, SmtpSink, TestDatabase, token_of};
use kagi_testkit::{both_backends, free_port};

both_backends!(one_reset_is_one_trace_across_the_three_services);

/// A sibling binary of `kagi-reset` in the target directory, built if missing.
fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_kagi-reset")).with_file_name(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .args(["build", "-p", name, "--bin", name])
            .status()
            .unwrap();
        assert!(built.success(), "building {name}");
    }
    path
}

async fn connect(port: u16) -> Channel {
    let endpoint = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
    for _ in 0..200 {
        if let Ok(channel) = endpoint.connect().await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing came up on {port}");
}

fn traced<T>(message: T, trace_id: &str, parent: &str) -> tonic::Request<T> {
    let mut request = crate::helpers::portal(message);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{parent}-01").parse().unwrap(),
    );
    request
}

async fn sigterm(child: &mut tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap()
        .unwrap();
}

fn env(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

async fn one_reset_is_one_trace_across_the_three_services(backend: Backend) {
    let (collector, endpoint) = kagi_testkit::otlp::Collector::start().await;
    let sink = SmtpSink::start().await;
    let work = tempfile::tempdir().unwrap();
    let keystore_db = TestDatabase::new(Backend::Sqlite, "keystore.db").await;
    let notifier_db = TestDatabase::new(Backend::Sqlite, "notifier.db").await;
    let reset_db = TestDatabase::new(backend, "reset.db").await;
    let (ks_port, nt_port, rs_port) = (free_port(), free_port(), free_port());
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);

    let spawn = |name: &str, envs: Vec<(String, String)>| {
        tokio::process::Command::new(binary(name))
            .arg("serve")
            .current_dir(work.path())
            .envs(envs)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let mut keystore = spawn(
        "kagi-keystore",
        env(&[
            (
                "KAGI_KEYSTORE_SERVER__LISTEN_ADDR",
                format!("127.0.0.1:{ks_port}"),
            ),
            ("KAGI_KEYSTORE_DATABASE__URL", keystore_db.url.clone()),
            ("KAGI_KEYSTORE_KEK__KEYS__K1", b64(&[11_u8; 32])),
            ("KAGI_KEYSTORE_AUTH__TOKENS__RESET", token_of("reset")),
            (
                "KAGI_KEYSTORE_AUTH__TOKENS__ONBOARDING",
                token_of("onboarding"),
            ),
        ]),
    );
    let mut notifier = spawn(
        "kagi-notifier",
        env(&[
            (
                "KAGI_NOTIFIER_SERVER__LISTEN_ADDR",
                format!("127.0.0.1:{nt_port}"),
            ),
            ("KAGI_NOTIFIER_DATABASE__URL", notifier_db.url.clone()),
            ("KAGI_NOTIFIER_AUTH__TOKENS__RESET", token_of("reset")),
            ("KAGI_NOTIFIER_TRANSPORT__KIND", "smtp".into()),
            ("KAGI_NOTIFIER_TRANSPORT__SMTP__HOST", "127.0.0.1".into()),
            ("KAGI_NOTIFIER_TRANSPORT__SMTP__PORT", sink.port.to_string()),
            ("KAGI_NOTIFIER_TRANSPORT__SMTP__TLS", "none".into()),
            ("KAGI_NOTIFIER_DELIVERY__POLL_INTERVAL_MS", "25".into()),
        ]),
    );
    let mut reset = spawn(
        "kagi-reset",
        env(&[
            (
                "KAGI_RESET_SERVER__LISTEN_ADDR",
                format!("127.0.0.1:{rs_port}"),
            ),
            ("KAGI_RESET_DATABASE__URL", reset_db.url.clone()),
            ("KAGI_RESET_CODE_HMAC_KEY", b64(&CODE_KEY)),
            ("KAGI_RESET_AUTH__TOKENS__PORTAL", token_of("portal")),
            (
                "KAGI_RESET_KEYSTORE__ENDPOINT",
                format!("http://127.0.0.1:{ks_port}"),
            ),
            ("KAGI_RESET_KEYSTORE__TOKEN", token_of("reset")),
            (
                "KAGI_RESET_NOTIFIER__ENDPOINT",
                format!("http://127.0.0.1:{nt_port}"),
            ),
            ("KAGI_RESET_NOTIFIER__TOKEN", token_of("reset")),
            ("KAGI_RESET_PASSWORD__MEMORY_KIB", "1024".into()),
            ("KAGI_RESET_PASSWORD__ITERATIONS", "1".into()),
        ]),
    );

    // Onboarding: the account has a key and a directory entry.
    KeystoreClient::new(connect(ks_port).await)
        .enroll(crate::helpers::as_caller(
            "onboarding",
            pb::EnrollRequest {
                account_id: "traced".into(),
            },
        ))
        .await
        .unwrap();
    let mut client = ResetClient::new(connect(rs_port).await);
    let directory = kagi_reset::store::Db::connect(&reset_db.url, 1)
        .await
        .unwrap();
    let hasher =
        kagi_reset::directory::PasswordHasher::new(kagi_reset::directory::PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: 1,
        })
        .unwrap();
    kagi_reset::accounts::AccountAdmin::new(directory.clone(), std::sync::Arc::new(hasher))
        .add("traced", EMAIL, secrecy::SecretString::from(PASSWORD), 0)
        .await
        .unwrap();
    directory.close().await;

    // The portal's one user journey, under one trace.
    let (trace_id, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let started = client
        .start_reset(traced(
            pb::StartResetRequest {
                account_id: "traced".into(),
                password: PASSWORD.into(),
                client_ip: "192.0.2.30".into(),
                user_agent: "test".into(),
                locale: String::new(),
            },
            trace_id,
            parent,
        ))
        .await
        .unwrap()
        .into_inner();
    let code = sink.code_in_mail(1).await;
    let verify = pb::VerifyResetCodeRequest {
        reset_id: started.reset_id.clone(),
        code: code.clone(),
    };
    client
        .verify_code(traced(verify, trace_id, parent))
        .await
        .unwrap();
    let confirm = pb::ConfirmResetRequest {
        reset_id: started.reset_id.clone(),
    };
    let key = client
        .confirm_reset(traced(confirm, trace_id, parent))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    sink.wait_for_mails(2).await;

    // SIGTERM flushes each exporter on the way out.
    for child in [&mut reset, &mut notifier, &mut keystore] {
        sigterm(child).await;
    }

    let spans = collector.spans();
    let ours: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let dump = || {
        ours.iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {} {:?}",
                    s.service, s.name, s.span_id, s.parent_span_id, s.attributes
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let span = |service: &str, name: &str| -> &ExportedSpan {
        let found: Vec<_> = ours
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "one {service} span {name}:\n{}", dump());
        found[0]
    };
    let has = |s: &ExportedSpan, attribute: &str| {
        assert!(
            s.attributes.iter().any(|a| a == attribute),
            "{} lacks {attribute}: {:?}",
            s.name,
            s.attributes
        );
    };
    let child_of = |child: &ExportedSpan, parent: &ExportedSpan| {
        assert_eq!(
            child.parent_span_id,
            parent.span_id,
            "{}/{} is a child of {}/{}:\n{}",
            child.service,
            child.name,
            parent.service,
            parent.name,
            dump()
        );
    };

    // Each call's server span joins the caller's span (the portal's, here), and the
    // handler's span below it carries the account and the saga, never anything secret.
    let mut saga_ids = Vec::new();
    for (rpc, handler) in [
        ("StartReset", "Reset.StartReset"),
        ("VerifyCode", "Reset.VerifyCode"),
        ("ConfirmReset", "Reset.ConfirmReset"),
    ] {
        let server = span("kagi-reset", &format!("kagi.v1.Reset/{rpc}"));
        assert_eq!(
            server.parent_span_id, parent,
            "{rpc} joins the caller's span"
        );
        has(server, "rpc.system=grpc");
        has(server, &format!("rpc.method=/kagi.v1.Reset/{rpc}"));
        let handled = span("kagi-reset", handler);
        child_of(handled, server);
        has(handled, "account_id=traced");
        let saga_id = handled
            .attributes
            .iter()
            .find_map(|a| a.strip_prefix("saga="))
            .unwrap_or_else(|| panic!("{handler} has no saga tag: {:?}", handled.attributes));
        saga_ids.push(saga_id.to_owned());
    }
    assert!(
        saga_ids.iter().all(|id| *id == saga_ids[0]),
        "one saga across the three calls: {saga_ids:?}"
    );
    has(
        span("kagi-reset", "Reset.VerifyCode"),
        "result=CODE_CHECK_VERIFIED",
    );

    // Downstream, the W3C context travels from inside the reset service's handler: the
    // reset service has no client spans of its own, so the keystore's and the notifier's
    // server spans are children of the handler span that made the call.
    let rotate = span("kagi-keystore", "kagi.v1.Keystore/RotateKey");
    child_of(rotate, span("kagi-reset", "Reset.ConfirmReset"));
    has(rotate, "rpc.method=/kagi.v1.Keystore/RotateKey");
    let rotate_handler = span("kagi-keystore", "Keystore.RotateKey");
    child_of(rotate_handler, rotate);
    has(rotate_handler, "account_id=traced");
    child_of(
        span("kagi-notifier", "kagi.v1.Notifier/SendResetCode"),
        span("kagi-reset", "Reset.StartReset"),
    );
    child_of(
        span("kagi-notifier", "kagi.v1.Notifier/SendKeyReissuedNotice"),
        span("kagi-reset", "Reset.ConfirmReset"),
    );
    let everything = format!("{spans:?}");
    for secret in [
        PASSWORD,
        code.as_str(),
        started.reset_id.as_str(),
        key.secret_base32.as_str(),
    ] {
        assert!(!everything.contains(secret), "a secret reached a span");
    }
}
