//! The code is a secret: never in a log line or span, sealed while queued, wiped from storage
//! once handled.

use kagi_proto::v1 as pb;
use mail_parser::MessageParser;
use sqlx::Row as _;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(
    the_code_never_reaches_the_logs,
    a_queued_code_is_sealed_in_the_database,
    a_replica_with_another_payload_key_leaves_the_mail_to_one_with_the_right_key,
);

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
    assert!(
        !kagi_testkit::logs::mentions(logs.as_bytes(), code),
        "the code leaked into the logs"
    );
    app.stop().await;
    sink.stop().await;
}

async fn a_queued_code_is_sealed_in_the_database(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let code = if backend == Backend::Sqlite {
        "583920"
    } else {
        "583921"
    };
    let mut settings = test_settings(&db, sink.port);
    settings.delivery.worker_enabled = false;
    let queue_only = TestApp::spawn(settings).await;
    let id = queue_only
        .send_reset_code(&unique("sealed"), "taro@example.ac.jp", code)
        .await
        .unwrap();

    // Queued, the row holds the payload sealed, and the code is nowhere in the database.
    let row = sqlx::query("SELECT payload FROM deliveries WHERE id = $1")
        .bind(&id)
        .fetch_one(queue_only.store.pool())
        .await
        .unwrap();
    let payload: String = row.get("payload");
    assert!(payload.starts_with("sealed:v1:"), "{payload}");
    match db.sqlite_dir() {
        // Every file of the database: the main file, its write-ahead log, its index.
        Some(dir) => {
            let mut row_seen = false;
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let bytes = std::fs::read(&path).unwrap();
                row_seen |= bytes.windows(id.len()).any(|w| w == id.as_bytes());
                assert!(
                    !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
                    "the code is in {}",
                    path.display()
                );
            }
            assert!(row_seen, "the scan never saw the queued row");
        }
        // Every column of every row, as PostgreSQL prints it.
        None => {
            let rows = sqlx::query("SELECT CAST(d AS TEXT) AS r FROM deliveries d")
                .fetch_all(queue_only.store.pool())
                .await
                .unwrap();
            assert_eq!(rows.len(), 1);
            let text: String = rows[0].get("r");
            assert!(text.contains(&id), "{text}");
            assert!(!text.contains(code), "the code is in the row: {text}");
        }
    }
    queue_only.stop().await;

    // A notifier with the same key opens it, and the user gets the code.
    let sender = TestApp::spawn(test_settings(&db, sink.port)).await;
    assert_eq!(
        sender.wait_handled(&id).await.state(),
        pb::DeliveryState::Sent
    );
    let mails = sink.mails();
    assert_eq!(mails.len(), 1);
    let mail = MessageParser::default().parse(&mails[0]).unwrap();
    let text = mail.body_text(0).unwrap();
    assert!(text.contains(code), "{text}");
    sender.stop().await;
    sink.stop().await;
}

async fn a_replica_with_another_payload_key_leaves_the_mail_to_one_with_the_right_key(
    backend: Backend,
) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.delivery.worker_enabled = false;
    let queue_only = TestApp::spawn(settings).await;
    let id = queue_only
        .send_reset_code(&unique("other-key"), "taro@example.ac.jp", "192837")
        .await
        .unwrap();
    queue_only.stop().await;

    // A misconfigured replica with a key of its own cannot open it: it says why, keeps the
    // payload and leaves the message queued instead of failing it.
    let other_key = tempfile::tempdir().unwrap();
    let mut settings = test_settings(&db, sink.port);
    settings.sealing.key_file = other_key.path().join("payload-key");
    let misconfigured = TestApp::spawn(settings).await;
    let deferred = misconfigured.wait_for(&id, |d| d.attempts >= 1).await;
    assert_eq!(deferred.state(), pb::DeliveryState::Queued);
    assert!(
        deferred.last_reply.contains("sealing.key_file"),
        "{}",
        deferred.last_reply
    );
    assert!(misconfigured.store.has_payload(&id).await.unwrap());
    misconfigured.stop().await;
    assert!(sink.mails().is_empty());

    // A replica with the queue's key sends it.
    let right = TestApp::spawn(test_settings(&db, sink.port)).await;
    assert_eq!(
        right.wait_handled(&id).await.state(),
        pb::DeliveryState::Sent
    );
    assert_eq!(sink.mails().len(), 1);
    right.stop().await;
    sink.stop().await;
}
