//! The keystore's integration tests: the real service over real gRPC on 127.0.0.1, against
//! a fresh SQLite file and a fresh PostgreSQL database each. Every scenario runs on both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod admin;
mod audit;
mod auth;
mod check;
mod enroll;
mod input;
mod observability;
mod policy;
mod process;
mod rekey;
mod retention;
mod rotate;
mod secrecy;
mod tls;
mod verify;
