//! kagi's reset service: the manual's menu 2, "セットアップキーを再発行する", as a saga
//! over the keystore and the notifier. The user proves who they are with ID and password,
//! receives a 6-digit code at the recovery address, enters it, confirms, and sees a new
//! setup key; every step is persisted before its side effect and every side effect is
//! idempotent, so crashes and retries rotate exactly once and mail exactly once per send.
//!
//! # Layout
//!
//! - [`domain`]: pure logic, no I/O: the states of a reset and the policy's numbers
//!   ([`domain::ResetState`], [`domain::Policy`]), confirmation codes and their keyed hash,
//!   reset handles, address masking, input checks.
//! - [`saga`]: the use cases of `kagi.v1.Reset`, one file per step of the manual
//!   (start, resend, verify, confirm, cancel and get, sweep), over the store, the directory
//!   and the downstream services.
//! - [`login`]: the portal's `local` login (`kagi.v1.Directory/Authenticate`), the same
//!   directory without a reset.
//! - [`limits`]: per-IP and per-account limits on password-checking attempts, shared by
//!   StartReset and the login.
//! - [`directory`]: who may reset and where their code goes (the embedded accounts table,
//!   argon2id passwords); [`accounts`] manages it (`kagi-reset accounts …`).
//! - [`store`]: sqlx over SQLite or PostgreSQL: resets moved by conditional UPDATEs, rate
//!   events, accounts; the one mapping of [`domain::ResetState`] to its column text.
//! - [`downstream`]: the keystore and notifier clients (token, trace context, deadline).
//! - [`grpc`]: the tonic services: validate the request, call [`saga`] or [`login`], shape
//!   the reply; [`error`] is the one place errors become gRPC statuses.
//! - [`metrics`]: resets by step, codes mailed, argon2 hashes in flight, reissues in
//!   CONFIRMING, for Prometheus.
//! - [`config`], [`app`], [`cli`]: settings, wiring ([`Application::build`]), the command line.
//!
//! One request, VerifyCode: the runtime's server joins the caller's trace and checks the
//! caller's token; [`grpc::ResetGrpc`] parses the reset ID and the code
//! ([`domain::ResetToken`], [`domain::ConfirmationCode`]) and calls
//! [`saga::ResetSaga::verify`], which loads the reset by the hash of its ID
//! ([`store::Db::find_reset`]), compares the code's keyed hash ([`domain::CodeHasher`]),
//! and records the outcome with a conditional UPDATE on the reset's version
//! ([`store::Db::record_verified`] or [`store::Db::record_wrong_code`]), re-reading when a
//! parallel guess won first; the outcome goes back as a `CodeCheck`, a failure through
//! [`Error`] as a status.

pub mod accounts;
pub mod app;
pub mod cli;
pub mod config;
pub mod directory;
pub mod domain;
pub mod downstream;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod login;
pub mod metrics;
pub mod saga;
pub mod store;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
