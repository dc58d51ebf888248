//! `kagi-stack`: the chaos run (`kagi-stack chaos --help`). The binary is also the
//! multi-call kagi binary (`kagi-stack keystore serve` runs exactly what `kagi keystore
//! serve` runs, through the same `kagi::multicall::dispatch`), so the replicas a run starts
//! are always built from the same sources as the run itself.

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(code) = kagi::multicall::dispatch(std::env::args_os().collect()).await {
        return code;
    }
    kagi_stack::chaos::cli::main(kagi_stack::chaos::cli::Cli::parse()).await
}
