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

/// Everything logged so far by this test binary.
pub fn captured() -> String {
    String::from_utf8_lossy(&buffer().lock().unwrap()).into_owned()
}
