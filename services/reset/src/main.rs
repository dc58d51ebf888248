//! `kagi-reset`: see `--help`.

use clap::Parser;

/// mimalloc, as in `kagi` (the image's binary): see its `main.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_reset::cli::main(kagi_reset::cli::Cli::parse()).await
}
