//! The dashboard in real headless Chromium (Debian's `chromium` and
//! `chromedriver`, driven over W3C WebDriver) against the real arasuld
//! binary with Postgres and the Docker test runtime. Also the HTTP side of
//! serving it (content types, ETag, caching, compression) and its weight.
//!
//! Screenshots of every screen at 480, 768 and 1280 px land in
//! `build/screenshots/` (or `$ARASUL_SCREENSHOTS`).
//! Without Chromium the browser tests skip loudly; with `CI=true` they fail.

mod backups;
mod formats;
use crate::common;
use crate::common::webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::docker::Project;
use common::{Daemon, PrivatePostgres, TEST_ADMIN_PASSWORD, TestConfig, free_port, wait_until};
use webdriver::Browser;

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/x";
const SCREENS: [&str; 6] = [
    "overview", "services", "healing", "updates", "logs", "settings",
];
const WIDTHS: [u32; 3] = [480, 768, 1280];

fn screenshot_dir() -> PathBuf {
    std::env::var_os("ARASUL_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/build/screenshots")))
}

/// The daemon under test: `common::bin()`, or `$ARASUL_TEST_BIN` (several
/// worktrees sharing one target dir overwrite each other's `debug/arasuld`).
fn start_daemon(cfg: &TestConfig) -> Daemon {
    Daemon::start_bin(&daemon_bin(), &cfg.path(), &[], |_| {})
}

/// Waits for `/api/health`, then checks the daemon serves this build's
/// dashboard (a stale binary would test old pages).
fn wait_healthy(cfg: &TestConfig) {
    wait_until("the daemon to answer", Duration::from_secs(30), || {
        common::get_json(&cfg.url("/api/health")).filter(|(s, _)| *s == 200)
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let html = rt.block_on(async {
        reqwest::get(cfg.url("/"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let want = format!("/assets/{}/", arasuld::web::asset_version());
    assert!(
        html.contains(&want),
        "the daemon binary serves another dashboard than this test was built with \
         (no {want} in its index.html): rebuild it, or point $ARASUL_TEST_BIN at this build"
    );
}

fn initial_password(cfg: &TestConfig) -> String {
    std::fs::read_to_string(cfg.dir.path().join("secrets/initial-admin-password"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Every input, button, select and textarea without an accessible name.
const UNLABELLED_JS: &str = r#"
const bad = [];
for (const el of document.querySelectorAll('input, button, select, textarea')) {
  if (el.type === 'hidden') continue;
  const byFor = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
  const wrapped = el.closest('label');
  const aria = (el.getAttribute('aria-label') || '').trim();
  const by = (el.getAttribute('aria-labelledby') || '').split(/\s+/)
    .some((i) => i && document.getElementById(i) && document.getElementById(i).textContent.trim());
  const text = el.tagName === 'BUTTON' && el.textContent.trim();
  if (!(byFor || wrapped || aria || by || text)) bad.push(el.outerHTML.slice(0, 160));
}
return bad;
"#;

fn assert_labelled(b: &Browser, screen: &str) {
    let bad = b.exec(UNLABELLED_JS, vec![]);
    assert_eq!(bad, json!([]), "unlabelled controls on the {screen} screen");
}

/// What each screen shows once it has its data.
fn ready_js(screen: &str) -> &'static str {
    match screen {
        "overview" => {
            "document.querySelector('#cpu-value') && document.querySelector('#status-level .badge') && document.querySelector('#footer-facts span')"
        }
        "services" => "document.querySelector('#svc-rows tr')",
        "healing" => "document.querySelector('#heal-rows tr')",
        "updates" => {
            "document.querySelector('#update-state') && document.querySelector('#card-update-history p, #update-history')"
        }
        "logs" => "document.querySelector('#log-state').textContent",
        "settings" => {
            "document.querySelector('#sessions-table') && document.querySelector('#pw-rules li')"
        }
        _ => "true",
    }
}

fn visit(b: &Browser, base: &str, screen: &str) {
    b.goto(&format!("{base}/#/{screen}"));
    b.wait_js(
        &format!("the {screen} screen"),
        Duration::from_secs(20),
        ready_js(screen),
    );
}

fn shoot_all(b: &Browser, base: &str, tag: &str) {
    let dir = screenshot_dir();
    for w in WIDTHS {
        b.viewport(w, 900);
        for s in SCREENS {
            visit(b, base, s);
            // Let the polled cards fill in.
            std::thread::sleep(Duration::from_millis(700));
            let overflow = b.exec(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
                vec![],
            );
            assert!(
                overflow.as_i64().unwrap_or(0) <= 1,
                "the {s} screen scrolls sideways at {w} px by {overflow} px"
            );
            assert_labelled(b, s);
            b.screenshot(&dir.join(format!("{s}-{w}{tag}.png")));
        }
    }
    b.viewport(1280, 900);
}

/// The services the browser test supervises: an LLM stand-in and `app`,
/// whose slow health interval keeps it `starting` for a moment after a
/// restart, so the state change is visible.
fn catalog(project: &Project) -> String {
    format!(
        r#"project: {p}
network: {n}
services:
- name: llm
  image: {img}
  role: llm
  critical: true
  env: {{TESTRT_PULL_DELAY_MS: "300", TESTRT_TOKEN_DELAY_MS: "1"}}
  health: {{http: {{port: 11434, path: /api/version}}, interval: 500ms, timeout: 1s, retries: 2, start_period: 5s}}
- name: app
  image: {img}
  role: other
  health: {{http: {{port: 11434, path: /api/version}}, interval: 2s, timeout: 1s, retries: 2, start_period: 5s}}
"#,
        p = project.name,
        n = project.network(),
        img = common::docker::IMAGE,
    )
}

const FAST: &str = "metrics:\n  interval: 1s\n  stream_interval: 1s\n\
healing:\n  tick: 1s\n  services:\n    health_failures: 2\n    recheck_after: 500ms\n    backoff_initial: 1s\n    backoff_max: 4s\n";

#[test]
fn dashboard_end_to_end_in_chromium() {
    let Some(b) = Browser::start() else { return };
    let project = Project::new("web");
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), FAST);
    // The daemon's JSON log, so the logs screen has lines to show.
    let json_log = cfg.dir.path().join("log/system.log");
    append_config(
        &cfg,
        &format!("logging:\n  json_file: {}\n", json_log.display()),
    );
    // The runtime's model store on a 100 GiB tmpfs: the 70b model's 42 GB
    // download fits whatever this machine's disk holds, so the refusals
    // below are for memory.
    let store_root = tempfile::tempdir().unwrap();
    let _store_fs = common::Mount::tmpfs(&store_root.path().join("ollama"), "100g");
    let with_store = catalog(&project).replacen(
        "  role: llm\n",
        &format!(
            "  role: llm\n  volumes: [\"{}/ollama:/root/.ollama\"]\n",
            store_root.path().display()
        ),
        1,
    );
    std::fs::write(cfg.dir.path().join("services.yaml"), with_store).unwrap();
    let mut daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let base = cfg.url("");

    // ---- a first visit: the public overview (status, live values, the
    // runtimes' states), no navigation, a "Log in" button.
    b.goto(&format!("{base}/"));
    // The first load parses every module: once, beside the other Chromium
    // test on two busy cores, it took over 20 s.
    let guest = b.wait_js(
        "the public overview",
        Duration::from_secs(60),
        "document.querySelector('#login-link') && document.querySelector('#status-level .badge') && document.querySelector('#cpu-value') && document.querySelector('#card-ai dd .badge') && [!!document.querySelector('[data-nav]'), document.querySelector('#healing-badge').textContent]",
    );
    assert_eq!(guest, json!([false, "Log in to see more"]));
    assert_labelled(&b, "public overview");
    b.click("#login-link");

    // ---- login page: clear error for a wrong password, labelled controls.
    b.wait_js(
        "the login form",
        Duration::from_secs(30),
        "location.hash.startsWith('#/login') && document.querySelector('#login-pass')",
    );
    assert_labelled(&b, "login");
    b.type_into("#login-pass", "wrong-password");
    b.click("#login-submit");
    let msg = b.wait_js(
        "the login error",
        Duration::from_secs(20),
        "document.querySelector('#login-msg').textContent",
    );
    assert_eq!(msg, "User name or password is wrong.");

    // ---- first login: the forced password change, policy checked live.
    b.type_into("#login-pass", &initial_password(&cfg));
    b.click("#login-submit");
    b.wait_js(
        "the forced password change",
        Duration::from_secs(30),
        "document.querySelector('#pw-new')",
    );
    assert_labelled(&b, "password change");
    b.type_into("#pw-new", "short");
    let states = b.wait_js(
        "the policy to be evaluated",
        Duration::from_secs(10),
        "document.querySelector('[data-rule=too_short]') && Object.fromEntries([...document.querySelectorAll('#pw-rules li')].map((l) => [l.dataset.rule, l.dataset.state]))",
    );
    assert_eq!(states["too_short"], "crit", "{states}");
    assert_eq!(states["missing_uppercase"], "crit", "{states}");
    assert_eq!(states["missing_lowercase"], "ok", "{states}");
    assert_eq!(states["recently_used"], "info", "{states}");
    b.type_into("#pw-new", TEST_ADMIN_PASSWORD);
    b.type_into("#pw-again", TEST_ADMIN_PASSWORD);
    let all_ok = b.exec(
        "return [...document.querySelectorAll('#pw-rules li')].filter((l) => l.dataset.state === 'crit').map((l) => l.dataset.rule)",
        vec![],
    );
    assert_eq!(all_ok, json!([]), "rules still unmet for a valid password");
    b.click("#pw-submit");

    // ---- the setup wizard comes next: name, models, reboots.
    b.wait_js(
        "the setup wizard after the change",
        Duration::from_secs(30),
        "location.hash === '#/setup' && document.querySelector('#setup-name').value === 'arasul' && document.querySelector('#suggest-table')",
    );
    assert_labelled(&b, "setup");
    b.exec("document.getElementById('setup-name').value = ''", vec![]);
    b.type_into("#setup-name", "werkstatt");
    b.click("#setup-name-form button[type=submit]");
    b.wait_js(
        "the new name confirmed",
        Duration::from_secs(20),
        "document.querySelector('#setup-name-msg').textContent === 'The box now answers as werkstatt.local.'",
    );
    let dropin =
        std::fs::read_to_string(cfg.dir.path().join("arasuld.yaml.d/70-dashboard.yaml")).unwrap();
    assert!(dropin.contains("hostname: werkstatt"), "{dropin}");
    let (_, setup) = common::get_json_auth(
        &cfg.url("/api/setup"),
        &common::login_token(&cfg, TEST_ADMIN_PASSWORD),
    )
    .unwrap();
    assert_eq!(setup["box_name"], "werkstatt", "{setup}");
    assert_eq!(setup["finished"], false, "{setup}");
    // A model that does not fit cannot be chosen; it says why, with numbers.
    let why = b.text("#suggest-table tr[data-suggest=\"llama3.3:70b\"] .refusal");
    assert!(
        why.starts_with("llama3.3:70b needs about 49.4 GB of memory to run, but about "),
        "{why}"
    );
    assert_eq!(
        b.exec("return document.querySelector('#suggest-table tr[data-suggest=\"llama3.3:70b\"] button').disabled", vec![]),
        json!(true)
    );
    // Two models, downloaded one after the other with moving progress.
    b.exec(
        "window.__dl = [];
         new MutationObserver(() => document.querySelectorAll('#pull-table tr[data-pull]').forEach((r) =>
           window.__dl.push([r.querySelector('th').textContent, r.dataset.state, Number(r.querySelector('progress').value)])))
           .observe(document.getElementById('pull-queue'), {childList: true, subtree: true, attributes: true});",
        vec![],
    );
    b.click("#suggest-table tr[data-suggest=\"llama3.2:1b\"] button");
    b.click("#suggest-table tr[data-suggest=\"qwen2.5:0.5b\"] button");
    b.wait_js(
        "both downloads done",
        Duration::from_secs(90),
        "[...document.querySelectorAll('#pull-table tr[data-pull]')].filter((r) => r.dataset.state === 'done').length === 2",
    );
    let seen = b.exec("return window.__dl", vec![]);
    for model in ["llama3.2:1b", "qwen2.5:0.5b"] {
        let moving: Vec<f64> = seen
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[0] == model && r[1] == "running")
            .filter_map(|r| r[2].as_f64())
            .filter(|v| *v > 0.0 && *v < 100.0)
            .collect();
        assert!(
            !moving.is_empty(),
            "{model}: no progress between 0 and 100 seen: {seen}"
        );
    }
    b.click("#setup-reboot");
    b.wait_js(
        "reboots allowed",
        Duration::from_secs(20),
        "document.querySelector('#setup-reboot-msg').textContent === 'The box may restart itself as a last resort.'",
    );
    b.click("#setup-finish");
    b.wait_js(
        "the playground after the setup",
        Duration::from_secs(20),
        "location.hash === '#/services?playground=1' && document.querySelector('#play-prompt')",
    );
    let (_, setup) = common::get_json_auth(
        &cfg.url("/api/setup"),
        &common::login_token(&cfg, TEST_ADMIN_PASSWORD),
    )
    .unwrap();
    assert_eq!(
        (
            setup["finished"].as_bool(),
            setup["reboot_allowed"].as_bool()
        ),
        (Some(true), Some(true)),
        "{setup}"
    );
    b.type_into("#play-prompt", "Hello from the setup");
    b.click("#play-form button[type=submit]");
    let answer = b.wait_js(
        "the chosen model answers in the playground",
        Duration::from_secs(30),
        "document.querySelector('#play-answer p')?.textContent.includes('testrt') && document.querySelector('#play-answer').textContent",
    );
    eprintln!("playground after setup: {answer}");

    b.exec("location.hash = '#/overview'", vec![]);
    b.wait_js(
        "the overview",
        Duration::from_secs(30),
        "location.hash === '#/overview' && document.querySelector('#cpu-value')",
    );

    // ---- live CPU values arrive over the WebSocket and change.
    b.wait_js(
        "the live stream",
        Duration::from_secs(20),
        "document.querySelector('#live-state').dataset.state === 'live'",
    );
    // Each new sample re-renders the value with its own timestamp. (The
    // number itself may not move: a busy build box sits at 100 %.)
    let mut seen = std::collections::BTreeMap::new();
    let t0 = Instant::now();
    while seen.len() < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no new live samples: {seen:?}"
        );
        let v = b.exec(
            "const e = document.querySelector('#cpu-value'); return e && [e.dataset.ts, e.textContent]",
            vec![],
        );
        if let (Some(ts), Some(text)) = (v[0].as_str(), v[1].as_str()) {
            seen.insert(ts.to_owned(), text.to_owned());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(seen.values().all(|s| s.ends_with(" %")), "{seen:?}");
    eprintln!("live CPU values: {seen:?}");
    let status = b.wait_js(
        "the status header",
        Duration::from_secs(20),
        "document.querySelector('#status-level').dataset.level",
    );
    assert!(
        ["OK", "WARNING", "CRITICAL"].contains(&status.as_str().unwrap()),
        "{status}"
    );
    let chart_points = b.wait_js(
        "live points in the chart",
        Duration::from_secs(20),
        "[...document.querySelectorAll('svg.chart polyline')].reduce((n, p) => n + p.getAttribute('points').split(' ').length, 0)",
    );
    assert!(chart_points.as_u64().unwrap() >= 2, "{chart_points}");
    // The footer names the version.
    let footer = b.text("#footer-facts");
    assert!(footer.contains(env!("CARGO_PKG_VERSION")), "{footer}");

    // ---- restart a service and watch its state change.
    visit(&b, &base, "services");
    b.wait_js(
        "app healthy",
        Duration::from_secs(60),
        "document.querySelector('tr[data-service=app]')?.dataset.state === 'healthy'",
    );
    let restarts_before: u64 = b.text("tr[data-service=app] td.restarts").parse().unwrap();
    b.exec(
        "window.__states = [];
         new MutationObserver(() => {
           const s = document.querySelector('tr[data-service=app]')?.dataset.state;
           if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
         }).observe(document.getElementById('svc-rows'), {childList: true, subtree: true, attributes: true});",
        vec![],
    );
    b.click("button[data-action=restart][data-service=app]");
    b.wait_js(
        "the confirmation dialog",
        Duration::from_secs(5),
        "document.querySelector('dialog[open] [data-action=confirm]')",
    );
    b.click("dialog[open] [data-action=confirm]");
    let states = b.wait_js(
        "app to go through a restart and be healthy again",
        Duration::from_secs(60),
        "window.__states.some((s) => s !== 'healthy') && window.__states[window.__states.length - 1] === 'healthy' && window.__states",
    );
    eprintln!("app states seen in the table: {states}");
    let restarts_after: u64 = b.text("tr[data-service=app] td.restarts").parse().unwrap();
    assert!(
        restarts_after > restarts_before,
        "{restarts_before} → {restarts_after}"
    );

    // ---- LLM models: pull with a moving progress bar, then delete; chat.
    b.exec(
        "window.__progress = [];
         new MutationObserver(() => window.__progress.push(Number(document.getElementById('pull-progress').value)))
           .observe(document.getElementById('pull-progress'), {attributes: true});",
        vec![],
    );
    b.type_into("#pull-name", "qwen2:0.5b");
    b.click("#pull-form button[type=submit]");
    b.wait_js(
        "the pull to finish",
        Duration::from_secs(60),
        "document.querySelector('#pull-msg').textContent === 'qwen2:0.5b is ready.'",
    );
    let progress = b.exec("return window.__progress", vec![]);
    let values: Vec<f64> = progress
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert!(
        values.iter().any(|v| *v > 0.0 && *v < 100.0),
        "no progress between 0 and 100: {values:?}"
    );
    assert_eq!(values.last(), Some(&100.0), "{values:?}");
    b.wait_js(
        "the pulled model listed",
        Duration::from_secs(20),
        "document.querySelector('#model-table tr[data-model=\"qwen2:0.5b\"]')",
    );
    // A model this box cannot hold is refused with the numbers, before
    // anything is downloaded; the suggestions say so too.
    b.wait_js(
        "the suggestions, the 70B one marked as not fitting",
        Duration::from_secs(20),
        "document.querySelector('#suggest-table tr[data-suggest=\"llama3.3:70b\"][data-fits=false] .refusal')?.textContent",
    );
    b.exec("document.getElementById('pull-name').value = ''", vec![]);
    b.type_into("#pull-name", "llama3.3:70b");
    b.click("#pull-form button[type=submit]");
    let refusal = b.wait_js(
        "the refusal with the numbers",
        Duration::from_secs(20),
        "/needs about [0-9.]+ GB of memory/.test(document.querySelector('#pull-msg').textContent) && document.querySelector('#pull-msg').textContent",
    );
    eprintln!("refusal shown: {refusal}");
    assert!(
        refusal
            .as_str()
            .unwrap()
            .starts_with("llama3.3:70b needs about 49.4 GB of memory to run"),
        "{refusal}"
    );
    assert_eq!(
        b.exec("return [...document.querySelectorAll('#pull-table tr[data-pull] th')].filter((c) => c.textContent === 'llama3.3:70b').length", vec![]),
        json!(0),
        "a refused model is not queued"
    );
    b.click("#model-table tr[data-model=\"qwen2:0.5b\"] button.danger");
    b.click("dialog[open] [data-action=confirm]");
    b.wait_js("the model gone", Duration::from_secs(20), "document.querySelector('#model-table') && !document.querySelector('#model-table tr[data-model=\"qwen2:0.5b\"]')");
    b.type_into("#play-prompt", "Say hello");
    b.click("#play-form button[type=submit]");
    let answer = b.wait_js("a chat answer", Duration::from_secs(60), "document.querySelector('#play-answer').textContent.includes('tokens') && document.querySelector('#play-answer').textContent");
    eprintln!("playground: {answer}");

    // ---- docker kill → a self-healing event shows up in the list.
    visit(&b, &base, "healing");
    common::docker::docker(&["kill", &project.container("app")]);
    b.wait_js(
        "a self-healing event for app",
        Duration::from_secs(60),
        "document.querySelector('#heal-rows tr[data-service=app][data-event=service_restart]')",
    );
    // The event's type in words (the page's language), not its code.
    assert_eq!(
        b.text("#heal-rows tr[data-service=app][data-event=service_restart] .ev-type"),
        "Service restarted"
    );
    b.exec("const s = document.querySelector('#sev-filter'); s.value = 'WARNING'; s.dispatchEvent(new Event('change'));", vec![]);
    b.wait_js(
        "the severity filter to apply",
        Duration::from_secs(20),
        "(() => { const rows = [...document.querySelectorAll('#heal-rows tr[data-event]')]; return rows.length > 0 && rows.every((r) => r.querySelector('.badge.warn')); })()",
    );

    // ---- screenshots of every screen at three widths (checks overflow and
    // labels on the way).
    shoot_all(&b, &base, "");

    // ---- German, remembered across a reload.
    visit(&b, &base, "overview");
    b.exec("const s = document.querySelector('#lang'); s.value = 'de'; s.dispatchEvent(new Event('change'));", vec![]);
    b.wait_js(
        "German navigation",
        Duration::from_secs(10),
        "document.querySelector('[data-nav=overview]').textContent === 'Übersicht'",
    );
    b.goto(&format!("{base}/?reload#/services"));
    b.wait_js("German after a reload", Duration::from_secs(20), "document.querySelector('[data-nav=services]')?.textContent === 'Dienste' && document.documentElement.lang === 'de'");
    b.viewport(1280, 900);
    b.screenshot(&screenshot_dir().join("services-1280-de.png"));
    b.exec("const s = document.querySelector('#lang'); s.value = 'en'; s.dispatchEvent(new Event('change'));", vec![]);

    // ---- keyboard: after a fresh load Tab reaches the skip link first, then
    // the navigation, each with a visible focus ring.
    b.goto(&format!("{base}/?keyboard#/overview"));
    b.wait_js(
        "overview",
        Duration::from_secs(20),
        "document.querySelector('#cpu-value')",
    );
    let mut reached = Vec::new();
    for _ in 0..3 {
        b.press("\u{E004}");
        let ring = b.exec(
            "const e = document.activeElement; const s = getComputedStyle(e); return [e.className || e.dataset.nav || e.outerHTML.slice(0, 80), s.outlineStyle, s.outlineWidth]",
            vec![],
        );
        assert_eq!(
            (&ring[1], &ring[2]),
            (&json!("solid"), &json!("3px")),
            "no visible focus on {ring}"
        );
        reached.push(ring[0].as_str().unwrap().to_owned());
    }
    assert_eq!(reached, ["skip", "brand", "overview"], "tab order");

    // ---- logout; any later 401 leads to login and back to where we were.
    b.click("#logout");
    b.wait_js(
        "the login page",
        Duration::from_secs(20),
        "location.hash.startsWith('#/login') && document.querySelector('#login-pass')",
    );
    let me = b.exec_async(
        "const done = arguments[arguments.length - 1]; fetch('/api/auth/me').then((r) => done(r.status))",
        vec![],
    );
    assert_eq!(me, json!(401), "the session survived logout");
    b.goto(&format!("{base}/#/settings"));
    b.wait_js(
        "login with next",
        Duration::from_secs(20),
        "location.hash.startsWith('#/login?next=') && document.querySelector('#login-pass')",
    );
    b.type_into("#login-pass", TEST_ADMIN_PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "back to settings",
        Duration::from_secs(30),
        "location.hash === '#/settings' && document.querySelector('#sessions-table')",
    );

    // ---- the live stream shows "reconnecting" while the daemon is away and
    // recovers by itself.
    visit(&b, &base, "overview");
    b.wait_js(
        "the live stream",
        Duration::from_secs(20),
        "document.querySelector('#live-state').dataset.state === 'live'",
    );
    daemon.signal(libc::SIGTERM);
    daemon.wait_exit(Duration::from_secs(30));
    let text = b.wait_js("the reconnecting state", Duration::from_secs(20), "document.querySelector('#live-state').dataset.state === 'reconnecting' && document.querySelector('#live-state').textContent");
    assert!(text.as_str().unwrap().contains("Reconnecting"), "{text}");
    let daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    b.wait_js(
        "the stream back",
        Duration::from_secs(60),
        "document.querySelector('#live-state').dataset.state === 'live'",
    );

    drop(daemon);
    drop(pg);
}

#[test]
fn overview_first_load_is_light_and_stays_on_the_box() {
    let Some(b) = Browser::start() else { return };
    let cfg = TestConfig::new(CLOSED_DB, "metrics:\n  stream_interval: 1s\n");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let token = common::admin_token(&cfg);
    let base = cfg.url("");

    // With http.require_auth_for_status the overview is not public: the
    // first visit is the login.
    let yaml = std::fs::read_to_string(cfg.path()).unwrap();
    std::fs::write(
        cfg.path(),
        yaml.replacen("http:\n", "http:\n  require_auth_for_status: true\n", 1),
    )
    .unwrap();
    let (code, v) =
        common::post_json_auth(&cfg.url("/api/system/reload-config"), &token, json!({}));
    assert_eq!(code, 200, "{v}");
    b.goto(&format!("{base}/"));
    // As in the end-to-end test: on two cores busy with other tests, a
    // page load has taken over 20 s.
    b.wait_js(
        "the login form",
        Duration::from_secs(60),
        "document.querySelector('#login-pass') && !document.querySelector('#login-link')",
    );
    b.type_into("#login-pass", TEST_ADMIN_PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "the overview",
        Duration::from_secs(30),
        "location.hash === '#/overview' && document.querySelector('#cpu-value')",
    );

    // A first load: no cache, then every request the page made.
    b.cdp("Network.enable", json!({}));
    b.cdp("Network.setCacheDisabled", json!({"cacheDisabled": true}));
    b.goto(&format!("{base}/?first-load#/overview"));
    b.wait_js("the overview again", Duration::from_secs(30), "document.querySelector('#footer-facts span') && document.querySelector('#live-state').dataset.state === 'live'");
    std::thread::sleep(Duration::from_secs(2));
    let entries = b.exec(
        "return [performance.getEntriesByType('navigation')[0], ...performance.getEntriesByType('resource')]
           .map((e) => ({name: e.name, transfer: e.transferSize, encoded: e.encodedBodySize, decoded: e.decodedBodySize, type: e.initiatorType}))",
        vec![],
    );
    let entries = entries.as_array().unwrap();
    let origin = base.clone();
    let mut total = 0u64;
    let mut assets = 0;
    for e in entries {
        let name = e["name"].as_str().unwrap();
        assert!(name.starts_with(&origin), "a request left the box: {name}");
        let transfer = e["transfer"].as_u64().unwrap();
        assert!(transfer > 0, "{name} came from a cache: not a first load");
        total += transfer;
        if name.contains("/assets/") && (name.ends_with(".js") || name.ends_with(".css")) {
            assets += 1;
            let (enc, dec) = (
                e["encoded"].as_u64().unwrap(),
                e["decoded"].as_u64().unwrap(),
            );
            assert!(
                enc < dec,
                "{name} was not compressed ({enc} of {dec} bytes)"
            );
        }
    }
    assert!(
        assets >= 8,
        "expected every module under /assets/: {entries:?}"
    );
    eprintln!(
        "overview first load: {} requests, {total} bytes transferred (compressed)",
        entries.len()
    );
    assert!(total < 150_000, "overview first load is {total} bytes");

    // Also by hand: every embedded file fetched with Accept-Encoding: br.
    let files = arasuld::web::files();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (compressed, raw) = rt.block_on(async {
        let c = reqwest::Client::new();
        let (mut compressed, mut raw) = (0usize, 0usize);
        for f in &files {
            let url = if f == "index.html" {
                cfg.url("/")
            } else {
                cfg.url(&format!("/assets/{}/{f}", arasuld::web::asset_version()))
            };
            let r = c
                .get(&url)
                .header("accept-encoding", "br, gzip")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{url}");
            compressed += r.bytes().await.unwrap().len();
            raw += c
                .get(&url)
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len();
        }
        (compressed, raw)
    });
    eprintln!(
        "all {} dashboard files: {raw} bytes, {compressed} bytes with br",
        files.len()
    );
    assert!(
        compressed < 150_000 && compressed < raw,
        "{compressed} of {raw}"
    );
}

#[test]
fn the_dashboard_is_served_with_types_etags_caching_and_compression() {
    let cfg = TestConfig::new(CLOSED_DB, "");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let v = arasuld::web::asset_version();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let get = |path: &str, headers: &[(&str, &str)]| {
            let mut r = c.get(cfg.url(path));
            for (k, val) in headers {
                r = r.header(*k, *val);
            }
            r.send()
        };
        let h = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };

        let index = get("/", &[]).await.unwrap();
        assert_eq!(index.status(), 200);
        assert_eq!(h(&index, "content-type"), "text/html; charset=utf-8");
        assert_eq!(h(&index, "cache-control"), "no-cache");
        assert!(h(&index, "content-security-policy").contains("script-src 'self'"));
        let etag = h(&index, "etag");
        let html = index.text().await.unwrap();
        assert!(html.contains(&format!("/assets/{v}/app.js")), "{html}");
        let again = get("/", &[("if-none-match", &etag)]).await.unwrap();
        assert_eq!(again.status(), 304);
        assert!(again.bytes().await.unwrap().is_empty());

        let js = get(&format!("/assets/{v}/app.js"), &[]).await.unwrap();
        assert_eq!(js.status(), 200);
        assert!(
            h(&js, "content-type").starts_with("text/javascript")
                || h(&js, "content-type").starts_with("application/javascript")
        );
        assert_eq!(
            h(&js, "cache-control"),
            "public, max-age=31536000, immutable"
        );
        let js_etag = h(&js, "etag");
        let plain_len = js.bytes().await.unwrap().len();
        let js304 = get(
            &format!("/assets/{v}/app.js"),
            &[("if-none-match", &js_etag)],
        )
        .await
        .unwrap();
        assert_eq!(js304.status(), 304);

        // gzip only (brotli is not linked: its tables cost more bytes in the
        // binary than it saves on a few small files): a browser's
        // "br, gzip" gets gzip, a client that takes only br the plain file.
        let br_only = get(
            &format!("/assets/{v}/style.css"),
            &[("accept-encoding", "br")],
        )
        .await
        .unwrap();
        assert_eq!(h(&br_only, "content-encoding"), "");
        for (enc, want) in [("br, gzip", "gzip"), ("gzip", "gzip")] {
            let r = get(
                &format!("/assets/{v}/style.css"),
                &[("accept-encoding", enc)],
            )
            .await
            .unwrap();
            assert_eq!(h(&r, "content-encoding"), want);
            assert_eq!(h(&r, "content-type"), "text/css; charset=utf-8");
            let css_plain = get(&format!("/assets/{v}/style.css"), &[])
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
                .len();
            let n = r.bytes().await.unwrap().len();
            assert!(n < css_plain, "{enc}: {n} of {css_plain}");
        }
        let svg = get(&format!("/assets/{v}/favicon.svg"), &[]).await.unwrap();
        assert_eq!(h(&svg, "content-type"), "image/svg+xml");
        assert!(plain_len > 0);

        // SPA routes get index.html; unknown files and API paths do not.
        let spa = get("/services", &[]).await.unwrap();
        assert_eq!(spa.status(), 200);
        assert_eq!(h(&spa, "content-type"), "text/html; charset=utf-8");
        assert_eq!(get("/nope.js", &[]).await.unwrap().status(), 404);
        let api = get("/api/nope", &[]).await.unwrap();
        assert_eq!(api.status(), 404);
        let body: Value = api.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
        // Server-sent events are never compressed (they would stall in the buffer).
        let health = get("/api/health", &[("accept-encoding", "br")])
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
    });
}

#[test]
fn reconnect_backoff_grows_with_jitter_from_1s_to_30s() {
    let Some(b) = Browser::start() else { return };
    let cfg = TestConfig::new(CLOSED_DB, "");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    b.goto(&cfg.url("/"));
    b.wait_js(
        "the app",
        Duration::from_secs(20),
        "document.querySelector('#login-pass, #login-link')",
    );
    // The module the page runs, imported by its versioned URL.
    let delays = b.exec_async(
        &format!(
            "const done = arguments[arguments.length - 1];
             import('/assets/{}/api.js').then((m) => {{
               const out = [];
               for (let a = 0; a < 12; a++) {{ const xs = []; for (let i = 0; i < 200; i++) xs.push(m.backoff(a)); out.push([Math.min(...xs), Math.max(...xs)]); }}
               done(out);
             }}).catch((e) => done(String(e)));",
            arasuld::web::asset_version()
        ),
        vec![],
    );
    let rows = delays.as_array().unwrap_or_else(|| panic!("{delays}"));
    for (attempt, r) in rows.iter().enumerate() {
        let (lo, hi) = (r[0].as_f64().unwrap(), r[1].as_f64().unwrap());
        let ceiling = (1000.0 * 2f64.powi(attempt as i32)).min(30_000.0);
        assert!(
            lo >= 1000.0 && hi <= ceiling,
            "attempt {attempt}: {lo}..{hi} outside 1 s..{ceiling}"
        );
        if attempt >= 2 {
            assert!(hi > lo, "attempt {attempt}: no jitter");
        }
    }
    assert!(
        rows[11][0].as_f64().unwrap() >= 15_000.0,
        "capped at 30 s with jitter ≥ half"
    );
}

#[test]
fn settings_log_out_everywhere_and_the_lockout_is_explained() {
    let Some(b) = Browser::start() else { return };
    let cfg = TestConfig::new(CLOSED_DB, "");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let api_token = common::admin_token(&cfg);
    let base = cfg.url("");

    b.goto(&format!("{base}/#/settings"));
    b.wait_js(
        "login with next",
        Duration::from_secs(20),
        "location.hash.startsWith('#/login?next=') && document.querySelector('#login-pass')",
    );
    b.type_into("#login-pass", TEST_ADMIN_PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        "the sessions list",
        Duration::from_secs(30),
        "location.hash === '#/settings' && document.querySelectorAll('#sessions-table tbody tr').length >= 2",
    );
    // Ours is marked; the API client's session is listed too.
    let current = b.exec(
        "return [...document.querySelectorAll('#sessions-table tbody tr')].map((r) => r.dataset.current)",
        vec![],
    );
    assert_eq!(
        current
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| *v == "yes")
            .count(),
        1,
        "{current}"
    );
    b.click("#logout-all");
    b.click("dialog[open] [data-action=confirm]");
    b.wait_js(
        "the login page",
        Duration::from_secs(20),
        "location.hash.startsWith('#/login') && document.querySelector('#login-pass')",
    );
    // Every session is gone, the API client's too.
    let (status, _) = common::get_json_auth(&cfg.url("/api/auth/me"), &api_token).unwrap();
    assert_eq!(status, 401);

    // Wrong passwords until the box refuses: the page says why and for how long.
    let mut text = String::new();
    for _ in 0..8 {
        b.type_into("#login-pass", "not-the-password");
        b.click("#login-submit");
        let msg = b.wait_js(
            "a login error",
            Duration::from_secs(20),
            "!document.querySelector('#login-submit').textContent.includes('Checking') && document.querySelector('#login-msg').textContent",
        );
        text = msg.as_str().unwrap().to_owned();
        if text.starts_with("Too many failed attempts") {
            break;
        }
        assert_eq!(text, "User name or password is wrong.");
    }
    assert!(text.contains("Locked for"), "{text}");
    let disabled = b.exec(
        "return document.querySelector('#login-submit').disabled",
        vec![],
    );
    assert_eq!(
        disabled,
        json!(true),
        "the button stays disabled while locked"
    );
}

/// The arasuld binary the tests run (`$ARASUL_TEST_BIN` or this build's).
fn daemon_bin() -> String {
    std::env::var("ARASUL_TEST_BIN").unwrap_or_else(|_| common::bin().to_owned())
}

fn append_config(cfg: &TestConfig, text: &str) {
    let mut yaml = std::fs::read_to_string(cfg.path()).unwrap();
    yaml.push_str(text);
    std::fs::write(cfg.path(), yaml).unwrap();
}

/// Logs in through the login page (with `next` to `screen`).
fn browser_login(b: &Browser, base: &str, screen: &str) {
    b.goto(&format!("{base}/#/{screen}"));
    // A first load parses every module: on two busy cores that has taken
    // over 20 s (see the end-to-end test).
    b.wait_js(
        "login with next",
        Duration::from_secs(60),
        "location.hash.startsWith('#/login?next=') && document.querySelector('#login-pass')",
    );
    b.type_into("#login-pass", TEST_ADMIN_PASSWORD);
    b.click("#login-submit");
    b.wait_js(
        &format!("the {screen} screen after login"),
        Duration::from_secs(30),
        &format!("location.hash === '#/{screen}' && ({})", ready_js(screen)),
    );
}

/// Appends one line the way the daemon writes its JSON log (tracing's
/// `json()` layer): a single `write` on an O_APPEND file.
fn append_log_line(path: &std::path::Path, level: &str, message: &str) {
    use std::io::Write;
    let line = json!({
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "level": level,
        "fields": {"message": message},
        "target": "arasuld::browser_test",
    });
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// The log lines the logs screen shows: [level, message] each.
const SHOWN_LINES_JS: &str = "return [...document.querySelectorAll('#log-lines li')].map((l) => [l.dataset.level, l.querySelector('.msg').textContent])";

#[test]
fn logs_screen_and_workflow_activity_against_the_real_apis() {
    let Some(b) = Browser::start() else { return };
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "");
    let system_log = cfg.dir.path().join("log/system.log");
    append_config(
        &cfg,
        &format!("logging:\n  json_file: {}\n", system_log.display()),
    );
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    let token = common::admin_token(&cfg);
    let base = cfg.url("");
    // The daemon's own line, as it wrote it.
    let listening = format!("listening on http://127.0.0.1:{}", cfg.port);
    wait_until("the daemon's JSON log", Duration::from_secs(20), || {
        std::fs::read_to_string(&system_log)
            .ok()
            .filter(|s| s.contains(&listening))
    });
    append_log_line(&system_log, "WARN", "disk /data at 85 % (browser test)");

    // ---- the tail shows the daemon's own lines, newest last.
    browser_login(&b, &base, "logs");
    let lines = b.wait_js(
        "the daemon's lines in the tail",
        Duration::from_secs(20),
        &format!(
            "(() => {{ const t = [...document.querySelectorAll('#log-lines li .msg')].map((e) => e.textContent); return t.some((m) => m.startsWith({l:?})) && t.some((m) => m.startsWith('disk /data')) && t; }})()",
            l = listening
        ),
    );
    let all = lines.as_array().unwrap().len();
    let listening_level = b.exec(
        &format!(
            "return [...document.querySelectorAll('#log-lines li')].find((l) => l.querySelector('.msg').textContent.startsWith({listening:?})).dataset.level"
        ),
        vec![],
    );
    assert_eq!(listening_level, "info");
    assert_labelled(&b, "logs");

    // ---- the level filter narrows the tail to warn and worse.
    b.exec(
        "const s = document.querySelector('#log-level'); s.value = 'warn'; s.dispatchEvent(new Event('change'));",
        vec![],
    );
    let shown = b.wait_js(
        "only warnings and errors",
        Duration::from_secs(20),
        "(() => { const ls = [...document.querySelectorAll('#log-lines li')]; return ls.length > 0 && ls.every((l) => ['warn', 'error'].includes(l.dataset.level)) && ls.map((l) => l.querySelector('.msg').textContent); })()",
    );
    let shown = shown.as_array().unwrap();
    assert!(
        shown.len() < all,
        "the filter did not narrow: {} of {all}",
        shown.len()
    );
    assert!(
        shown
            .iter()
            .any(|m| m.as_str().unwrap().starts_with("disk /data")),
        "{shown:?}"
    );
    // The stream follows the filter: an info line stays out, an error comes in.
    b.wait_js(
        "the filtered stream open",
        Duration::from_secs(20),
        "document.querySelector('#log-state').dataset.state === 'open'",
    );
    append_log_line(&system_log, "INFO", "filtered out (browser test)");
    append_log_line(&system_log, "ERROR", "pump 2 failed (browser test)");
    b.wait_js(
        "the live error line",
        Duration::from_secs(20),
        "[...document.querySelectorAll('#log-lines li[data-level=error] .msg')].some((e) => e.textContent.startsWith('pump 2 failed'))",
    );
    let shown = b.exec(SHOWN_LINES_JS, vec![]);
    assert!(
        !shown.to_string().contains("filtered out"),
        "an info line passed the warn filter: {shown}"
    );

    // ---- all levels again: a line appended to the file shows up live (SSE).
    b.exec(
        "const s = document.querySelector('#log-level'); s.value = ''; s.dispatchEvent(new Event('change'));",
        vec![],
    );
    b.wait_js(
        "the unfiltered stream open",
        Duration::from_secs(20),
        "document.querySelector('#log-state').dataset.state === 'open' && document.querySelector('#log-lines li[data-level=info]')",
    );
    append_log_line(
        &system_log,
        "INFO",
        "backup finished in 42 s (browser test)",
    );
    let live = b.wait_js(
        "the live line",
        Duration::from_secs(20),
        "(() => { const ls = [...document.querySelectorAll('#log-lines li')]; const last = ls[ls.length - 1]; return last && last.querySelector('.msg').textContent.startsWith('backup finished') && [last.dataset.level, last.querySelector('.msg').textContent]; })()",
    );
    assert_eq!(live[0], "info", "{live}");

    // ---- search narrows to matching lines, across the file.
    b.type_into("#log-q", "BROWSER TEST");
    b.click("#log-search button[type=submit]");
    let found = b.wait_js(
        "search results",
        Duration::from_secs(20),
        "document.querySelector('#log-search-msg').dataset.n && [...document.querySelectorAll('#log-results li .msg')].map((e) => e.textContent)",
    );
    let found: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(
        found.iter().all(|m| m.contains("(browser test)")),
        "{found:?}"
    );
    assert!(
        found[0].starts_with("backup finished"),
        "newest first: {found:?}"
    );
    b.type_into("#log-q", "no such words anywhere");
    b.click("#log-search button[type=submit]");
    b.wait_js(
        "no matches",
        Duration::from_secs(20),
        "document.querySelector('#log-search-msg').dataset.n === '0' && document.querySelectorAll('#log-results li').length === 0",
    );

    // ---- a log without lines yet (no update has run) says so.
    b.exec(
        "const s = document.querySelector('#log-source'); s.value = 'update'; s.dispatchEvent(new Event('change'));",
        vec![],
    );
    b.wait_js(
        "the empty update log",
        Duration::from_secs(20),
        "!document.querySelector('#log-empty').hidden && document.querySelectorAll('#log-lines li').length === 0",
    );

    // ---- a workflow run reported by n8n appears in the overview's card.
    visit(&b, &base, "overview");
    b.wait_js(
        "the workflow card",
        Duration::from_secs(20),
        "document.querySelector('#wf-total')?.textContent === '0'",
    );
    let (code, v) = common::post_json_auth(
        &cfg.url("/api/workflows/execution"),
        &token,
        json!({
            "workflow_id": "wf-invoices",
            "workflow_name": "Invoice import",
            "status": "error",
            "started_at": chrono::Utc::now().to_rfc3339(),
            "finished_at": chrono::Utc::now().to_rfc3339(),
            "error": "SMTP timeout",
        }),
    );
    assert_eq!(code, 201, "{v}");
    let row = b.wait_js(
        "the run in the activity card",
        Duration::from_secs(40),
        "(() => { const li = document.querySelector('#card-workflows li[data-workflow=wf-invoices]'); return li && [li.dataset.status, li.textContent, document.querySelector('#wf-total').textContent, document.querySelector('#wf-error').textContent]; })()",
    );
    assert_eq!(row[0], "error", "{row}");
    assert!(row[1].as_str().unwrap().contains("Invoice import"), "{row}");
    assert!(row[1].as_str().unwrap().contains("SMTP timeout"), "{row}");
    assert_eq!(row[2], "1", "{row}");
    assert!(row[3].as_str().unwrap().contains('1'), "{row}");

    // ---- the status reasons in German: keyed by their code, the values
    // taken from the box's sentence; an unknown code stays as it was said.
    let said = b.with_ui_modules(
        "i18n.setLang('de');
         const out = [
           {code: 'disk_high', message: 'The disk is 87 % full (warning above 80 %).'},
           {code: 'critical_service_down', message: 'The llm service is down (unhealthy).'},
           {code: 'database_down', message: 'The database is not reachable; …'},
           {code: 'something_new', message: 'Something new happened.'},
         ].map(ui.reasonText);
         i18n.setLang('en');
         done(out);",
    );
    assert_eq!(
        said,
        json!([
            "Der Datenträger ist zu 87 % voll (Warnung ab 80 %).",
            "Der Dienst llm ist ausgefallen (unhealthy).",
            "Die Datenbank ist nicht erreichbar; Messwerte werden bis zu ihrer Rückkehr im Speicher gehalten.",
            "Something new happened.",
        ])
    );
    drop(pg);
}

fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Image tags this test made; removed at the end.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in &self.0 {
            common::docker::docker(&["rmi", "-f", i]);
        }
    }
}

#[test]
fn an_update_bundle_is_uploaded_checked_and_applied_in_chromium() {
    use common::docker::{IMAGE, docker};
    let Some(b) = Browser::start() else { return };
    let project = Project::new("webupd");
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "");
    let d = cfg.dir.path().to_path_buf();
    append_config(
        &cfg,
        &format!(
            "update:\n  verify_timeout: 30s\n  stability_window: 2s\n  config_dir: {}/etc\n",
            d.display()
        ),
    );
    // v1 is the test runtime; v2 answers /api/version with 2.0.0.
    let v1 = format!("arasul-testrt:{}-v1", project.name);
    let v2 = format!("arasul-testrt:{}-v2", project.name);
    let _images = Images(vec![v1.clone(), v2.clone()]);
    docker(&["tag", IMAGE, &v1]);
    let cid = docker(&["create", IMAGE]);
    run_ok(std::process::Command::new("docker").args([
        "commit",
        "--change",
        "ENV TESTRT_VERSION=2.0.0",
        &cid,
        &v2,
    ]));
    docker(&["rm", "-f", &cid]);
    std::fs::write(
        d.join("services.yaml"),
        format!(
            "project: {p}\nnetwork: {n}\nservices:\n- name: app\n  image: {v1}\n  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 500ms, retries: 2, start_period: 3s}}\n",
            p = project.name,
            n = project.network()
        ),
    )
    .unwrap();
    // The vendor's key pair; the box trusts its public half.
    run_ok(
        std::process::Command::new(daemon_bin())
            .args(["bundle", "keygen", "--out"])
            .arg(d.join("vendor")),
    );
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::copy(
        d.join("vendor/update-signing.pem"),
        d.join("keys/update-signing.pem"),
    )
    .unwrap();
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    common::admin_token(&cfg);
    let app_image = || {
        let (_, v) = common::get_json(&cfg.url("/api/services"))?;
        let s = v["services"].as_array()?.first()?.clone();
        (s["state"] == "healthy").then(|| s["image"].as_str().unwrap_or_default().to_owned())
    };
    let on = wait_until("app healthy", Duration::from_secs(60), app_image);
    assert_eq!(on, v1);

    // The v2 bundle: image, a migration, a config file and release notes.
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("001_notes.sql"),
        "CREATE TABLE notes (id int PRIMARY KEY, body text);\n",
    )
    .unwrap();
    std::fs::write(src.join("app.conf"), "mode=v2\n").unwrap();
    let bundle = d.join("v0.2.0.araupdate");
    run_ok(
        std::process::Command::new(daemon_bin())
            .args(["bundle", "create", "--key"])
            .arg(d.join("vendor/update-signing.key"))
            .args(["--version", "0.2.0", "--min-version", "0.1.0"])
            .args(["--image", &format!("app={v2}")])
            .arg("--migration")
            .arg(src.join("001_notes.sql"))
            .arg("--config-file")
            .arg(src.join("app.conf"))
            .args(["--notes", "Faster start-up; the pump timeout is fixed."])
            .arg("--out")
            .arg(&bundle),
    );
    // The image has to come from the bundle.
    docker(&["rmi", &v2]);
    // The same bundle with bytes flipped in the middle (inside the image).
    let mut bytes = std::fs::read(&bundle).unwrap();
    let mid = bytes.len() / 2;
    for x in &mut bytes[mid..mid + 16] {
        *x ^= 0xff;
    }
    let damaged = d.join("damaged.araupdate");
    std::fs::write(&damaged, &bytes).unwrap();

    browser_login(&b, &cfg.url(""), "updates");
    b.wait_js(
        "the idle status",
        Duration::from_secs(20),
        "document.querySelector('#update-state').dataset.state === 'idle'",
    );
    assert_labelled(&b, "updates");

    // ---- the damaged bundle is refused with a clear error; nothing staged.
    b.type_into("#bundle-file", damaged.to_str().unwrap());
    b.click("#upload-btn");
    let err = b.wait_js(
        "the refusal",
        Duration::from_secs(60),
        "document.querySelector('#upload-msg').dataset.code && [document.querySelector('#upload-msg').dataset.code, document.querySelector('#upload-msg strong')?.textContent, document.querySelector('#upload-msg .detail')?.textContent]",
    );
    eprintln!("damaged bundle: {err}");
    assert_eq!(err[0], "payload_mismatch", "{err}");
    assert_eq!(
        err[1], "The bundle is damaged: a part of it does not match its signed checksum.",
        "{err}"
    );
    assert!(
        err[2].as_str().unwrap().contains("payload mismatch"),
        "{err}"
    );
    assert_eq!(
        b.exec(
            "return document.querySelector('#apply-btn').disabled",
            vec![]
        ),
        json!(true)
    );
    assert_eq!(
        b.exec(
            "return document.querySelector('#update-check').children.length",
            vec![]
        ),
        json!(0)
    );
    let rows = b.wait_js(
        "the refusal in the history",
        Duration::from_secs(20),
        "document.querySelector('#update-history tbody tr[data-result=rejected]') && (() => { return [...document.querySelectorAll('#update-history tbody tr')].map((r) => [r.dataset.version, r.dataset.result]); })()",
    );
    assert_eq!(rows, json!([["", "rejected"]]));
    b.screenshot(&screenshot_dir().join("updates-rejected-1280.png"));

    // ---- the signed bundle, uploaded over a slow link so the bar moves.
    b.cdp("Network.enable", json!({}));
    b.cdp(
        "Network.emulateNetworkConditions",
        json!({"offline": false, "latency": 5, "downloadThroughput": -1, "uploadThroughput": 400_000}),
    );
    b.exec(
        "window.__up = [];
         new MutationObserver(() => window.__up.push(Number(document.getElementById('upload-progress').value)))
           .observe(document.getElementById('upload-progress'), {attributes: true});
         window.__states = [];
         new MutationObserver(() => {
           const s = document.querySelector('#update-state').dataset.state;
           if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
         }).observe(document.getElementById('update-state'), {attributes: true});",
        vec![],
    );
    b.type_into("#bundle-file", bundle.to_str().unwrap());
    b.click("#upload-btn");
    let check = b.wait_js(
        "the validation result",
        Duration::from_secs(120),
        "document.querySelector('#update-check dl') && document.querySelector('#update-check').innerText",
    );
    b.cdp(
        "Network.emulateNetworkConditions",
        json!({"offline": false, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    );
    let check = check.as_str().unwrap();
    eprintln!("validation result:\n{check}");
    for want in [
        "0.1.0 → 0.2.0",
        "valid (update-signing.pem, ed25519)",
        &format!("app: {v2}"),
        "001_notes.sql",
        "app.conf",
        "Faster start-up; the pump timeout is fixed.",
    ] {
        assert!(check.contains(want), "no {want:?} in {check}");
    }
    let up: Vec<f64> = b
        .exec("return window.__up", vec![])
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    eprintln!("upload progress: {up:?}");
    assert!(
        up.iter().any(|v| *v > 0.0 && *v < 100.0),
        "no upload progress between 0 and 100: {up:?}"
    );
    assert_eq!(up.last(), Some(&100.0), "{up:?}");
    b.wait_js(
        "validated",
        Duration::from_secs(20),
        "document.querySelector('#update-state').dataset.state === 'validated'",
    );

    // ---- install: each step live, up to done; then in the history.
    b.click("#apply-btn");
    b.click("dialog[open] [data-action=confirm]");
    b.wait_js(
        "the update to finish",
        Duration::from_secs(180),
        "['done', 'failed', 'rolled_back'].includes(document.querySelector('#update-state').dataset.state)",
    );
    let states = b.exec("return window.__states", vec![]);
    eprintln!("update states seen on the page: {states}");
    let text = b.text("#update-state");
    assert_eq!(
        b.exec(
            "return document.querySelector('#update-state').dataset.state",
            vec![]
        ),
        "done",
        "{text}"
    );
    let states: Vec<&str> = states
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let order = [
        "validated",
        "backing_up",
        "loading_images",
        "migrating",
        "switching",
        "verifying",
        "done",
    ];
    let applying: Vec<&str> = states
        .iter()
        .copied()
        .skip_while(|s| *s != "validated")
        .collect();
    let idx: Vec<usize> = applying
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap_or(usize::MAX))
        .collect();
    assert!(
        idx.windows(2).all(|w| w[0] < w[1]) && applying.len() >= 4,
        "steps not seen live in order: {states:?}"
    );
    let steps = b.exec(
        "return [...document.querySelectorAll('#update-steps li')].map((l) => l.classList.contains('done'))",
        vec![],
    );
    assert_eq!(steps, json!(vec![true; 7]), "every step ticked");
    let rows = b.wait_js(
        "the update in the history",
        Duration::from_secs(20),
        "document.querySelector('#update-history tbody tr[data-result=done]') && (() => [...document.querySelectorAll('#update-history tbody tr')].map((r) => [r.dataset.version, r.dataset.result]))()",
    );
    assert_eq!(rows, json!([["0.2.0", "done"], ["", "rejected"]]));
    let on = wait_until("app healthy on v2", Duration::from_secs(60), || {
        app_image().filter(|i| *i == v2)
    });
    assert_eq!(on, v2);

    // ---- screenshots of the finished update at three widths.
    for w in WIDTHS {
        b.viewport(w, 900);
        std::thread::sleep(Duration::from_millis(300));
        let overflow = b.exec(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            vec![],
        );
        assert!(
            overflow.as_i64().unwrap_or(0) <= 1,
            "the updates screen scrolls sideways at {w} px by {overflow} px"
        );
        b.screenshot(&screenshot_dir().join(format!("updates-applied-{w}.png")));
    }
    assert_labelled(&b, "updates");
    drop(pg);
}

/// The SHA-256 of a certificate's public key, base64: what Chromium's
/// `--ignore-certificate-errors-spki-list` pins (that key only, nothing else).
fn spki_pin(cert: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn curl_status(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_dashboard_over_https_sends_the_owner_back_to_the_app_and_makes_and_revokes_api_keys() {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let tls_port = free_port();
    let cfg = TestConfig::with_http(
        &pg.url(),
        &format!("  tls: {{self_signed: true, listen: 127.0.0.1:{tls_port}}}\n"),
        "",
    );
    let _daemon = start_daemon(&cfg);
    let cert = cfg.dir.path().join("secrets/tls/cert.pem");
    let cert_arg = cert.to_str().unwrap().to_owned();
    let base = format!("https://127.0.0.1:{tls_port}");
    wait_until("HTTPS to answer", Duration::from_secs(30), || {
        (curl_status(&["--cacert", &cert_arg, &format!("{base}/api/health")]) == "200")
            .then_some(())
    });
    // Chromium trusts exactly this certificate's key.
    let Some(b) = Browser::start_with(&[format!(
        "--ignore-certificate-errors-spki-list={}",
        spki_pin(&cert)
    )]) else {
        return;
    };

    // n8n's link without a session: plain HTTP → HTTPS → the login, and
    // after the (forced) password change back to /n8n/, which answers that
    // no workflow service runs here.
    b.goto(&format!("{}/n8n/", cfg.url("")));
    b.wait_js(
        "the login page over HTTPS",
        Duration::from_secs(60),
        "location.protocol === 'https:' && location.search === '?next=/n8n/' && document.querySelector('#login-pass')",
    );
    b.type_into("#login-pass", &initial_password(&cfg));
    b.click("#login-submit");
    b.wait_js(
        "the forced password change",
        Duration::from_secs(30),
        "document.querySelector('#pw-new')",
    );
    b.type_into("#pw-new", TEST_ADMIN_PASSWORD);
    b.type_into("#pw-again", TEST_ADMIN_PASSWORD);
    b.click("#pw-submit");
    let text = b.wait_js(
        "back at n8n's path",
        Duration::from_secs(30),
        "location.pathname === '/n8n/' && document.body && document.body.textContent.includes('service_unavailable') && document.body.textContent",
    );
    assert!(
        text.as_str().unwrap().contains("no service for it"),
        "{text}"
    );

    // The overview shows the certificate's fingerprint.
    b.goto(&format!("{base}/#/overview"));
    let shown = b.wait_js(
        "the fingerprint",
        Duration::from_secs(30),
        "document.querySelector('#tls-fingerprint') && document.querySelector('#tls-fingerprint').textContent",
    );
    assert_eq!(shown, common::cert_fingerprint(&cert).as_str());

    // Settings: a key is made, shown once with a copy button, works, and is revoked.
    b.goto(&format!("{base}/#/settings"));
    b.wait_js(
        "the keys card",
        Duration::from_secs(30),
        "document.querySelector('#key-form') && document.querySelector('#key-list p, #keys-table')",
    );
    assert_labelled(&b, "settings with keys");
    b.type_into("#key-name", "laptop");
    b.click("#key-scope-metrics");
    b.click("#key-create");
    let key = b.wait_js(
        "the new key",
        Duration::from_secs(20),
        "document.querySelector('#key-new') && document.querySelector('#key-copy') && document.querySelector('#keys-table tbody tr') && document.querySelector('#key-new').value",
    );
    let key = key.as_str().unwrap().to_owned();
    assert!(key.starts_with("ak_") && key.len() == 46, "{key}");
    let row = b.exec(
        "const r = document.querySelector('#keys-table tbody tr'); return [r.querySelector('th').textContent, r.cells[1].textContent, r.cells[2].textContent]",
        vec![],
    );
    assert_eq!(row[0], "laptop");
    assert_eq!(row[1], "Language model, Metrics");
    assert_eq!(row[2], format!("{}…", &key[..9]));
    // Accepted (the LLM is simply not there), then refused once revoked.
    let bearer = format!("authorization: Bearer {key}");
    let tags = format!("{base}/ollama/api/tags");
    assert_eq!(
        curl_status(&["--cacert", &cert_arg, "-H", &bearer, &tags]),
        "503"
    );
    b.click("#keys-table tbody tr button");
    b.click("dialog[open] [data-action=confirm]");
    b.wait_js(
        "the list without it",
        Duration::from_secs(20),
        "!document.querySelector('#keys-table') && document.querySelector('#key-list p')",
    );
    assert_eq!(
        curl_status(&["--cacert", &cert_arg, "-H", &bearer, &tags]),
        "401"
    );
}

#[test]
fn the_owner_turns_on_email_alerts_in_settings_and_a_test_arrives() {
    let Some(b) = Browser::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let smtp = common::smtp::SmtpServer::start(free_port(), &dir.path().join("maildir"));
    let cfg = TestConfig::new(CLOSED_DB, "");
    let _daemon = start_daemon(&cfg);
    wait_healthy(&cfg);
    common::admin_token(&cfg);
    let base = cfg.url("");
    browser_login(&b, &base, "settings");
    b.wait_js(
        "the notifications card",
        Duration::from_secs(20),
        "document.querySelector('#notify-form') && document.querySelector('#notify-channels p')",
    );
    assert_labelled(&b, "settings");
    // The form as an owner fills it: e-mail is the first choice.
    b.exec(
        "const set = (id, v) => { const el = document.querySelector(id); el.value = v; el.dispatchEvent(new Event('change')); };
         set('#notify-kind', 'email'); set('#notify-host', '127.0.0.1'); set('#notify-port', arguments[0]);
         set('#notify-security', 'none'); set('#notify-from', 'box@example.org'); set('#notify-to', 'owner@example.org');
         set('#notify-min', 'CRITICAL');",
        vec![json!(smtp.port.to_string())],
    );
    let shown = b.exec(
        "return [...document.querySelectorAll('#notify-form .stack')].map((g) => getComputedStyle(g).display)",
        vec![],
    );
    assert_eq!(
        shown,
        json!(["grid", "none", "none"]),
        "only the e-mail fields"
    );
    b.click("#notify-add");
    b.wait_js(
        "the channel in the list",
        Duration::from_secs(20),
        "document.querySelector('#notify-table tr[data-channel=mail]')",
    );
    b.click("#notify-test-mail");
    wait_until("the test e-mail", Duration::from_secs(20), || {
        smtp.of_kind("test").pop()
    });
    let mail = smtp.of_kind("test").remove(0);
    assert!(mail.contains("owner@example.org"), "{mail}");
    // It is in the config the daemon runs, not only on the page.
    let token = common::login_token(&cfg, TEST_ADMIN_PASSWORD);
    let (_, v) = common::get_json_auth(&cfg.url("/api/notifications"), &token).unwrap();
    assert_eq!(
        v["channels"][0]["email"]["to"],
        json!(["owner@example.org"])
    );
    assert_eq!(v["channels"][0]["min_severity"], "CRITICAL");
}
