//! `kagi-notifier`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_notifier::cli::main(kagi_notifier::cli::Cli::parse()).await
}
