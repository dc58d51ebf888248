//! Secrets stay secret: neither the raw nor the Base32 secret is anywhere in the database,
//! nor in logs or span fields, even at the most verbose log level.

use kagi_proto::v1 as pb;

use crate::helpers::{Backend, captured_logs, dump_tables, spawn_app, wrong_code};
use kagi_testkit::both_backends;

both_backends!(secrets_appear_in_neither_database_nor_logs);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn secrets_appear_in_neither_database_nor_logs(backend: Backend) {
    let (app, db) = spawn_app(backend).await;
    let first = app.enroll("taro").await;
    app.current_key("taro").await.unwrap();
    let rotated = app.rotate("taro", "reset-1").await.unwrap().key.unwrap();
    let accepted_code = app.code_for(&rotated, 0);
    assert_eq!(
        app.verify("taro", &accepted_code).await.unwrap().result(),
        pb::VerifyResult::Accepted
    );
    app.verify("taro", &wrong_code(&app, &rotated))
        .await
        .unwrap();

    let tables = dump_tables(&db).await;
    let logs = captured_logs();
    assert!(
        logs.contains("Keystore.RotateKey"),
        "the capture really holds the service's spans"
    );

    for key in [&first, &rotated] {
        let raw = data_encoding::BASE32_NOPAD
            .decode(key.secret_base32.as_bytes())
            .unwrap();
        let base32 = key.secret_base32.as_bytes();
        let lower_b32 = key.secret_base32.to_lowercase();
        for (name, content) in &tables {
            for needle in [
                raw.as_slice(),
                base32,
                lower_b32.as_bytes(),
                hex(&raw).as_bytes(),
            ] {
                assert!(
                    !contains(content, needle),
                    "secret of {} found in {name}",
                    key.key_id
                );
            }
        }
        assert!(!logs.contains(&key.secret_base32), "Base32 secret in logs");
        assert!(!logs.contains(&hex(&raw)), "hex secret in logs");
        assert!(!contains(logs.as_bytes(), &raw), "raw secret in logs");
    }
    assert!(
        !logs.contains(&format!("\"{accepted_code}\"")),
        "the typed code in logs"
    );
}
