//! Test support shared by kagi's integration tests. Everything here is a real part started
//! on 127.0.0.1 for one test: a fresh SQLite file or PostgreSQL database, a log capture of
//! the service's own subscriber, an aiosmtpd SMTP server, an OTLP/gRPC receiver; and the
//! real programs tests drive ([`peers`]: Python with pyotp and aiosmtpd, grpcurl, Chromium),
//! set up on first use so that `cargo test --workspace` needs no other step.
//!
//! # Layout
//! - [`database`]: a private SQLite file or PostgreSQL database per test, dropped after it,
//!   with side files (keys every service on it shares) that go with it.
//! - [`peers`]: the test's own Python environment under `target/`, grpcurl, Chromium.
//! - [`smtp`]: a real aiosmtpd server that keeps what it receives; [`otlp`]: a real
//!   OTLP/gRPC receiver; [`logs`]: the service's own log lines, captured per test.
//! - [`tls`]: a fresh CA per test (rcgen) with server and caller certificates, and the
//!   server and client settings that use them.
//! - [`metrics`]: scrape `/metrics` and lint it with `promtool check metrics`.
//! - [`both_backends!`]: one scenario, run as `::sqlite` and `::postgres`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod database;
pub mod logs;
pub mod metrics;
pub mod otlp;
pub mod peers;
pub mod smtp;
pub mod tls;

use std::time::Duration;

pub use database::{Backend, TestDatabase};

/// Runs each listed scenario `async fn name(Backend)` as `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::Backend::Postgres).await
            }
        }
    )* };
}

/// A request carrying `token` as its bearer credential.
pub fn bearer<T>(token: &str, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `done` every 20 ms; panics after `timeout`.
pub async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
