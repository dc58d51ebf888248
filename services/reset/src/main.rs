//! `kagi-reset`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_reset::cli::main(kagi_reset::cli::Cli::parse()).await
}
