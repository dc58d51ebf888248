//! Captures what the services log through kagi-runtime's own subscriber (JSON lines with
//! span fields), once per test binary, so tests can prove what never appears in logs.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    BUFFER.get_or_init(Default::default)
}

#[derive(Clone)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber at the most verbose level (idempotent).
pub fn init() {
    static GUARD: OnceLock<kagi_runtime::TelemetryGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        let settings = kagi_runtime::TelemetrySettings {
            log_format: kagi_runtime::LogFormat::Json,
            log_filter: "trace".into(),
            ..Default::default()
        };
        let sink = Arc::clone(buffer());
        kagi_runtime::telemetry::init_with_writer("kagi-test", &settings, move || {
            Capture(Arc::clone(&sink))
        })
        .unwrap()
    });
}

/// Everything logged so far by this test binary, each line without its timestamp: the
/// timestamp's microseconds are six digits that a six-digit secret matches by chance about
/// once in a million lines, and a test binary logs at trace level (the notifier's "the code
/// never reaches the logs" failed once in CI with no leak to be found). A secret can only
/// leak through the other fields, which are kept whole.
pub fn captured() -> String {
    let raw = String::from_utf8_lossy(&buffer().lock().unwrap()).into_owned();
    raw.lines()
        .map(without_timestamp)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `token` stands alone somewhere in `haystack`, not inside a longer run of letters
/// and digits. A six-digit code is found by chance inside the long numbers a trace-level log
/// is full of (durations, floats, IDs) — the notifier's "the code never reaches the logs"
/// failed in CI that way twice — while a leaked code, however it is written into a line,
/// stands between a quote, a space, a `=` or some other non-alphanumeric byte.
pub fn mentions(haystack: &[u8], token: &str) -> bool {
    let token = token.as_bytes();
    !token.is_empty()
        && haystack
            .windows(token.len())
            .enumerate()
            .any(|(at, window)| {
                let before = at.checked_sub(1).map(|i| haystack[i]);
                let after = haystack.get(at + token.len()).copied();
                window == token
                    && [before, after]
                        .into_iter()
                        .all(|byte| !byte.is_some_and(|b| b.is_ascii_alphanumeric()))
            })
}

/// `{"timestamp":"…","level":…}` → `{"level":…}`; any other line as it is.
fn without_timestamp(line: &str) -> String {
    line.strip_prefix("{\"timestamp\":\"")
        .and_then(|rest| rest.split_once("\","))
        .map_or_else(|| line.to_owned(), |(_, fields)| format!("{{{fields}"))
}

#[cfg(test)]
mod tests {
    use super::{mentions, without_timestamp};

    #[test]
    fn a_code_is_mentioned_only_standing_alone() {
        assert!(mentions(br#"{"code":"860217"}"#, "860217"));
        assert!(mentions("確認コード 860217 です".as_bytes(), "860217"));
        assert!(mentions(b"860217", "860217"));
        assert!(!mentions(br#"{"elapsed":0.0018602171}"#, "860217"));
        assert!(!mentions(b"id-a860217", "860217"));
        assert!(!mentions(b"anything", ""));
    }

    #[test]
    fn a_json_line_loses_only_its_timestamp() {
        let line = r#"{"timestamp":"2026-11-26T12:30:01.860217Z","level":"INFO","fields":{"message":"860217"}}"#;
        assert_eq!(
            without_timestamp(line),
            r#"{"level":"INFO","fields":{"message":"860217"}}"#
        );
        assert_eq!(without_timestamp("plain 860217"), "plain 860217");
    }
}
