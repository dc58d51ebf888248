//! What callers may ask: validation, idempotency, the rate limit and authentication.

use std::time::Duration;

use chrono::Utc;
use kagi_proto::v1 as pb;
use sqlx::Row as _;
use tonic::Code;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(
    bad_input_is_refused_and_nothing_is_queued,
    the_same_message_id_twice_sends_one_mail,
    a_message_id_cannot_be_reused_for_another_message,
    the_thirteenth_reset_mail_in_an_hour_is_refused,
    a_burst_of_concurrent_reset_mails_still_stops_at_twelve,
    with_the_allowance_lifted_every_mail_is_queued_once,
    callers_without_a_token_are_refused,
);

/// Reset mails one recipient may be sent per hour under the shipped settings.
fn default_limit() -> usize {
    kagi_notifier::Settings::default()
        .delivery
        .reset_codes_per_recipient_per_hour as usize
}

async fn queued_rows(app: &TestApp) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM deliveries")
        .fetch_one(app.store.pool())
        .await
        .unwrap()
        .get("n")
}

async fn bad_input_is_refused_and_nothing_is_queued(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let later = Utc::now() + chrono::Duration::minutes(30);
    let past = Utc::now() - chrono::Duration::minutes(1);

    let cases = [
        (
            "invalid address",
            reset_request("bad-1", "not an address", "123456", later),
        ),
        (
            "empty code",
            reset_request("bad-2", "taro@example.ac.jp", "", later),
        ),
        (
            "five digits",
            reset_request("bad-3", "taro@example.ac.jp", "12345", later),
        ),
        (
            "expiry in the past",
            reset_request("bad-4", "taro@example.ac.jp", "123456", past),
        ),
        (
            "unknown locale",
            pb::SendResetCodeRequest {
                locale: "fr".into(),
                ..reset_request("bad-5", "taro@example.ac.jp", "123456", later)
            },
        ),
        (
            "no expiry",
            pb::SendResetCodeRequest {
                expires_at: None,
                ..reset_request("bad-6", "taro@example.ac.jp", "123456", later)
            },
        ),
        (
            "empty message id",
            reset_request("", "taro@example.ac.jp", "123456", later),
        ),
    ];
    for (what, request) in cases {
        let status = app
            .client
            .clone()
            .send_reset_code(request)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let notice = pb::SendKeyReissuedNoticeRequest {
        message_id: "bad-7".into(),
        recipient: "taro@example.ac.jp".into(),
        account_id: "a1".into(),
        reissued_at: Some(timestamp(Utc::now())),
        client_ip: "not-an-ip".into(),
        locale: "ja".into(),
    };
    let status = app
        .client
        .clone()
        .send_key_reissued_notice(notice)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    // A megabyte-sized message is refused before it is even decoded.
    let huge = reset_request(
        "bad-8",
        &format!("{}@example.ac.jp", "a".repeat(1 << 20)),
        "123456",
        later,
    );
    let status = app.client.clone().send_reset_code(huge).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");

    // Nothing was queued, so nothing can ever be sent.
    assert_eq!(queued_rows(&app).await, 0);
    assert!(sink.mails().is_empty());
    app.stop().await;
    sink.stop().await;
}

async fn the_same_message_id_twice_sends_one_mail(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    let first = app
        .send_reset_code("dup-1", "taro@example.ac.jp", "314159")
        .await
        .unwrap();
    let second = app
        .send_reset_code("dup-1", "taro@example.ac.jp", "314159")
        .await
        .unwrap();
    assert_eq!(first, second);
    assert_eq!(
        app.wait_handled(&first).await.state(),
        pb::DeliveryState::Sent
    );
    // A retry after delivery (the saga's call timed out, say) still sends nothing new.
    let third = app
        .send_reset_code("dup-1", "taro@example.ac.jp", "314159")
        .await
        .unwrap();
    assert_eq!(first, third);

    // One row, already sent: nothing else is left to send, so the mailbox is final.
    assert_eq!(queued_rows(&app).await, 1);
    assert_eq!(app.delivery(&first).await.state(), pb::DeliveryState::Sent);
    assert_nothing_left_to_send(&app).await;
    assert_eq!(sink.mails().len(), 1);
    app.stop().await;
    sink.stop().await;
}

async fn a_message_id_cannot_be_reused_for_another_message(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    app.send_reset_code("reuse-1", "taro@example.ac.jp", "271828")
        .await
        .unwrap();
    let status = app
        .send_reset_code("reuse-1", "jiro@example.ac.jp", "271828")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    app.stop().await;
    sink.stop().await;
}

async fn the_thirteenth_reset_mail_in_an_hour_is_refused(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    // The shipped limit: 12 reset mails per recipient per hour.
    assert_eq!(default_limit(), 12);
    for n in 0..default_limit() {
        app.send_reset_code(&format!("bomb-{n}"), "victim@example.ac.jp", "000111")
            .await
            .unwrap();
    }
    // Case does not get around the limit.
    let status = app
        .send_reset_code("bomb-12", "VICTIM@example.ac.jp", "000111")
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    // Others are not affected.
    app.send_reset_code("other-0", "someone@example.ac.jp", "000111")
        .await
        .unwrap();
    // Nor is the reissue notice, which is sent after a completed reset.
    let notice = pb::SendKeyReissuedNoticeRequest {
        message_id: "bomb-notice".into(),
        recipient: "victim@example.ac.jp".into(),
        account_id: "a1".into(),
        reissued_at: Some(timestamp(Utc::now())),
        client_ip: "192.0.2.1".into(),
        locale: String::new(),
    };
    app.client
        .clone()
        .send_key_reissued_notice(notice)
        .await
        .unwrap();
    // An hour later the recipient may be sent a code again.
    app.clock.advance(Duration::from_secs(3601));
    app.send_reset_code("bomb-6", "victim@example.ac.jp", "000111")
        .await
        .unwrap();
    app.stop().await;
    sink.stop().await;
}

async fn callers_without_a_token_are_refused(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let status = app.delivery_without_token("anything").await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = app
        .client
        .clone()
        .get_delivery(pb::GetDeliveryRequest {
            delivery_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    app.stop().await;
    sink.stop().await;
}

async fn a_burst_of_concurrent_reset_mails_still_stops_at_twelve(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    assert_eq!(default_limit(), 12);
    let calls = (0..20).map(|n| {
        let app = &app;
        async move {
            app.send_reset_code(&format!("burst-{n}"), "victim@example.ac.jp", "424242")
                .await
        }
    });
    let results = futures_join_all(calls).await;

    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
        .count();
    assert_eq!((accepted, refused), (12, 8));
    app.stop().await;
    sink.stop().await;
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for future in futures {
        set.push(Box::pin(future));
    }
    let mut outputs: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in set.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

/// An operator may lift the allowance (0: no limit, as `kagi dev --key-display-notices
/// unlimited` does for benchmarks): then every mail is queued, past the shipped twelve, and a
/// repeated message ID is still one mail.
async fn with_the_allowance_lifted_every_mail_is_queued_once(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.delivery.reset_codes_per_recipient_per_hour = 0;
    let app = TestApp::spawn(settings).await;

    let total = default_limit() + 3;
    let mut ids = Vec::new();
    for n in 0..total {
        let id = app
            .send_reset_code(&format!("lifted-{n}"), "victim@example.ac.jp", "000111")
            .await
            .unwrap();
        ids.push(id);
    }
    let again = app
        .send_reset_code("lifted-0", "victim@example.ac.jp", "000111")
        .await
        .unwrap();

    assert_eq!(again, ids[0], "the same message ID is the same delivery");
    assert_eq!(queued_rows(&app).await, total as i64);
    assert_eq!(sink.wait_for_mails(total).await.len(), total);
    app.stop().await;
    sink.stop().await;
}
