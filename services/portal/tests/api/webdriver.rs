//! A small W3C WebDriver client speaking JSON to Debian's chromedriver over plain HTTP,
//! driving a headless Chromium with a fresh profile.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::common::http;

/// A headless Chromium under chromedriver, one WebDriver session.
pub struct Browser {
    driver: SocketAddr,
    session: String,
    _chromedriver: Child,
    _profile: tempfile::TempDir,
}

/// An element found on the page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

impl Browser {
    /// Starts chromedriver and a browser claiming to be `user_agent`, sized like a phone.
    pub async fn start(user_agent: &str) -> Self {
        let port = kagi_testkit::free_port();
        let chromedriver = Command::new(kagi_testkit::peers::chromedriver())
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (apt-get install chromium chromium-driver)");
        let driver = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(driver).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=430,1500".into(),
            "--lang=ja".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--user-agent={user_agent}"),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": kagi_testkit::peers::chromium(), "args": args}
        }}});
        let reply = call(driver, "POST", "/session", Some(&capabilities)).await;
        let session = reply["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {reply}"))
            .to_owned();
        Self {
            driver,
            session,
            _chromedriver: chromedriver,
            _profile: profile,
        }
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(
            self.driver,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
        .await
    }

    pub async fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url }))).await;
    }

    /// The browser's Back button.
    pub async fn back(&self) {
        self.cmd("POST", "/back", Some(&json!({}))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn source(&self) -> String {
        self.cmd("GET", "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The first element matching `css`, waiting up to 10 s for it (a click that submits a
    /// form returns before the next page has loaded); panics when none appears.
    pub async fn find(&self, css: &str) -> Element<'_> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(element) = self.try_find(css).await {
                return element;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "no element {css} on {}:\n{}",
                    self.url().await,
                    self.source().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 10 s for the page to contain `text`; panics with the page otherwise.
    pub async fn expect_page(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let source = self.source().await;
            if source.contains(text) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{text:?} not on {}:\n{source}", self.url().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits up to 10 s for the address to end with `path`.
    pub async fn expect_path(&self, path: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.url().await.ends_with(path) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not at {path} but {}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn try_find(&self, css: &str) -> Option<Element<'_>> {
        let reply = self
            .cmd(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .await;
        if reply.get("error").is_some() {
            return None;
        }
        let id = reply.as_object()?.values().next()?.as_str()?.to_owned();
        Some(Element { browser: self, id })
    }

    pub async fn text_of(&self, css: &str) -> String {
        self.find(css).await.text().await
    }

    /// Runs `script` in the page (WebDriver's own channel; the page itself has no script).
    pub async fn execute(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
        .await
    }

    /// Saves what the browser shows as `<name>.png`: in `docs/screenshots/` when
    /// `KAGI_UPDATE_SCREENSHOTS` is set (to refresh the README's pictures), otherwise under
    /// the target folder, so a test run leaves the work tree as it was.
    pub async fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let b64 = self
            .cmd("GET", "/screenshot", None)
            .await
            .as_str()
            .unwrap()
            .to_owned();
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        let dir = if std::env::var_os("KAGI_UPDATE_SCREENSHOTS").is_some() {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots")
        } else {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the browser; chromedriver itself is killed with its handle.
        let driver = self.driver;
        let path = format!("/session/{}", self.session);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    call(driver, "DELETE", &path, None),
                )
                .await;
            });
        })
        .join();
    }
}

impl Element<'_> {
    fn path(&self, tail: &str) -> String {
        format!("/element/{}{tail}", self.id)
    }

    pub async fn click(&self) {
        self.browser
            .cmd("POST", &self.path("/click"), Some(&json!({})))
            .await;
    }

    pub async fn type_text(&self, text: &str) {
        self.browser
            .cmd("POST", &self.path("/value"), Some(&json!({ "text": text })))
            .await;
    }

    pub async fn text(&self) -> String {
        self.browser
            .cmd("GET", &self.path("/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn attribute(&self, name: &str) -> Option<String> {
        self.browser
            .cmd("GET", &self.path(&format!("/attribute/{name}")), None)
            .await
            .as_str()
            .map(str::to_owned)
    }

    pub async fn enabled(&self) -> bool {
        self.browser
            .cmd("GET", &self.path("/enabled"), None)
            .await
            .as_bool()
            .unwrap()
    }

    pub async fn tag(&self) -> String {
        self.browser
            .cmd("GET", &self.path("/name"), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// One WebDriver command; returns its `value`. An `error` value comes back as is (the
/// caller's unwrap says what was expected).
async fn call(driver: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let headers = [("Content-Type", "application/json; charset=utf-8")];
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        http::send(driver, method, path, &headers, body.as_bytes()),
    )
    .await
    .expect("chromedriver answers");
    let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    value.get("value").cloned().unwrap_or(Value::Null)
}
