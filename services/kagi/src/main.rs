//! `kagi`: see `--help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    kagi::main(kagi::Cli::parse()).await
}
