//! `kagi-portal`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_portal::cli::main(kagi_portal::cli::Cli::parse()).await
}
