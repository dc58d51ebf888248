//! A whole kagi system as real processes, and the chaos run that proves it loses nothing
//! when they and the database die under load (issue 13).
//!
//! # Layout
//! - [`stack`]: [`StackBuilder`] starts N replicas of the keystore, notifier, reset service
//!   and portal from the multi-call binary, on SQLite, the machine's PostgreSQL, or a
//!   replicated PostgreSQL of the stack's own, with a real SMTP server; [`Stack`] gives
//!   tests their addresses, tokens and mail, and kills and restarts replicas.
//! - [`local`]: [`LocalStack`], the same system in the test's own process, for the
//!   services' integration tests: manual clocks, captured logs, handles into the services.
//! - [`replica`]: one service process on a port it keeps across restarts.
//! - [`postgres`]: a primary and a synchronous streaming standby from Debian's binaries,
//!   failover by promotion, restart.
//! - [`haproxy`]: the front: `pg-rw` follows the primary; one listener per service.
//! - [`mailbox`]: the SMTP server (up, down, greylisting) and the mail it accepted.
//! - [`chaos`]: the load, the seeded fault schedule, and the invariants checked after.

pub mod chaos;
pub mod haproxy;
pub mod local;
pub mod mailbox;
pub mod postgres;
pub mod replica;
pub mod stack;

pub use local::{LocalBuilder, LocalStack};
pub use replica::Service;
pub use stack::{Stack, StackBuilder, Storage};
