//! The real binary under the conditions systemd and an admin put it in:
//! notify socket and watchdog, SIGTERM, SIGHUP, a database that is not there
//! yet, a broken config.

mod common;

use std::time::Duration;

use common::*;

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";

#[test]
fn serves_health_and_dashboard_then_stops_cleanly_on_sigterm() {
    let log_dir = tempfile::tempdir().unwrap();
    let json_log = log_dir.path().join("system.log");
    let cfg = TestConfig::new(
        CLOSED_DB,
        &format!("logging:\n  json_file: {}\n", json_log.display()),
    );
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    // READY=1 comes only once the listener is bound: no sleep needed.
    let seen = notify.wait_for("READY=1", Duration::from_secs(30));
    assert!(seen.last().unwrap().contains("STATUS=serving"));

    let (status, body) = get_json(&cfg.url("/api/health")).expect("health answers");
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));

    // The dashboard comes from the binary itself.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let resp = rt
        .block_on(reqwest::get(cfg.url("/")))
        .expect("dashboard answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    assert!(resp.headers().contains_key("etag"));

    // Watchdog pings at half of WATCHDOG_USEC while the core workers live.
    let mut pings = 0;
    while pings < 4 {
        let m = notify.recv(Duration::from_secs(2)).expect("watchdog ping");
        if m == "WATCHDOG=1" {
            pings += 1;
        }
    }

    d.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    let (status, took) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(took < Duration::from_secs(10));
    d.wait_for_log(
        "shutdown complete: every worker stopped",
        Duration::from_secs(2),
    );
    let lines = d.lines.lock().unwrap().clone();
    for worker in ["db-connector", "systemd-watchdog"] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains("worker stopped") && l.contains(worker)),
            "no stop line for {worker}"
        );
    }
    // The same events as JSON lines in logging.json_file.
    let text = std::fs::read_to_string(&json_log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    assert!(events.iter().any(|e| {
        e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutdown complete"))
    }));
    assert!(
        events
            .iter()
            .all(|e| e["level"].is_string() && e["timestamp"].is_string())
    );
}

#[test]
fn sigint_also_shuts_down_with_exit_code_zero() {
    let cfg = TestConfig::new(CLOSED_DB, "");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    d.signal(libc::SIGINT);
    let (status, _) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn starts_with_the_database_down_and_migrates_once_it_appears() {
    let mut pg = PrivatePostgres::init(free_port());
    let cfg = TestConfig::new(&pg.url(), "");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    // Login works with the database down (the pool report is admin-only).
    let token = admin_token(&cfg);

    // Serving, and honest that the database is down.
    let pool = wait_until(
        "a failed connection attempt",
        Duration::from_secs(20),
        || {
            let (status, p) = get_json_auth(&cfg.url("/api/database/pool"), &token)?;
            assert_eq!(status, 200);
            p["last_error"].is_string().then_some(p)
        },
    );
    assert_eq!(pool["up"], false);
    assert_eq!(get_json(&cfg.url("/api/health")).unwrap().0, 200);

    pg.start();
    let pool = wait_until("database up and migrated", Duration::from_secs(60), || {
        let (_, p) = get_json_auth(&cfg.url("/api/database/pool"), &token)?;
        (p["up"] == true && p["migrated"] == true).then_some(p)
    });
    assert_eq!(pool["last_error"], serde_json::Value::Null);

    // The migrations really ran, and the start was recorded, without a restart.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (migrations, starts): (i64, i64) = rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        let m = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap();
        let s = sqlx::query_scalar("SELECT count(*) FROM daemon_starts")
            .fetch_one(&pool)
            .await
            .unwrap();
        (m, s)
    });
    assert_eq!(migrations as usize, arasuld::db::MIGRATOR.iter().count());
    assert_eq!(starts, 1);
    assert!(d.log_contains("database is up"));

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn sighup_reloads_the_config_and_refuses_a_broken_one() {
    let cfg = TestConfig::new(CLOSED_DB, "logging:\n  level: info\n");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));

    let text = std::fs::read_to_string(cfg.path()).unwrap();
    std::fs::write(cfg.path(), text.replace("level: info", "level: debug")).unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for_log(
        r#"config changed: logging.level: "info" -> "debug""#,
        Duration::from_secs(10),
    );

    std::fs::write(cfg.path(), "http:\n  listen: [\n").unwrap();
    d.signal(libc::SIGHUP);
    d.wait_for_log("config reload refused", Duration::from_secs(10));
    assert_eq!(get_json(&cfg.url("/api/health")).unwrap().0, 200);

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

#[test]
fn check_config_prints_file_line_and_key_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arasuld.yaml");
    std::fs::write(
        &path,
        "# box\nhttp:\n  listen: 0.0.0.0:0\nlogging:\n  colour: red\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // serde stops at the first structural error: the unknown key.
    assert!(
        stderr.contains(&format!(
            "{}:5: logging.colour: unknown field `colour`, expected `level` or `json_file`",
            path.display()
        )),
        "{stderr}"
    );

    std::fs::write(&path, "# box\nhttp:\n  listen: 0.0.0.0:0\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:3: http.listen: port must be between 1 and 65535",
            path.display()
        )),
        "{stderr}"
    );

    let missing = dir.path().join("nope.yaml");
    let out = std::process::Command::new(bin())
        .args(["--config", missing.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));

    // A valid file, but the service catalog it names is broken.
    let services = dir.path().join("services.yaml");
    std::fs::write(
        &path,
        format!(
            "http:\n  listen: 127.0.0.1:8080\npaths:\n  services_file: {}\n",
            services.display()
        ),
    )
    .unwrap();
    std::fs::write(
        &services,
        "services:\n  - name: llm\n    image: x\n    depends_on: [db]\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:4: services[0].depends_on: service \"llm\": depends on unknown service \"db\"",
            services.display()
        )),
        "{stderr}"
    );

    std::fs::write(&services, "services:\n  - name: llm\n    image: x\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_build() {
    let out = std::process::Command::new(bin())
        .arg("--version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with(&format!("arasuld {} (build ", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
}

#[test]
fn a_hung_core_worker_stops_the_watchdog_pings() {
    use arasuld::app::Daemon as App;
    use arasuld::os::notify::Notifier;
    use arasuld::tasks::WorkerKind;

    let notify = NotifySocket::new();
    let mut config = arasuld::config::Config::default();
    config.database.url = arasuld::config::Secret::new(CLOSED_DB.into());
    config.workers.stale_after = Duration::from_millis(600);
    // Every path in a temp dir: the defaults are the real /etc/arasul,
    // /var/lib/arasul and /var/log/arasul (a root-owned secrets dir left
    // there breaks the installed package, and tests/deb.sh refuses to run).
    let tmp = tempfile::tempdir().unwrap();
    config.paths.state_dir = tmp.path().join("state");
    config.paths.log_dir = tmp.path().join("log");
    config.paths.secrets_dir = tmp.path().join("secrets");
    config.paths.keys_dir = tmp.path().join("keys");
    config.paths.services_file = tmp.path().join("services.yaml");
    config.paths.data_path = tmp.path().to_path_buf();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let app = App {
        config_path: "/nonexistent/arasuld.yaml".into(),
        config_required: false,
        config,
        notifier: Notifier::to(notify.path.to_str().unwrap()),
        watchdog: Some(Duration::from_millis(100)),
        log_reload: None,
    };
    // A core worker that beats once (at start) and then hangs forever.
    let hung: arasuld::app::ExtraWorker = (
        "hung-core",
        WorkerKind::Core,
        Box::new(|_ctx| Box::pin(std::future::pending())),
    );
    let handle = rt.spawn(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ctl = tx.clone();
        let run = tokio::spawn(app.run(listener, tx, rx, vec![hung]));
        (run, ctl)
    });
    let (run, ctl) = rt.block_on(handle).unwrap();
    notify.wait_for("READY=1", Duration::from_secs(10));
    // While the heartbeat is fresh the watchdog is fed…
    notify.wait_for("WATCHDOG=1", Duration::from_secs(2));
    // …and once it is older than stale_after the pings stop for good.
    std::thread::sleep(Duration::from_millis(800));
    while notify.recv(Duration::from_millis(10)).is_some() {}
    assert_eq!(
        notify.recv(Duration::from_millis(1500)),
        None,
        "watchdog still fed with a hung core worker"
    );
    rt.block_on(ctl.send(arasuld::state::Control::Shutdown))
        .unwrap();
    notify.wait_for("STOPPING=1", Duration::from_secs(10));
    rt.block_on(run).unwrap().unwrap();
}

#[test]
fn the_shipped_config_and_catalog_pass_check_config() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/arasuld.yaml");
    let services = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/services.yaml");
    let out = std::process::Command::new(bin())
        .args(["--config", path, "check-config"])
        .env("ARASUL_PATHS__SERVICES_FILE", services)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
