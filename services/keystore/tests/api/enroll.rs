//! Onboarding and the manual's menu 1: the current setup key as text and QR code.

use std::process::Command;
use std::sync::Arc;

use kagi_proto::v1 as pb;
use kagi_runtime::ManualClock;
use tonic::Code;

use crate::helpers::{Backend, TestApp, TestDatabase, spawn_app, test_settings};
use kagi_testkit::both_backends;

both_backends!(
    an_enrolled_key_is_shown_as_text_uri_and_qr,
    the_qr_code_decodes_to_exactly_the_otpauth_uri,
    codes_from_an_independent_authenticator_are_accepted,
    enrolling_twice_is_already_exists,
    an_account_without_a_key_is_not_found,
    key_parameters_are_recorded_per_key,
    keys_keep_the_issuer_they_were_issued_with,
    a_caller_gets_only_the_forms_it_asks_for,
);

/// Issue 14, item 2: the authenticator entry is named by the institution's issuer, not
/// "kagi"; when the institution changes it, keys already in authenticators keep theirs.
async fn keys_keep_the_issuer_they_were_issued_with(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let mut settings = test_settings(&db);
    settings.institution.otpauth_issuer = "OMU".into();
    let app = TestApp::start(&settings, clock.clone()).await;
    let old = app.enroll("taro").await;
    assert!(
        old.otpauth_uri.starts_with("otpauth://totp/OMU:taro?"),
        "{}",
        old.otpauth_uri
    );
    assert!(old.otpauth_uri.contains("&issuer=OMU&"));
    assert_eq!(old.issuer, "OMU");
    app.stop().await;

    settings.institution.otpauth_issuer = "sso.omu.ac.jp".into();
    let app = TestApp::start(&settings, clock).await;
    let shown_old = app.current_key("taro").await.unwrap();
    assert_eq!(
        shown_old.otpauth_uri, old.otpauth_uri,
        "the old key keeps its issuer"
    );
    assert_eq!(shown_old.issuer, "OMU");
    let new = app.enroll("hanako").await;
    assert!(
        new.otpauth_uri
            .starts_with("otpauth://totp/sso.omu.ac.jp:hanako?")
    );
    let rotated = app.rotate("taro", "saga-1").await.unwrap().key.unwrap();
    assert_eq!(
        rotated.issuer, "sso.omu.ac.jp",
        "a reissued key gets the new one"
    );
    app.stop().await;
}

async fn an_enrolled_key_is_shown_as_text_uri_and_qr(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;

    let enrolled = app.enroll("taro.yamada").await;
    let shown = app.current_key("taro.yamada").await.unwrap();

    assert_eq!(shown.account_id, "taro.yamada");
    assert_eq!(shown.key_id, enrolled.key_id);
    assert_eq!(
        shown.secret_base32, enrolled.secret_base32,
        "menu 1 shows the key in use, not a new one"
    );
    let raw = data_encoding::BASE32_NOPAD
        .decode(shown.secret_base32.as_bytes())
        .unwrap();
    assert_eq!(raw.len(), 20, "160-bit secret");
    assert!(!shown.secret_base32.contains('='), "Base32 without padding");
    assert_eq!(
        shown.otpauth_uri,
        format!(
            "otpauth://totp/Example%20University:taro.yamada?secret={}&issuer=Example%20University&algorithm=SHA1&digits=6&period=30",
            shown.secret_base32
        )
    );
    assert_eq!(
        (shown.algorithm, shown.digits, shown.period_seconds),
        (pb::HashAlgorithm::Sha1 as i32, 6, 30)
    );
    assert!(
        shown.qr_svg.starts_with("<?xml") && shown.qr_svg.contains("<svg"),
        "SVG QR code"
    );
    assert!(shown.created_at.is_some());
    let other = app.enroll("hanako").await;
    assert_ne!(other.secret_base32, shown.secret_base32);
}

async fn the_qr_code_decodes_to_exactly_the_otpauth_uri(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let key = app.enroll("taro.yamada").await;

    assert_eq!(decode_qr(&key.qr_png), key.otpauth_uri);
}

/// Issue 16, item 2: menu 1 asks for the PNG it shows, menu 3 for the text alone; a caller
/// that names no form gets every form, as before callers could choose. A key's second
/// view draws its QR code with the mask kept in its row at the first: the same code.
async fn a_caller_gets_only_the_forms_it_asks_for(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let enrolled = app.enroll("taro.yamada").await;

    let menu_1 = app
        .current_key_in("taro.yamada", &[pb::KeyForm::QrPng])
        .await
        .unwrap();
    let menu_1_again = app
        .current_key_in("taro.yamada", &[pb::KeyForm::QrPng])
        .await
        .unwrap();
    let menu_3 = app
        .current_key_in("taro.yamada", &[pb::KeyForm::Text])
        .await
        .unwrap();
    let everything = app.current_key("taro.yamada").await.unwrap();

    assert_eq!(decode_qr(&menu_1.qr_png), enrolled.otpauth_uri);
    assert_eq!(
        menu_1_again.qr_png, menu_1.qr_png,
        "the same image every view"
    );
    assert!(menu_1.qr_svg.is_empty(), "no SVG drawn for menu 1");
    assert!(menu_3.qr_png.is_empty() && menu_3.qr_svg.is_empty());
    for shown in [&menu_1, &menu_3, &everything] {
        assert_eq!(shown.secret_base32, enrolled.secret_base32);
        assert_eq!(shown.otpauth_uri, enrolled.otpauth_uri);
    }
    assert_eq!(decode_qr(&everything.qr_png), enrolled.otpauth_uri);
    assert!(everything.qr_svg.contains("<svg"));
    let views = app
        .audit("taro.yamada")
        .await
        .into_iter()
        .filter(|e| e.action == "view")
        .count();
    assert_eq!(views, 4, "every view audited, whatever its forms");
}

/// The text a QR code image holds, read by an independent decoder (rqrr).
fn decode_qr(png: &[u8]) -> String {
    let image = image::load_from_memory(png).unwrap().to_luma8();
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(
        image.width() as usize,
        image.height() as usize,
        |x, y| image.get_pixel(u32::try_from(x).unwrap(), u32::try_from(y).unwrap())[0],
    );
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the PNG");
    let (_, content) = grids[0].decode().unwrap();
    content
}

/// A real authenticator's algorithm: Python's pyotp reads the otpauth URI and computes the
/// code; the keystore must accept it.
async fn codes_from_an_independent_authenticator_are_accepted(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let app = TestApp::start(
        &test_settings(&db),
        Arc::new(ManualClock::new(std::time::SystemTime::now())),
    )
    .await;
    let key = app.enroll("taro.yamada").await;

    let python = kagi_testkit::peers::python();
    let output = Command::new(&python)
        .args([
            "-c",
            "import sys, pyotp; print(pyotp.parse_uri(sys.argv[1]).at(int(sys.argv[2])))",
        ])
        .arg(&key.otpauth_uri)
        .arg(app.clock_unix().to_string())
        .output()
        .unwrap_or_else(|e| panic!("{} runs: {e}", python.display()));
    assert!(
        output.status.success(),
        "pyotp failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let code = String::from_utf8(output.stdout).unwrap().trim().to_owned();

    let reply = app.verify("taro.yamada", &code).await.unwrap();
    assert_eq!(reply.result(), pb::VerifyResult::Accepted);
    assert_eq!(reply.drift_steps, 0);
}

async fn enrolling_twice_is_already_exists(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let first = app.enroll("taro.yamada").await;

    let request = TestApp::as_caller(
        "onboarding",
        pb::EnrollRequest {
            account_id: "taro.yamada".into(),
        },
    );
    let err = app.client.clone().enroll(request).await.unwrap_err();

    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(
        app.current_key("taro.yamada").await.unwrap().secret_base32,
        first.secret_base32,
        "first key kept"
    );
}

async fn an_account_without_a_key_is_not_found(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let err = app.current_key("nobody").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "account has no setup key");
}

/// Changing the defaults (SHA256, 8 digits, 60 s) applies to new keys only: keys already in
/// authenticators keep working with the parameters they were issued with.
async fn key_parameters_are_recorded_per_key(backend: Backend) {
    let db = TestDatabase::new(backend, "keystore.db").await;
    let clock = Arc::new(ManualClock::new(std::time::SystemTime::now()));
    let app = TestApp::start(&test_settings(&db), clock.clone()).await;
    let old = app.enroll("taro.yamada").await;
    app.stop().await;

    let mut settings = test_settings(&db);
    settings.totp.algorithm = "SHA256".into();
    settings.totp.digits = 8;
    settings.totp.period = 60;
    let app = TestApp::start(&settings, clock).await;
    let new = app.enroll("hanako").await;

    assert_eq!(
        (new.algorithm, new.digits, new.period_seconds),
        (pb::HashAlgorithm::Sha256 as i32, 8, 60)
    );
    assert!(
        new.otpauth_uri
            .ends_with("&algorithm=SHA256&digits=8&period=60")
    );
    let shown_old = app.current_key("taro.yamada").await.unwrap();
    assert_eq!((shown_old.digits, shown_old.period_seconds), (6, 30));
    let old_code = app.code_for(&old, 0);
    assert_eq!(
        app.verify("taro.yamada", &old_code).await.unwrap().result(),
        pb::VerifyResult::Accepted
    );
    let new_code = app.code_for(&new, 0);
    assert_eq!(new_code.len(), 8);
    assert_eq!(
        app.verify("hanako", &new_code).await.unwrap().result(),
        pb::VerifyResult::Accepted
    );
}
