//! kagi's notifier: owns every e-mail kagi sends. A gRPC call queues a reset-code mail or a
//! key-reissued notice durably and returns; a worker in the same process delivers it over
//! pooled SMTP exactly once across replicas, retrying transient failures with backoff until
//! the mail stops being useful, and wipes the stored code once the message is handled.
//!
//! # Layout
//!
//! - [`cli`]: the command line (`serve`, `migrate`); `main.rs` only parses it.
//! - [`config`]: the typed [`Settings`], documented knob by knob in `notifier.toml`.
//! - [`app`]: [`Application::build`] wires the pieces below and binds the listener;
//!   `run_until_stopped` serves gRPC and runs the worker until shutdown.
//! - [`grpc`]: the `kagi.v1.Notifier` service: validate through the domain, queue, wake the
//!   worker; [`error`] is the one place gRPC status codes are chosen. [`admin`] is
//!   `kagi.v1.NotifierAdmin`: the help desk's list of an account's mails, and the notice of
//!   an operator's action.
//! - [`domain`]: the rules, without I/O: a valid [`domain::NewMessage`], the secret
//!   [`domain::ConfirmationCode`], locales, delivery states, retry and backoff.
//! - [`store`]: the queue in SQLite or PostgreSQL ([`store::Db`]): idempotent enqueue with
//!   the per-recipient limit, lease-based claims, finishing by the lease holder only.
//! - [`worker`]: claims due messages, sends them a few at a time, records each outcome.
//! - [`metrics`]: queue depth and oldest age, deliveries by outcome and SMTP reply class,
//!   retries, for Prometheus.
//! - [`seal`]: seals queued payloads (AES-256-GCM, the delivery ID as associated data).
//! - [`mail`]: renders the operator-editable templates into a MIME message.
//! - [`transport`]: where mail leaves the process: pooled SMTP, or `.eml` files in development.
//!
//! One `SendResetCode`, end to end: [`grpc`] checks the call through
//! [`domain::NewMessage::reset_code`] (address, 6-digit code, expiry, locale), serializes and seals the
//! [`domain::Payload`] and has [`store::Db::enqueue`] insert it once per `message_id` under
//! the hourly limit, wakes the worker and returns the delivery ID. The [`worker`] takes a
//! lease on the row with [`store::Db::claim_due`], opens the payload, has [`mail::MailComposer`] render the
//! Japanese (or English) mail, hands it to [`transport::Mailer::send`], and lets
//! [`domain::next_step`] decide from the SMTP reply: sent, retry later, or failed. Then
//! [`store::Db::finish`] records that outcome (only while the lease is still its own) and
//! clears the stored code. `GetDelivery` reads the row back through [`store::Db::get`].

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod mail;
pub mod metrics;
pub mod seal;
pub mod store;
pub mod transport;
pub mod worker;

pub use app::Application;
pub use config::Settings;
pub use error::Error;
