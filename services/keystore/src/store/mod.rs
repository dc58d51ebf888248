//! Storage through sqlx: SQLite (the embedded default) or PostgreSQL, chosen by URL.
//!
//! Queries are plain SQL shared by both backends through sqlx's `Any` driver. Every
//! multi-step change is one transaction whose first statement writes (so SQLite takes its
//! write lock up front), and every race is settled by a conditional UPDATE rather than a
//! read-then-write.

mod audit;
mod keys;

use kagi_runtime::db::Schema;
use sqlx::migrate::Migrator;

pub use audit::{AuditEvent, NewAuditEvent};
pub use keys::{CurrentKey, KeyRecord, NewKey, RotateOutcome, VerifyRow};

pub use kagi_runtime::db::Backend;
pub(crate) use kagi_runtime::db::is_unique_violation;

/// The keystore's tables: accounts with their current key, rotations, the audit trail.
#[derive(Debug)]
pub struct KeystoreSchema;

impl Schema for KeystoreSchema {
    const EMBEDDED_URL: &'static str = "sqlite://data/keystore.db?mode=rwc";

    fn migrator(backend: Backend) -> &'static Migrator {
        static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
        static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");
        match backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }
}

kagi_runtime::service_database! {
    /// The keystore's database.
    pub struct Db(KeystoreSchema);
}
