//! A small W3C WebDriver client over reqwest, driving Debian's headless
//! Chromium through `chromedriver`: sessions, navigation, elements, keys,
//! scripts, and (through chromedriver's CDP bridge) exact viewport sizes and
//! full-page screenshots. Blocking: each call runs on the client's own
//! current-thread runtime, like the other helpers in `tests/it/common`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52f-4a1d4e5b6b6b";

fn which(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    for n in names {
        for dir in path.split(':').chain(["/usr/bin", "/usr/lib/chromium"]) {
            let p = Path::new(dir).join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// chromedriver and chromium, or why not. With `CI=true` a missing browser
/// is a failure (panic), otherwise the caller skips loudly.
pub fn find_browser() -> Option<(PathBuf, PathBuf)> {
    let driver = which(&["chromedriver"]);
    let chrome = which(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, chrome) {
        (Some(d), Some(c)) => Some((d, c)),
        (d, c) => {
            let msg = format!(
                "headless Chromium is missing (chromedriver: {d:?}, chromium: {c:?}); \
                 install the Debian packages chromium and chromium-driver (scripts/test does)"
            );
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{msg}");
            }
            eprintln!("SKIPPED: {msg}");
            None
        }
    }
}

/// The port of chromedriver's "ChromeDriver was started successfully on
/// port N." line; the rest of its output is drained in the background.
fn announced_port(out: ChildStdout) -> Option<u16> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let port = line
                .strip_prefix("ChromeDriver was started successfully on port ")
                .and_then(|p| p.trim_end_matches('.').parse::<u16>().ok());
            if let Some(port) = port {
                let _ = tx.send(port);
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20)).ok()
}

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and one headless Chromium session; None (after a
    /// loud message) when the browser is not installed and CI is not set.
    pub fn start() -> Option<Browser> {
        Browser::start_with(&[])
    }

    /// As `start`, with more Chromium switches (e.g. a pinned certificate).
    pub fn start_with(extra_args: &[String]) -> Option<Browser> {
        let (driver_bin, chrome) = find_browser()?;
        // Port 0: chromedriver binds a free port itself and says which.
        let mut driver = Command::new(driver_bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn chromedriver");
        let port = match announced_port(driver.stdout.take().unwrap()) {
            Some(port) => port,
            None => {
                let _ = driver.kill();
                let _ = driver.wait();
                panic!("chromedriver did not say its port within 20 s");
            }
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = reqwest::Client::new();
        let profile = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            port,
            session: String::new(),
            rt,
            http,
            _profile: profile,
        };
        crate::common::wait_until("chromedriver to listen", Duration::from_secs(20), || {
            b.raw("GET", "/status", None).ok()
        });
        let mut args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--window-size=1280,900".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-sync".into(),
            "--disable-component-update".into(),
            "--disable-default-apps".into(),
            format!("--user-data-dir={}", b._profile.path().display()),
        ];
        args.extend(extra_args.iter().cloned());
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chrome.display().to_string(),
                "args": args,
            }
        }}});
        let v = b
            .raw("POST", "/session", Some(caps))
            .unwrap_or_else(|e| panic!("new WebDriver session: {e}"));
        b.session = v["sessionId"].as_str().expect("sessionId").to_owned();
        Some(b)
    }

    fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        self.rt.block_on(async {
            let mut req = self
                .http
                .request(method, &url)
                .timeout(Duration::from_secs(60));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let r = req.send().await.map_err(|e| e.to_string())?;
            let ok = r.status().is_success();
            let v: Value = r.json().await.map_err(|e| e.to_string())?;
            if ok {
                Ok(v["value"].clone())
            } else {
                Err(v["value"].to_string())
            }
        })
    }

    /// A command on this session.
    pub fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.raw(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })))
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` holds `args`).
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async script: call `arguments[arguments.length - 1](result)`.
    pub fn exec_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": args})),
        )
        .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Runs `body` with the dashboard's own `ui` and `i18n` modules (as the
    /// page loads them) in scope; it answers by calling `done(result)`.
    pub fn with_ui_modules(&self, body: &str) -> Value {
        self.exec_async(
            &format!(
                "const done = arguments[arguments.length - 1];
                 Promise.all([import('/assets/{v}/ui.js'), import('/assets/{v}/i18n.js')])
                   .then(([ui, i18n]) => {{ {body} }})
                   .catch((e) => done(String(e)));",
                v = arasuld::web::asset_version()
            ),
            vec![],
        )
    }

    /// Polls the expression `js` (evaluated as `return (js)`) every 100 ms
    /// until it is truthy; returns its value, or panics with `what` after
    /// `timeout`.
    pub fn wait_js(&self, what: &str, timeout: Duration, js: &str) -> Value {
        let deadline = Instant::now() + timeout;
        let script = format!("try {{ return ({js}); }} catch (e) {{ return null; }}");
        loop {
            let v = self.exec(&script, vec![]);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_f64() != Some(0.0),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let url = self.exec("return location.href", vec![]);
                let body = self.exec(
                    "return document.body ? document.body.innerText.slice(0, 2000) : ''",
                    vec![],
                );
                panic!(
                    "timed out after {timeout:?} waiting for {what} ({js}); at {url}; page text:\n{}",
                    body.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The element reference for a CSS selector, waiting up to 15 s.
    pub fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match self.cmd(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            ) {
                Ok(v) => {
                    // The W3C key, or the only value of the reference object.
                    let id = v.get(ELEMENT).or_else(|| v.as_object()?.values().next());
                    return id.and_then(Value::as_str).expect("element id").to_owned();
                }
                Err(e) if Instant::now() > deadline => panic!("no element {css:?}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Clicks the element (real pointer events through the driver). A page
    /// that re-renders may swap the element between find and click, and an
    /// element still moving into place may be covered for a moment: both
    /// retried until the deadline, then the driver's error is the failure.
    pub fn click(&self, css: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let id = self.find(css);
            match self.cmd("POST", &format!("/element/{id}/click"), Some(json!({}))) {
                Ok(_) => return,
                Err(e)
                    if (e.contains("stale element") || e.contains("click intercepted"))
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => panic!("click {css:?}: {e}"),
            }
        }
    }

    /// Types into the element (after clearing it).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        let _ = self.cmd("POST", &format!("/element/{id}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .unwrap_or_else(|e| panic!("type into {css:?}: {e}"));
    }

    /// The rendered text of the first element matching `css` (waits for it).
    pub fn text(&self, css: &str) -> String {
        let js = format!(
            "document.querySelector({}) && document.querySelector({0}).innerText",
            Value::String(css.to_owned())
        );
        match self.wait_js(&format!("text of {css}"), Duration::from_secs(15), &js) {
            Value::String(s) => s,
            other => other.to_string(),
        }
    }

    /// Presses one key (a WebDriver key code such as `\u{E004}` for Tab).
    pub fn press(&self, key: &str) {
        let actions = json!({"actions": [{"type": "key", "id": "kb", "actions": [
            {"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]}]});
        self.cmd("POST", "/actions", Some(actions)).unwrap();
    }

    /// A Chrome DevTools Protocol command through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(json!({"cmd": cmd, "params": params})),
        )
        .unwrap_or_else(|e| panic!("CDP {cmd}: {e}"))
    }

    /// Makes the viewport exactly `width` CSS pixels wide.
    pub fn viewport(&self, width: u32, height: u32) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}),
        );
    }

    /// A PNG of the whole page (beyond the viewport), written to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cdp(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        use base64::Engine as _;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v["data"].as_str().expect("screenshot data"))
            .expect("the screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
