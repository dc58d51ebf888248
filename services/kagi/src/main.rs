//! `kagi`: see `--help`. Also every service: `kagi keystore|reset|notifier|portal …`, or
//! invoked as `kagi-keystore` etc. (see `kagi::multicall`).

use clap::Parser;

/// mimalloc instead of glibc's malloc: a view of the key or the help desk's page allocates
/// and frees thousands of small buffers across threads (h2 frames, protobuf, SQL rows), and
/// glibc's arenas took a sixth of the process's CPU there (`perf`, BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if let Some(code) = kagi::multicall::dispatch(std::env::args_os().collect()).await {
        return code;
    }
    kagi::main(kagi::Cli::parse()).await
}
