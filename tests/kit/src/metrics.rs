//! Reading a service's `/metrics` the way Prometheus does, and holding it to Prometheus's
//! own linter: `promtool check metrics` (Debian's `prometheus` package). When promtool is
//! missing the test fails saying what to install ([`PROMTOOL_APT_INSTALL`]);
//! `KAGI_TEST_PROMTOOL` points at another one.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// What to run when promtool is missing.
pub const PROMTOOL_APT_INSTALL: &str = "apt-get install prometheus";

/// Debian's promtool (`$KAGI_TEST_PROMTOOL`, default `/usr/bin/promtool`).
///
/// # Panics
/// When it is missing, saying what to install.
pub fn promtool() -> PathBuf {
    let path = std::env::var_os("KAGI_TEST_PROMTOOL")
        .map_or_else(|| PathBuf::from("/usr/bin/promtool"), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: the metrics tests lint with Prometheus's promtool; \
         install it with `{PROMTOOL_APT_INSTALL}` (or set KAGI_TEST_PROMTOOL)",
        path.display()
    );
    path
}

/// `GET /metrics` from `addr` as Prometheus asks for it (OpenMetrics first); the body, after
/// checking the status, the content type and the closing `# EOF`.
///
/// # Panics
/// No answer, or not a 200 with OpenMetrics text.
pub async fn scrape(addr: SocketAddr) -> String {
    let body = get(
        addr,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    )
    .await;
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    body
}

/// `GET /metrics` in the classic text format (what curl and `promtool check metrics` read).
///
/// # Panics
/// No answer, or not a 200.
pub async fn scrape_text(addr: SocketAddr) -> String {
    get(addr, "text/plain").await
}

async fn get(addr: SocketAddr, accept: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics port accepts");
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the scrape");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let wanted = if accept.starts_with("application/openmetrics-text") {
        "content-type: application/openmetrics-text"
    } else {
        "content-type: text/plain; version=0.0.4"
    };
    assert!(head.to_ascii_lowercase().contains(wanted), "{head}");
    body.to_owned()
}

/// Runs `promtool check metrics` on `text`.
///
/// # Panics
/// When promtool finds a problem (its output is the message) or is missing.
pub fn promtool_check(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scraped:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample written exactly as `series` (name and labels as rendered, e.g.
/// `grpc_server_handled_total{grpc_service="kagi.v1.Keystore",…}`); 0 when absent, as
/// Prometheus treats a counter not yet created.
pub fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN)
        })
}

/// The value of a sample of `name` whose labels include every `label="value"` pair given.
pub fn value_with(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// `GET path` from the metrics listener at `addr` as a kubelet's `httpGet` probe makes it:
/// the status code (the probe passes on 2xx and 3xx).
///
/// # Panics
/// No HTTP answer.
pub async fn probe(addr: SocketAddr, path: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the metrics port accepts");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.30\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read the answer");
    response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {response}"))
}
