//! Delivery against a real SMTP server: retries, permanent failures, outages, restarts,
//! replicas and expiry.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kagi_notifier::config::SmtpTls;
use kagi_proto::v1 as pb;
use kagi_runtime::Clock as _;

use crate::helpers::*;
use kagi_testkit::both_backends;

both_backends!(
    greylisted_twice_then_accepted_is_delivered_once,
    a_550_fails_at_once_without_a_retry_storm,
    a_server_down_then_up_still_gets_the_mail,
    mail_whose_send_was_cut_off_by_a_kill_is_delivered_after_restart,
    two_replicas_both_deliver_and_never_send_the_same_message_twice,
    a_message_held_by_a_dead_replica_is_sent_once_its_lease_lapses,
    a_code_past_its_expiry_is_not_sent,
    starttls_and_implicit_tls_carry_the_mail,
    a_relay_whose_certificate_is_not_trusted_gets_nothing,
    a_relay_that_requires_a_login_gets_the_credentials,
    a_handled_mail_is_deleted_after_30_days_and_not_before,
);

async fn greylisted_twice_then_accepted_is_delivered_once(backend: Backend) {
    let sink = SmtpSink::start("451,451,250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    let id = app
        .send_reset_code("grey-1", "taro@example.ac.jp", "246810")
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(delivery.attempts, 3);
    assert_eq!(sink.mails().len(), 1);
    let transcript = sink.transcript();
    assert_eq!(transcript.len(), 3, "{transcript:?}");
    assert!(
        transcript[0].starts_with("451")
            && transcript[1].starts_with("451")
            && transcript[2].starts_with("250")
    );
    // Every retry carries the same Message-ID, so a receiver could drop duplicates.
    let ids: HashSet<&str> = transcript
        .iter()
        .map(|l| l.split_once(' ').unwrap().1)
        .collect();
    assert_eq!(ids.len(), 1);
    app.stop().await;
    sink.stop().await;
}

async fn a_550_fails_at_once_without_a_retry_storm(backend: Backend) {
    let sink = SmtpSink::start("550").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;

    let id = app
        .send_reset_code("perm-1", "nobody@example.ac.jp", "135790")
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Failed);
    assert_eq!(delivery.attempts, 1);
    assert!(
        delivery.last_reply.contains("550"),
        "{}",
        delivery.last_reply
    );
    assert!(
        delivery.last_reply.contains("Mailbox unavailable"),
        "{}",
        delivery.last_reply
    );
    assert!(
        !app.store.has_payload(&id).await.unwrap(),
        "the code is wiped once failed"
    );
    // No retry can follow, however late: the row is final and nothing is left to claim.
    assert_nothing_left_to_send(&app).await;
    assert_eq!(sink.transcript().len(), 1);
    assert_eq!(app.delivery(&id).await.attempts, 1);
    assert!(sink.mails().is_empty());
    app.stop().await;
    sink.stop().await;
}

async fn a_server_down_then_up_still_gets_the_mail(backend: Backend) {
    let port = free_port();
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, port)).await;

    let id = app
        .send_reset_code("outage-1", "taro@example.ac.jp", "112358")
        .await
        .unwrap();
    let deferred = app.wait_for(&id, |d| d.attempts >= 2).await;
    assert_eq!(deferred.state(), pb::DeliveryState::Queued);
    assert!(!deferred.last_reply.is_empty());

    let maildir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start_on(port, "250", maildir.path().to_path_buf()).await;
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(sink.mails().len(), 1);
    app.stop().await;
    sink.stop().await;
}

async fn mail_whose_send_was_cut_off_by_a_kill_is_delivered_after_restart(backend: Backend) {
    let db = TestDatabase::new(backend, "notifier.db").await;
    let sink = SmtpSink::start("250").await;
    // The first notifier's relay takes each message's DATA and never answers it, so the
    // notifier is killed in the middle of three real sends, holding their leases.
    let relay = StallingRelay::start().await;
    let mut settings = test_settings(&db, relay.port);
    settings.transport.smtp.timeout_ms = 60_000;
    let first = ProcessLikeApp::spawn(settings).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let request = reset_request(
            &format!("restart-{n}"),
            "taro@example.ac.jp",
            "123123",
            chrono::Utc::now() + chrono::Duration::minutes(30),
        );
        let response = first.client.clone().send_reset_code(request).await.unwrap();
        ids.push(response.into_inner().delivery_id);
    }
    eventually("three sends in flight", || relay.held().len() == 3).await;
    let first_replica = first.replica.clone();
    first.kill();
    eventually("the killed sends' connections closed", || {
        relay.hung_up() == 3
    })
    .await;
    assert!(sink.mails().is_empty());

    let second = TestApp::spawn(test_settings(&db, sink.port)).await;
    for id in &ids {
        let delivery = second.delivery(id).await;
        assert_eq!(delivery.state(), pb::DeliveryState::Queued, "{delivery:?}");
        assert_eq!(delivery.attempts, 0, "the cut-off attempt recorded nothing");
        assert_eq!(replica_of(&second.store, id).await, first_replica);
    }
    // Until the 30 s lease lapses, nobody else may take the messages over.
    let now = second.clock.utc().timestamp_millis();
    let taken = second
        .store
        .claim_due("probe/1", now, now + 1_000, 10)
        .await
        .unwrap();
    assert!(taken.is_empty(), "a live lease was taken over");
    second.clock.advance(Duration::from_secs(31));

    let second_replica = second.replica.clone().unwrap();
    for id in &ids {
        let delivery = second.wait_handled(id).await;
        assert_eq!(delivery.state(), pb::DeliveryState::Sent);
        // Counted: the attempt that finished. The cut-off one left no record.
        assert_eq!(delivery.attempts, 1);
        assert_eq!(replica_of(&second.store, id).await, second_replica);
    }
    assert_eq!(sink.mails().len(), 3);
    // At least once, not exactly once: a send cut off after DATA may have been delivered by
    // the first relay, so the retry carries the same Message-ID for receivers to drop it.
    let mut resent: Vec<String> = sink
        .transcript()
        .iter()
        .map(|l| l.split_once(' ').unwrap().1.to_owned())
        .collect();
    let mut held = relay.held();
    resent.sort();
    held.sort();
    assert_eq!(resent, held);
    second.stop().await;
    sink.stop().await;
}

async fn two_replicas_both_deliver_and_never_send_the_same_message_twice(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let a = TestApp::spawn(test_settings(&db, sink.port)).await;
    let b = TestApp::spawn(test_settings(&db, sink.port)).await;

    let mut ids = Vec::new();
    for n in 0..40 {
        let app = if n % 2 == 0 { &a } else { &b };
        ids.push(
            app.send_reset_code(
                &format!("replica-{n}"),
                &format!("user{n}@example.ac.jp"),
                "909090",
            )
            .await
            .unwrap(),
        );
    }
    for id in &ids {
        assert_eq!(a.wait_handled(id).await.state(), pb::DeliveryState::Sent);
    }
    // Every row is final (sent), so nothing more can reach the relay: count it now.

    // Both replicas delivered: each row names the replica whose claim sent it.
    let mut sent_by: HashMap<String, usize> = HashMap::new();
    for id in &ids {
        *sent_by.entry(replica_of(&a.store, id).await).or_default() += 1;
    }
    let replicas: HashSet<String> = sent_by.keys().cloned().collect();
    let expected: HashSet<String> = [a.replica.clone().unwrap(), b.replica.clone().unwrap()].into();
    assert_eq!(replicas, expected, "messages sent per replica: {sent_by:?}");

    let transcript = sink.transcript();
    assert_eq!(transcript.len(), 40, "one SMTP transaction per message");
    let unique: HashSet<&String> = transcript.iter().collect();
    assert_eq!(unique.len(), 40, "no Message-ID was sent twice");
    assert_eq!(sink.mails().len(), 40);
    a.stop().await;
    b.stop().await;
    sink.stop().await;
}

async fn a_code_past_its_expiry_is_not_sent(backend: Backend) {
    let port = free_port();
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, port)).await;

    let id = app
        .send_reset_code("expire-1", "taro@example.ac.jp", "777000")
        .await
        .unwrap();
    app.wait_for(&id, |d| d.attempts >= 1).await;
    // The 30 minutes pass while the SMTP server is down.
    app.clock.advance(Duration::from_secs(31 * 60));
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Failed);
    assert!(
        delivery.last_reply.contains("expired"),
        "{}",
        delivery.last_reply
    );
    assert!(
        !app.store.has_payload(&id).await.unwrap(),
        "the code is wiped once expired"
    );
    // Even when the server comes back, nothing is sent.
    let maildir = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start_on(port, "250", maildir.path().to_path_buf()).await;
    assert_nothing_left_to_send(&app).await;
    assert!(sink.mails().is_empty());
    app.stop().await;
    sink.stop().await;
}

async fn a_message_held_by_a_dead_replica_is_sent_once_its_lease_lapses(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.delivery.worker_enabled = false;
    let queue_only = TestApp::spawn(settings).await;
    let id = queue_only
        .send_reset_code("lease-1", "taro@example.ac.jp", "818181")
        .await
        .unwrap();
    // A replica claims the message with a 60 s lease and dies before sending it.
    let now = queue_only.clock.utc().timestamp_millis();
    let claimed = queue_only
        .store
        .claim_due("dead-replica/1", now, now + 60_000, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    queue_only.kill();

    let survivor = TestApp::spawn(test_settings(&db, sink.port)).await;
    // While the lease runs nobody may take the message: the claim the survivor's worker
    // makes finds nothing.
    let now = survivor.clock.utc().timestamp_millis();
    let taken = survivor
        .store
        .claim_due("probe/1", now, now + 1_000, 10)
        .await
        .unwrap();
    assert!(
        taken.is_empty() && sink.mails().is_empty(),
        "the lease still belongs to the dead replica"
    );
    assert_eq!(replica_of(&survivor.store, &id).await, "dead-replica");
    survivor.clock.advance(Duration::from_secs(61));
    let delivery = survivor.wait_handled(&id).await;

    assert_eq!(
        replica_of(&survivor.store, &id).await,
        survivor.replica.clone().unwrap()
    );
    assert_eq!(delivery.state(), pb::DeliveryState::Sent);
    assert_eq!(delivery.attempts, 1);
    assert_eq!(sink.mails().len(), 1);
    survivor.stop().await;
    sink.stop().await;
}

async fn starttls_and_implicit_tls_carry_the_mail(backend: Backend) {
    for (mode, tls) in [("starttls", SmtpTls::Starttls), ("implicit", SmtpTls::Tls)] {
        let sink = SmtpSink::start_tls("250", mode).await;
        let db = TestDatabase::new(backend, "notifier.db").await;
        let mut settings = test_settings(&db, sink.port);
        settings.transport.smtp.tls = tls;
        settings.transport.smtp.ca_file = Some(test_ca());
        let app = TestApp::spawn(settings).await;

        let id = app
            .send_reset_code(&unique(mode), "taro@example.ac.jp", "606060")
            .await
            .unwrap();
        let delivery = app.wait_handled(&id).await;

        assert_eq!(
            delivery.state(),
            pb::DeliveryState::Sent,
            "{mode}: {delivery:?}"
        );
        assert_eq!(sink.mails().len(), 1, "{mode}");
        app.stop().await;
        sink.stop().await;
    }
}

async fn a_relay_whose_certificate_is_not_trusted_gets_nothing(backend: Backend) {
    let sink = SmtpSink::start_tls("250", "starttls").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.transport.smtp.tls = SmtpTls::Starttls;
    let app = TestApp::spawn(settings).await;

    let id = app
        .send_reset_code("untrusted-1", "taro@example.ac.jp", "707070")
        .await
        .unwrap();
    let delivery = app.wait_for(&id, |d| d.attempts >= 2).await;

    assert_eq!(
        delivery.state(),
        pb::DeliveryState::Queued,
        "a TLS failure is retried, not given up"
    );
    // It failed because of the certificate: the recorded reply says so (rustls: the
    // sink's certificate is signed by a CA that is not trusted).
    assert!(
        delivery.last_reply.contains("invalid peer certificate")
            && delivery.last_reply.contains("UnknownIssuer"),
        "{}",
        delivery.last_reply
    );
    assert!(sink.mails().is_empty());
    app.stop().await;
    sink.stop().await;
}

async fn a_relay_that_requires_a_login_gets_the_credentials(backend: Backend) {
    let sink = SmtpSink::start_with_auth("kagi:s3cret-relay-password").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let mut settings = test_settings(&db, sink.port);
    settings.transport.smtp.username = Some("kagi".into());
    settings.transport.smtp.password = Some(secrecy::SecretString::from("s3cret-relay-password"));
    let app = TestApp::spawn(settings).await;

    let id = app
        .send_reset_code("auth-1", "taro@example.ac.jp", "808080")
        .await
        .unwrap();
    let delivery = app.wait_handled(&id).await;

    assert_eq!(delivery.state(), pb::DeliveryState::Sent, "{delivery:?}");
    assert_eq!(sink.mails().len(), 1);
    app.stop().await;
    sink.stop().await;
}

async fn a_handled_mail_is_deleted_after_30_days_and_not_before(backend: Backend) {
    let sink = SmtpSink::start("250").await;
    let db = TestDatabase::new(backend, "notifier.db").await;
    let app = TestApp::spawn(test_settings(&db, sink.port)).await;
    let exists = |id: String| {
        let mut client = app.client.clone();
        async move {
            let request = pb::GetDeliveryRequest { delivery_id: id };
            match client.get_delivery(request).await {
                Ok(_) => true,
                Err(status) if status.code() == tonic::Code::NotFound => false,
                Err(status) => panic!("{status:?}"),
            }
        }
    };

    let old = app
        .send_reset_code("retention-old", "taro@example.ac.jp", "303030")
        .await
        .unwrap();
    assert_eq!(
        app.wait_handled(&old).await.state(),
        pb::DeliveryState::Sent
    );
    app.clock.advance(Duration::from_secs(2 * 86_400));
    let recent = app
        .send_reset_code("retention-recent", "jiro@example.ac.jp", "404040")
        .await
        .unwrap();
    assert_eq!(
        app.wait_handled(&recent).await.state(),
        pb::DeliveryState::Sent
    );

    // 30 days and an hour after the first was sent; the second is 2 days younger.
    app.clock.advance(Duration::from_secs(28 * 86_400 + 3_600));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while exists(old.clone()).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a 30-day-old row was kept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The same purge left the younger row alone.
    assert!(exists(recent.clone()).await, "a 28-day-old row was deleted");
    assert_eq!(sink.mails().len(), 2);
    app.stop().await;
    sink.stop().await;
}
