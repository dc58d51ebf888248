//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver. Every
//! multi-step change is one transaction whose first statement writes (so SQLite takes its
//! write lock up front), and every race is settled by a conditional UPDATE rather than a
//! read-then-write.

mod admin;
mod audit;
mod checks;
mod keys;

pub use admin::AccountRecord;
pub use audit::{AuditEvent, NewAuditEvent};
pub use checks::CheckAdmission;
pub use keys::{CurrentKey, KeyRecord, NewKey, RotateOutcome, VerifyRow};

pub use kagi_runtime::db::Backend;
pub(crate) use kagi_runtime::db::is_unique_violation;

kagi_runtime::service_database! {
    /// The keystore's database: accounts with their current key, rotations, the audit trail.
    pub struct Db(KeystoreSchema, embedded = "sqlite://data/keystore.db?mode=rwc", postgres_schema = "keystore");
}
