//! The reset service's integration tests: the real reset service, the real keystore and the
//! real notifier over real gRPC on 127.0.0.1, mail delivered to a real SMTP server
//! (aiosmtpd). Every scenario runs with the reset service on SQLite and on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err,
    missing_debug_implementations
)]

mod helpers;

mod account_changes;
mod admin;
mod attacker;
mod code;
mod confirm;
mod crash;
mod happy_path;
mod key_displayed;
mod limits;
mod login;
mod metrics;
mod trace;
