//! A real SMTP server for tests: `smtp_sink.py` (Python's aiosmtpd) on 127.0.0.1, answering
//! DATA as scripted and storing each accepted message as an `.eml` file.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, ChildStdin, Command};

/// A real SMTP server (aiosmtpd) answering DATA as scripted, storing what it accepts.
#[derive(Debug)]
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl SmtpSink {
    /// Starts a sink on a free port: `script` like "250", "451,451,250" or "550".
    pub async fn start(script: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::start_on(0, script, dir).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a sink speaking TLS (`starttls` or `implicit`) with `tls/sink.crt`.
    pub async fn start_tls(script: &str, tls: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::spawn(0, script, dir, tls, None).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a plaintext sink that requires AUTH with `user:password`.
    pub async fn start_with_auth(credentials: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut sink = Self::spawn(0, "250", dir, "none", Some(credentials)).await;
        sink._tmp = Some(tmp);
        sink
    }

    /// Starts a sink on a given port (0 for any), storing mail in `dir`.
    pub async fn start_on(port: u16, script: &str, dir: PathBuf) -> Self {
        Self::spawn(port, script, dir, "none", None).await
    }

    async fn spawn(port: u16, script: &str, dir: PathBuf, tls: &str, auth: Option<&str>) -> Self {
        let python = crate::peers::python();
        let tls_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tls");
        let mut child = Command::new(&python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/smtp_sink.py"))
            .args([
                "--port",
                &port.to_string(),
                "--maildir",
                dir.to_str().unwrap(),
                "--script",
                script,
            ])
            .args([
                "--tls",
                tls,
                "--cert",
                &format!("{tls_dir}/sink.crt"),
                "--key",
                &format!("{tls_dir}/sink.key"),
            ])
            .args(auth.map(|a| ["--auth", a]).into_iter().flatten())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs smtp_sink.py: {e}", python.display()));
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("smtp sink did not start")
        .unwrap();
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .expect("PORT line")
            .parse()
            .unwrap();
        let stdin = child.stdin.take();
        Self {
            port,
            dir,
            _tmp: None,
            child,
            stdin,
        }
    }

    /// Stops the server (closing its stdin ends it).
    pub async fn stop(mut self) {
        drop(self.stdin.take());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// The raw messages accepted so far, in order.
    pub fn mails(&self) -> Vec<Vec<u8>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        paths.sort();
        paths.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// One line per DATA command: `"<reply code> <Message-ID>"`.
    pub fn transcript(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("transcript.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub async fn wait_for_mails(&self, n: usize) -> Vec<Vec<u8>> {
        crate::wait_until(Duration::from_secs(15), || self.mails().len() >= n).await;
        self.mails()
    }
}

/// The root that signed `tls/sink.crt`.
pub fn test_ca() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tls/ca.crt"))
}
