//! `kagi-notifier`: see `--help`.

use clap::Parser;

/// mimalloc, as in `kagi` (the image's binary): see its `main.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_notifier::cli::main(kagi_notifier::cli::Cli::parse()).await
}
