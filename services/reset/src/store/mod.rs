//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver (opened,
//! migrated and queued for writes by [`kagi_runtime::db`]). Every multi-step change is one
//! transaction whose first statement writes, and every saga transition is a conditional
//! UPDATE on the reset's state and version, never a read-then-write.

mod accounts;
#[macro_use]
mod resets;
mod rate;

// After `resets`, whose column macro it uses.
mod admin;

pub use accounts::AccountRow;
pub use admin::{AdminEvent, NewAdminEvent};
pub use rate::RateOutcome;
pub use resets::{NewReset, ResetRow, StartOutcome};

pub use kagi_runtime::db::Backend;
pub(crate) use kagi_runtime::db::{WriteTx, is_unique_violation};

kagi_runtime::service_database! {
    /// The reset service's database: the embedded account directory, resets, rate-limit events.
    pub struct Db(ResetSchema, embedded = "sqlite://data/reset.db?mode=rwc", postgres_schema = "reset");
}
