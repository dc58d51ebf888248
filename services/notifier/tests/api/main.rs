//! The notifier's one integration-test binary: the real service over gRPC, a real SMTP
//! server (aiosmtpd) and, for every test, both SQLite and PostgreSQL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    missing_debug_implementations
)]

mod admin;
mod delivery;
mod helpers;
mod mail_content;
mod metrics;
mod relay;
mod requests;
mod secrets;
