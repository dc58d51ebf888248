//! kagi's keystore: every account's TOTP setup key, encrypted at rest, shown to its owner,
//! rotated by the reset saga and checked at each off-campus login without replay or brute
//! force.
//!
//! # Layout
//!
//! - [`domain`]: the rules, free of I/O (time and randomness are passed in): account IDs
//!   validated at the edge, the setup key and how it is written (Base32, otpauth URI),
//!   RFC 6238 codes matched with clock skew, the lockout after repeated failures, the
//!   campus networks where no one-time password is asked, and "check my authenticator"
//!   (`domain::diagnosis`: ready, clock off by N steps, or another key; its own allowance).
//! - [`crypto`]: every secret sealed with AES-256-GCM under a key-encryption key (KEK), bound
//!   to its account and key ID; several KEKs can open, the active one seals (`rekey`).
//! - [`store`]: sqlx over SQLite or PostgreSQL, one migration set each: accounts with their
//!   sealed current key and counters, every key ever issued (without its secret), rotations
//!   by idempotency key, and the audit trail. Views of a key that arrive together are
//!   read and recorded in one command and commit (`store::views`).
//! - [`admin`]: the help desk's use cases (look up, unlock, revoke), served as
//!   `kagi.v1.KeystoreAdmin` by [`grpc::admin`] to the `helpdesk` caller only.
//! - [`render`]: a shown key's otpauth URI and, when asked for, its QR code (PNG, SVG),
//!   drawn with the mask chosen at the key's first drawing (kept in its row, never the
//!   key) so later views skip the encoder's mask search.
//! - [`service`]: the use cases (enroll, show the current key, rotate, verify, check an
//!   authenticator, rekey, the audit trail) over domain, crypto and store, without the
//!   transport.
//! - [`grpc`]: `kagi.v1.Keystore` over tonic: take the caller the auth layer identified,
//!   validate the request's shape, call the use case, shape the reply. [`error`] is the one
//!   place an error becomes a gRPC status.
//! - [`metrics`]: VerifyCode results, lockouts, clock drift, rotations, rekey progress and
//!   CheckAuthenticator outcomes,
//!   for Prometheus.
//! - [`config`] loads the [`Settings`]; [`app`] wires them into a running server
//!   ([`Application`]); [`cli`] is the binary's commands (`serve`, `migrate`, `rekey`,
//!   `audit`), which `main.rs` only calls.
//!
//! ## One request: `VerifyCode`
//!
//! 1. [`grpc`] reads the caller from its bearer token, parses the account ID and checks
//!    that the code is 6–8 digits.
//! 2. [`service::Keystore::verify`] loads the account's sealed key, counters and last
//!    accepted time step from [`store`], refuses while it is locked out
//!    ([`domain::lockout`]), opens the secret ([`crypto`]) and matches the code against the
//!    clock within the allowed skew ([`domain::totp`]).
//! 3. A match on a step newer than the last accepted one is accepted by a conditional
//!    UPDATE (`... AND last_step < $step`), so of two concurrent uses of one code only one
//!    wins; a match on an older step is a replay; no match counts a failure, perhaps a
//!    lockout, and records it in the audit trail.
//! 4. [`grpc`] turns the outcome into a `VerifyResult`; a failure becomes a status only in
//!    [`error`].

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod render;
pub mod retention;
pub mod service;
pub mod store;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
