//! `kagi`: see `--help`. Also every service: `kagi keystore|reset|notifier|portal …`, or
//! invoked as `kagi-keystore` etc. (see `kagi::multicall`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Some(code) = kagi::multicall::dispatch(std::env::args_os().collect()).await {
        return code;
    }
    kagi::main(kagi::Cli::parse()).await
}
