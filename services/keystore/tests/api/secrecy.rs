//! Secrets stay secret: the secret, in none of the forms it can take (raw bytes, Base32, hex,
//! Base64, the otpauth URI), is anywhere in the database — every file of the SQLite database,
//! every table of the PostgreSQL one — nor in logs or span fields, even at the most verbose
//! log level; neither are the codes the user typed.

use data_encoding::{
    BASE32, BASE32_NOPAD, BASE64, BASE64_NOPAD, BASE64URL, BASE64URL_NOPAD, HEXLOWER, HEXUPPER,
};
use kagi_proto::v1 as pb;

use crate::helpers::{Backend, TestApp, captured_logs, dump_database, spawn_app};
use kagi_testkit::both_backends;

both_backends!(secrets_appear_in_neither_database_nor_logs);

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every form `key`'s secret can take, named.
fn encodings(key: &pb::SetupKey) -> Vec<(&'static str, Vec<u8>)> {
    let raw = BASE32_NOPAD.decode(key.secret_base32.as_bytes()).unwrap();
    assert_eq!(raw.len(), 20);
    vec![
        ("raw bytes", raw.clone()),
        ("Base32", BASE32.encode(&raw).into_bytes()),
        ("Base32 unpadded", BASE32_NOPAD.encode(&raw).into_bytes()),
        (
            "base32 lower",
            BASE32.encode(&raw).to_lowercase().into_bytes(),
        ),
        (
            "base32 lower unpadded",
            BASE32_NOPAD.encode(&raw).to_lowercase().into_bytes(),
        ),
        ("hex lower", HEXLOWER.encode(&raw).into_bytes()),
        ("hex upper", HEXUPPER.encode(&raw).into_bytes()),
        ("Base64", BASE64.encode(&raw).into_bytes()),
        ("Base64 unpadded", BASE64_NOPAD.encode(&raw).into_bytes()),
        ("Base64url", BASE64URL.encode(&raw).into_bytes()),
        (
            "Base64url unpadded",
            BASE64URL_NOPAD.encode(&raw).into_bytes(),
        ),
        ("otpauth URI", key.otpauth_uri.clone().into_bytes()),
    ]
}

/// A code the key does not show now nor in the skew window, but as random-looking as a
/// real mistyped one (so finding it in a dump cannot be a coincidence like `000000`).
fn mistyped_code(app: &TestApp, key: &pb::SetupKey) -> String {
    let valid: Vec<String> = (-2..=2).map(|d| app.code_for(key, d * 30)).collect();
    (1..)
        .map(|hours| app.code_for(key, hours * 3600))
        .find(|c| !valid.contains(c))
        .unwrap()
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
    let rejected_code = mistyped_code(&app, &rotated);
    assert_eq!(
        app.verify("taro", &rejected_code).await.unwrap().result(),
        pb::VerifyResult::Rejected
    );

    let dump = dump_database(&db).await;
    let logs = captured_logs();
    assert!(
        logs.contains("Keystore.RotateKey"),
        "the capture really holds the service's spans"
    );
    assert!(
        dump.values().any(|content| contains(content, b"taro")),
        "the dump really holds the rows: {:?}",
        dump.keys()
    );

    for key in [&first, &rotated] {
        for (form, needle) in encodings(key) {
            for (name, content) in &dump {
                assert!(
                    !contains(content, &needle),
                    "secret of {} ({form}) found in {name}",
                    key.key_id
                );
            }
            assert!(
                !contains(logs.as_bytes(), &needle),
                "secret of {} ({form}) found in logs",
                key.key_id
            );
        }
    }
    for code in [&accepted_code, &rejected_code] {
        assert!(
            !logs.contains(&format!("\"{code}\"")),
            "the typed code {code} in logs"
        );
        assert!(
            !kagi_testkit::logs::mentions(logs.as_bytes(), code),
            "the typed code {code} in logs"
        );
        for (name, content) in &dump {
            assert!(
                !kagi_testkit::logs::mentions(content, code),
                "the typed code {code} in {name}"
            );
        }
    }
}
