//! A real headless Chromium, driven through ChromeDriver's W3C WebDriver API (plain JSON
//! over HTTP on 127.0.0.1), for the status page's tests. Debian's `chromium` and
//! `chromium-driver` (`.ci/run` installs them). The flags keep Chromium from reaching for
//! Google's services, which this machine's closed network refuses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use super::docker::free_port;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser is here; under `CI=true` its absence fails the test instead.
pub fn available_or_skip(test: &str) -> bool {
    let here = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !here {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: CI=true but {CHROMIUM} or {CHROMEDRIVER} is missing (.ci/run installs chromium and chromium-driver)"
        );
        eprintln!("skipping {test}: no {CHROMIUM} / {CHROMEDRIVER}");
    }
    here
}

/// One browser session; the driver (and the browser with it) ends on drop.
pub struct Browser {
    driver: Child,
    session: String,
    base: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts ChromeDriver on a free port and opens a session of a `width`×`height`
    /// headless Chromium with an empty profile.
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            session: String::new(),
            base,
            http,
            _profile: profile,
        };
        super::eventually(Duration::from_secs(20), "chromedriver ready", || async {
            let r = browser
                .http
                .get(format!("{}/status", browser.base))
                .send()
                .await
                .ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let answer = browser
            .post(
                "/session",
                json!({ "capabilities": { "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }}}),
            )
            .await;
        browser.session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {answer}"))
            .to_owned();
        browser
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("chromedriver {path}: {e}"));
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "chromedriver {path}: {status} {v}");
        v["value"].clone()
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    pub async fn goto(&self, url: &str) {
        self.post(&self.at("/url"), json!({ "url": url })).await;
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page and returns
    /// what it returns.
    pub async fn eval(&self, script: &str, args: Value) -> Value {
        self.post(
            &self.at("/execute/sync"),
            json!({ "script": script, "args": args }),
        )
        .await
    }

    /// Waits until `script` returns something other than null, false or undefined; after
    /// 30 s, fails with what the page shows.
    pub async fn wait_for(&self, what: &str, script: &str, args: Value) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(script, args.clone()).await;
            if !v.is_null() && v != false {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .eval(
                        "return document.body.innerText + '\\n--- markup ---\\n' + \
                            document.body.innerHTML.slice(0, 6000);",
                        json!([]),
                    )
                    .await;
                panic!(
                    "timed out after 30 s waiting for {what}; the page shows:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .post(
                &self.at("/element"),
                json!({ "using": "css selector", "value": css }),
            )
            .await;
        found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned()
    }

    /// Clicks the first element `css` selects, as a user would (WebDriver's element click).
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.post(&self.at(&format!("/element/{id}/click")), json!({}))
            .await;
    }

    /// Types `text` into the first element `css` selects, key by key.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.post(
            &self.at(&format!("/element/{id}/value")),
            json!({ "text": text }),
        )
        .await;
    }

    /// Saves a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let r = self
            .http
            .get(format!("{}{}", self.base, self.at("/screenshot")))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        let png = base64_decode(v["value"].as_str().expect("a screenshot"));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending the session closes the browser; the driver goes after it. Plain HTTP on a
        // std socket: a drop cannot await.
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://").to_owned();
        if let Ok(mut socket) = std::net::TcpStream::connect(&addr) {
            let _ = socket.set_read_timeout(Some(Duration::from_secs(10)));
            let request = format!(
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
                self.session
            );
            if socket.write_all(request.as_bytes()).is_ok() {
                let _ = socket.read_to_end(&mut Vec::new());
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where a test keeps its screenshots: `target/screenshots/`.
pub fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("screenshots")
        .join(format!("{name}.png"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut value = [255u8; 256];
    for (i, c) in ALPHABET.iter().enumerate() {
        value[usize::from(*c)] = u8::try_from(i).unwrap();
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
    {
        let v = value[usize::from(c)];
        assert!(v != 255, "not base64: {c}");
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).unwrap());
        }
    }
    out
}
