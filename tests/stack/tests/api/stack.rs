//! A whole system as processes, on each backend: a user resets their key by mail while a
//! keystore replica is SIGKILLed and restarted.

use std::time::Duration;

use kagi_proto::v1 as pb;
use kagi_proto::v1::keystore_client::KeystoreClient;
use kagi_proto::v1::reset_client::ResetClient;
use kagi_stack::chaos::load::{bearer, code_at, current_step};
use kagi_stack::{Service, StackBuilder};
use kagi_testkit::{Backend, both_backends};
use secrecy::SecretString;
use tonic::transport::Channel;

both_backends!(two_replicas_of_everything_serve_a_reset_by_mail_across_a_killed_keystore);

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn two_replicas_of_everything_serve_a_reset_by_mail_across_a_killed_keystore(
    backend: Backend,
) {
    let _shared = crate::ALONE.read().await;
    let mut stack = StackBuilder::new(crate::binary())
        .storage(backend)
        .replicas(2)
        .start()
        .await
        .unwrap();
    // Every replica is its own process, listening.
    for service in Service::ALL {
        assert_eq!(stack.replica_addrs(service).len(), 2, "{service}");
    }
    let mut keystore = KeystoreClient::new(channel(stack.addr(Service::Keystore)).await);
    let enrolled = keystore
        .enroll(bearer(
            &stack.token("onboarding").unwrap(),
            pb::EnrollRequest {
                account_id: "taro".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let old = data_encoding::BASE32_NOPAD
        .decode(enrolled.secret_base32.as_bytes())
        .unwrap();
    let mut settings = kagi_reset::Settings::default();
    settings.database.url = stack.database_url(Service::Reset).to_owned();
    settings.password.memory_kib = 1024;
    settings.password.iterations = 1;
    kagi_reset::accounts::AccountAdmin::new(
        kagi_reset::app::database(&settings).await.unwrap(),
        std::sync::Arc::new(kagi_reset::app::password_hasher(&settings).await.unwrap()),
    )
    .add(
        "taro",
        "taro@example.ac.jp",
        SecretString::from("correct-horse-battery"),
        0,
    )
    .await
    .unwrap();

    // A keystore replica dies mid-run; the front sends the next calls to the other.
    stack
        .replica(Service::Keystore, 0)
        .unwrap()
        .kill()
        .await
        .unwrap();

    let portal = stack.token("portal").unwrap();
    let mut reset = ResetClient::new(channel(stack.addr(Service::Reset)).await);
    let started = reset
        .start_reset(bearer(
            &portal,
            pb::StartResetRequest {
                account_id: "taro".into(),
                password: "correct-horse-battery".into(),
                client_ip: "192.0.2.7".into(),
                user_agent: "test".into(),
                locale: "en".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mail = stack.mail();
    let mut code = None;
    for _ in 0..300 {
        code = mail
            .to("taro@example.ac.jp")
            .iter()
            .find_map(kagi_stack::mailbox::Mail::reset_code);
        if code.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let code = code.expect("the reset mail reached the SMTP server");
    let verified = reset
        .verify_code(bearer(
            &portal,
            pb::VerifyResetCodeRequest {
                reset_id: started.reset_id.clone(),
                code,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(verified.result(), pb::CodeCheck::Verified);
    stack
        .replica(Service::Keystore, 0)
        .unwrap()
        .restart()
        .await
        .unwrap();
    let new = reset
        .confirm_reset(bearer(
            &portal,
            pb::ConfirmResetRequest {
                reset_id: started.reset_id,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let new = data_encoding::BASE32_NOPAD
        .decode(new.secret_base32.as_bytes())
        .unwrap();

    // The user's check, on each keystore replica directly: the old key is refused, the
    // new one accepted once, and its replay refused by the other replica.
    let login = stack.token("login").unwrap();
    let addrs = stack.replica_addrs(Service::Keystore);
    let step = current_step();
    let verify = |secret: &[u8], addr| {
        let request = bearer(
            &login,
            pb::VerifyCodeRequest {
                account_id: "taro".into(),
                code: code_at(secret, step),
            },
        );
        async move {
            KeystoreClient::new(channel(addr).await)
                .verify_code(request)
                .await
                .unwrap()
                .into_inner()
                .result()
        }
    };
    assert_eq!(verify(&old, addrs[0]).await, pb::VerifyResult::Rejected);
    assert_eq!(verify(&new, addrs[0]).await, pb::VerifyResult::Accepted);
    assert_eq!(verify(&new, addrs[1]).await, pb::VerifyResult::Replayed);
    stack.stop().await;
}
