//! kagi's benchmarks: a gRPC load generator, the database seeder it needs, and the bare
//! "ceiling" services it is compared against. Run through `cargo run --release -p kagi-bench`.
//!
//! # Layout
//! - [`suite`]: starts the real keystore (SQLite or PostgreSQL) and runs each measurement.
//! - [`seed`]: enrolls the accounts a run needs; [`load`]: the closed-loop gRPC load
//!   generator and its latency histogram; [`ceiling`]: bare services doing only the database
//!   work (one UPDATE, or a SELECT then an UPDATE), the floor the keystore is compared with.
//! - [`metrics_cost`]: the keystore with `[metrics]` off and on in one run (`--metrics both`).
//! - Issue 16's measurements, on [`drive`] (a closed loop for any keystore RPC): [`compare`]
//!   (keystore builds side by side in one run), [`keyview`] (`GetCurrentKey` by the forms
//!   asked for), [`openloop`] (`VerifyCode` at a fixed rate over mTLS, latency distribution)
//!   and [`startup`] (exec to SERVING).

pub mod ceiling;
pub mod compare;
pub mod drive;
pub mod keyview;
pub mod load;
pub mod metrics_cost;
pub mod openloop;
pub mod seed;
pub mod startup;
pub mod suite;
