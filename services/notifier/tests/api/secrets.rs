//! The code is a secret: never in a log line or span, wiped from storage once handled.

use kagi_proto::v1 as pb;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(the_code_never_reaches_the_logs);

async fn the_code_never_reaches_the_logs(backend: Backend) {
    let sink = SmtpSink::start("451,550").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    // A code no other test uses, through every path: queued, deferred, failed, refused.
    let code = if backend == Backend::Sqlite {
        "860217"
    } else {
        "860218"
    };

    let id = app
        .send_reset_code(&unique("secret"), "taro@example.ac.jp", code)
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;
    assert_eq!(delivery.state(), pb::DeliveryState::Failed);
    let refused = app
        .send_reset_code(&unique("secret"), "not an address", code)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let logs = captured_logs();
    assert!(logs.contains(&id), "the delivery was logged at all");
    assert!(!logs.contains(code), "the code leaked into the logs");
    app.stop().await;
    sink.stop().await;
}
