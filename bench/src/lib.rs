//! kagi's benchmarks: a gRPC load generator, the database seeder it needs, and the bare
//! "ceiling" services it is compared against. Run through `cargo run --release -p kagi-bench`.

pub mod ceiling;
pub mod load;
pub mod seed;
pub mod suite;
