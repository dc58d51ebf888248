//! kagi's benchmarks: a gRPC load generator, the database seeder it needs, and the bare
//! "ceiling" services it is compared against. Run through `cargo run --release -p kagi-bench`.
//!
//! # Layout
//! - [`suite`]: starts the real keystore (SQLite or PostgreSQL) and runs each measurement.
//! - [`seed`]: enrolls the accounts a run needs; [`load`]: the closed-loop gRPC load
//!   generator and its latency histogram; [`ceiling`]: bare services doing only the database
//!   work (one UPDATE, or a SELECT then an UPDATE), the floor the keystore is compared with.
//! - [`metrics_cost`]: the keystore with `[metrics]` off and on in one run (`--metrics both`).

pub mod ceiling;
pub mod load;
pub mod metrics_cost;
pub mod seed;
pub mod suite;
