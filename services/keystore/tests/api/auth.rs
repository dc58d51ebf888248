//! Callers authenticate, and each RPC admits only its own callers; health and reflection
//! stay open for probes and grpcurl.

use kagi_proto::v1 as pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::helpers::{Backend, TestApp, channel, spawn_app, token_of};
use kagi_testkit::both_backends;

both_backends!(
    a_call_without_a_token_is_unauthenticated,
    a_caller_outside_an_rpcs_list_is_permission_denied,
    health_and_reflection_answer_without_a_token,
    grpcurl_lists_and_calls_the_keystore_through_reflection,
);

async fn a_call_without_a_token_is_unauthenticated(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;

    let bare = tonic::Request::new(pb::VerifyCodeRequest {
        account_id: "taro".into(),
        code: "123456".into(),
    });
    let err = app.client.clone().verify_code(bare).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let mut forged = tonic::Request::new(pb::GetCurrentKeyRequest {
        account_id: "taro".into(),
        ..Default::default()
    });
    let almost = format!("Bearer {}x", token_of("portal"));
    forged
        .metadata_mut()
        .insert("authorization", almost.parse().unwrap());
    assert_eq!(
        app.client
            .clone()
            .get_current_key(forged)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
}

async fn a_caller_outside_an_rpcs_list_is_permission_denied(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro").await;

    // Only the reset service may rotate; the login system may only verify.
    let as_login = TestApp::as_caller(
        "login",
        pb::RotateKeyRequest {
            account_id: "taro".into(),
            idempotency_key: "x".into(),
        },
    );
    assert_eq!(
        app.client
            .clone()
            .rotate_key(as_login)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let as_onboarding = TestApp::as_caller(
        "onboarding",
        pb::VerifyCodeRequest {
            account_id: "taro".into(),
            code: "123456".into(),
        },
    );
    assert_eq!(
        app.client
            .clone()
            .verify_code(as_onboarding)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );
    let as_reset = TestApp::as_caller(
        "reset",
        pb::GetCurrentKeyRequest {
            account_id: "taro".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        app.client
            .clone()
            .get_current_key(as_reset)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied
    );

    assert_eq!(
        app.current_key("taro").await.unwrap().key_id,
        key.key_id,
        "the refused rotation changed nothing"
    );
}

async fn health_and_reflection_answer_without_a_token(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let channel = channel(app.addr).await;

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "kagi.v1.Keystore"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"kagi.v1.Keystore".to_owned()), "{names:?}");
    assert!(
        names.contains(&"kagi.v1.KeystoreAdmin".to_owned()),
        "the help desk's contract is served by the service that owns the data: {names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );
    // Only the keystore's own API: the other kagi services live elsewhere.
    for other in [
        "kagi.v1.Reset",
        "kagi.v1.Directory",
        "kagi.v1.Notifier",
        "kagi.v1.ResetAdmin",
        "kagi.v1.NotifierAdmin",
    ] {
        assert!(!names.contains(&other.to_owned()), "{names:?}");
    }
}

/// The real grpcurl binary, knowing nothing but the address, discovers and calls the API.
async fn grpcurl_lists_and_calls_the_keystore_through_reflection(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let addr = app.addr.to_string();
    let program = kagi_testkit::peers::grpcurl();
    let grpcurl = |args: Vec<String>| {
        let program = program.clone();
        async move {
            let output = tokio::process::Command::new(&program)
                .args(&args)
                .output()
                .await
                .unwrap_or_else(|e| panic!("{} runs: {e}", program.display()));
            assert!(
                output.status.success(),
                "grpcurl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).unwrap()
        }
    };

    let services = grpcurl(vec!["-plaintext".into(), addr.clone(), "list".into()]).await;
    assert!(
        services.lines().any(|l| l == "kagi.v1.Keystore"),
        "{services}"
    );
    let methods = grpcurl(vec![
        "-plaintext".into(),
        addr.clone(),
        "list".into(),
        "kagi.v1.Keystore".into(),
    ])
    .await;
    for rpc in [
        "Enroll",
        "GetCurrentKey",
        "RotateKey",
        "VerifyCode",
        "CheckLoginPolicy",
        "ListAuditEvents",
        "CheckAuthenticator",
    ] {
        assert!(
            methods.contains(&format!("kagi.v1.Keystore.{rpc}")),
            "{methods}"
        );
    }
    let reply = grpcurl(vec![
        "-plaintext".into(),
        "-H".into(),
        format!("authorization: Bearer {}", token_of("login")),
        "-d".into(),
        r#"{"client_ip":"203.0.113.9"}"#.into(),
        addr,
        "kagi.v1.Keystore/CheckLoginPolicy".into(),
    ])
    .await;
    assert!(reply.contains(r#""otpRequired": true"#), "{reply}");
}
