//! The manual's FAQ 8: on campus, no one-time password is asked.

use kagi_proto::v1 as pb;

use crate::helpers::{Backend, TestApp, spawn_app};
use kagi_testkit::both_backends;

both_backends!(on_campus_logins_need_no_one_time_password);

async fn on_campus_logins_need_no_one_time_password(backend: Backend) {
    let (app, _db) = spawn_app(backend).await;
    let check = |ip: &str| {
        let mut client = app.client.clone();
        let request = TestApp::as_caller(
            "login",
            pb::CheckLoginPolicyRequest {
                client_ip: ip.into(),
            },
        );
        async move {
            client
                .check_login_policy(request)
                .await
                .unwrap()
                .into_inner()
        }
    };

    let campus_v4 = check("10.20.30.40").await;
    assert!(!campus_v4.otp_required);
    assert_eq!(campus_v4.matched_network, "10.0.0.0/8");
    let campus_v6 = check("2001:db8:10:1::99").await;
    assert!(!campus_v6.otp_required);
    assert_eq!(campus_v6.matched_network, "2001:db8:10::/48");
    assert!(
        !check("::ffff:10.1.1.1").await.otp_required,
        "IPv4-mapped IPv6 from a dual-stack proxy"
    );

    for outside in ["203.0.113.7", "2001:db8:11::1", "192.168.0.1"] {
        let reply = check(outside).await;
        assert!(reply.otp_required, "{outside}");
        assert_eq!(reply.matched_network, "");
    }
}
