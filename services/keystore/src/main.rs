//! `kagi-keystore`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi_keystore::cli::main(kagi_keystore::cli::Cli::parse()).await
}
