//! One binary for every service, so the container image carries one copy of the shared
//! code (tonic, sqlx, rustls…) instead of four: `kagi keystore serve` runs exactly what
//! `kagi-keystore serve` runs, and so does the binary itself when invoked under a service's
//! name (`argv[0]` = `kagi-keystore`, e.g. a symlink), as BusyBox does.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser as _;

/// The services this binary can become, by the name after `kagi` (`kagi keystore`).
pub const SERVICES: [&str; 4] = ["keystore", "reset", "notifier", "portal"];

/// Runs the service `args` name, through `argv[0]` (`kagi-reset …`) or the first argument
/// (`kagi reset …`), with the rest of the command line as that service's own; `None` when
/// they name none, so `kagi`'s own commands (`dev`) run.
pub async fn dispatch(args: Vec<OsString>) -> Option<ExitCode> {
    let invoked = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("kagi-"))
        .filter(|n| SERVICES.contains(n))
        .map(str::to_owned);
    let (service, rest) = match invoked {
        Some(service) => (service, args.into_iter().skip(1).collect::<Vec<_>>()),
        None => {
            let service = args
                .get(1)
                .and_then(|a| a.to_str())
                .filter(|a| SERVICES.contains(a))?
                .to_owned();
            (service, args.into_iter().skip(2).collect())
        }
    };
    // The service's parser sees its own program name, so `--help` and errors read right.
    let argv = std::iter::once(OsString::from(format!("kagi-{service}"))).chain(rest);
    Some(match service.as_str() {
        "keystore" => kagi_keystore::cli::main(kagi_keystore::cli::Cli::parse_from(argv)).await,
        "reset" => kagi_reset::cli::main(kagi_reset::cli::Cli::parse_from(argv)).await,
        "notifier" => kagi_notifier::cli::main(kagi_notifier::cli::Cli::parse_from(argv)).await,
        _ => kagi_portal::cli::main(kagi_portal::cli::Cli::parse_from(argv)).await,
    })
}
