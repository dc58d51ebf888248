//! Changing the key-encryption key: `rekey` re-seals every stored key under the new KEK
//! while the service keeps serving, after which the old KEK can be removed.

use std::sync::Arc;

use data_encoding::BASE64;
use kagi_keystore::service::Actor;
use kagi_proto::v1::VerifyResult;
use kagi_runtime::ManualClock;
use secrecy::SecretString;

use crate::helpers::{Backend, TestApp, TestDatabase, test_settings};
use kagi_testkit::both_backends;

both_backends!(rekey_moves_every_key_to_the_new_kek_while_serving);

async fn rekey_moves_every_key_to_the_new_kek_while_serving(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let before = TestApp::start(&test_settings(&db), clock.clone()).await;
    let mut keys = Vec::new();
    for n in 0..30 {
        let account = format!("user{n}");
        keys.push((account.clone(), before.enroll(&account).await));
    }
    before.stop().await;

    // Deploy with both KEKs, the new one active, and re-key while logins go on.
    let mut both = test_settings(&db);
    both.kek
        .keys
        .insert("k2".into(), SecretString::from(BASE64.encode(&[22_u8; 32])));
    both.kek.active = Some("k2".into());
    let serving = TestApp::start(&both, clock.clone()).await;
    let rekey = {
        let keystore = kagi_keystore::app::keystore(&both, clock.clone())
            .await
            .unwrap();
        tokio::spawn(async move { keystore.rekey(Actor { caller: "cli" }).await.unwrap() })
    };
    for (account, key) in &keys {
        let result = serving
            .verify(account, &serving.code_for(key, 0))
            .await
            .unwrap()
            .result();
        assert_eq!(result, VerifyResult::Accepted, "{account} during rekey");
    }
    assert_eq!(rekey.await.unwrap(), 30);
    serving.stop().await;

    // The old KEK is gone: every key still opens.
    let mut only_new = test_settings(&db);
    only_new.kek.keys.clear();
    only_new
        .kek
        .keys
        .insert("k2".into(), SecretString::from(BASE64.encode(&[22_u8; 32])));
    let after = TestApp::start(&only_new, clock).await;
    for (account, key) in &keys {
        assert_eq!(
            after.current_key(account).await.unwrap().secret_base32,
            key.secret_base32
        );
    }
}
