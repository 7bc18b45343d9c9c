//! The real binary under the conditions systemd and an admin put it in:
//! notify socket and watchdog, SIGTERM, SIGHUP, a database that is not there
//! yet, a broken config.

mod backups;
use crate::common;
mod frontdoor;
mod notifications;

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
fn check_config_prints_file_line_and_key_and_exits_78() {
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
    assert_eq!(out.status.code(), Some(78));
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
    assert_eq!(out.status.code(), Some(78));
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
    assert_eq!(out.status.code(), Some(78));
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
    assert_eq!(out.status.code(), Some(78));
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
    use arasuld::tasks::{WorkerKind, WorkerName};

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
        WorkerName::Other("hung-core"),
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

/// systemd's default for a service: 1024 open files, soft and hard.
fn limit_open_files(cmd: &mut std::process::Command, limit: libc::rlim_t) {
    use std::os::unix::process::CommandExt;
    let rl = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
}

/// The test holds more sockets than a default soft limit allows.
fn raise_own_open_file_limit() -> libc::rlim_t {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl), 0);
        rl.rlim_cur = rl.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &rl), 0);
    }
    rl.rlim_cur
}

/// Under axum::serve this flood took every file the daemon had: after ~1000
/// accepts each accept failed with EMFILE (logged once a second, forever),
/// the listen backlog filled, connection ~1140 was never accepted and no
/// other client was served.
#[test]
fn idle_connections_cannot_starve_the_daemon_of_file_descriptors() {
    const IDLE: usize = 1500;
    let own = raise_own_open_file_limit();
    assert!(
        own > IDLE as libc::rlim_t + 200,
        "the test needs {IDLE}+ files, has {own}"
    );
    // Long enough that no connection times out during the test: only the
    // caps are at work here.
    let cfg = TestConfig::with_http(CLOSED_DB, "  header_timeout: 60s\n", "");
    let notify = NotifySocket::new();
    let d = Daemon::start_with(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
        |cmd| limit_open_files(cmd, 1024),
    );
    notify.wait_for("READY=1", Duration::from_secs(30));

    // One client opens more idle connections than the daemon has files,
    // sends nothing and keeps every one open.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let daemon_addr = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.port));
    let t0 = std::time::Instant::now();
    let idle = rt.block_on(open_idle(daemon_addr, [127, 0, 0, 2], IDLE));
    eprintln!("{IDLE} idle connections opened in {:?}", t0.elapsed());

    // Another client is still served, at once.
    let t0 = std::time::Instant::now();
    let health = rt.block_on(async {
        reqwest::Client::new()
            .get(cfg.url("/api/health"))
            .timeout(Duration::from_secs(15))
            .send()
            .await
    });
    let took = t0.elapsed();
    eprintln!("GET /api/health under {IDLE} idle connections: {health:?} in {took:?}");
    assert_eq!(health.expect("health answers within 15 s").status(), 200);

    // The daemon holds at most http.max_connections_per_client (128) of
    // them; it closed the others (the client reads EOF on those).
    assert_eq!(
        still_open(&idle),
        128,
        "connections the daemon keeps from one address"
    );
    assert!(d.log_contains("connection refused: this client address has"));

    // Login (which writes the secrets dir) and an admin call still work.
    let token = admin_token(&cfg);
    let (status, workers) =
        get_json_auth(&cfg.url("/api/system/workers"), &token).expect("workers answer");
    assert_eq!(status, 200, "{workers}");

    // Many addresses together stop at the global cap (1024 files less a
    // reserve of 256), not at EMFILE, and the daemon serves again once
    // they leave.
    let mut crowd = Vec::new();
    for host in 3..=10 {
        crowd.extend(rt.block_on(open_idle(daemon_addr, [127, 0, 0, host], 128)));
    }
    // One more is closed at once; the backlog is accepted in order, so the
    // daemon has dealt with every connection of the crowd by then.
    let mut late = std::net::TcpStream::connect(daemon_addr).unwrap();
    closed_after(&mut late, std::time::Instant::now(), Duration::from_secs(5))
        .expect("a connection over the cap is closed at once");
    // The test's own HTTP calls above may still hold a place or two while
    // the daemon reads their EOF.
    let held = still_open(&idle) + still_open(&crowd);
    assert!(
        (1024 - 256 - 4..=1024 - 256).contains(&held),
        "the daemon keeps {held} connections in all"
    );
    assert!(d.log_contains("connection refused: the connection cap is reached"));
    drop((idle, crowd));
    wait_until(
        "health once the crowd left",
        Duration::from_secs(10),
        || get_json(&cfg.url("/api/health")).filter(|(status, _)| *status == 200),
    );
    assert!(!d.log_contains("Too many open files"));
}

/// `n` connections from `source` (any port) that send nothing.
async fn open_idle(
    to: std::net::SocketAddr,
    source: [u8; 4],
    n: usize,
) -> Vec<std::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind((source, 0).into()).unwrap();
        let s = tokio::time::timeout(Duration::from_secs(10), sock.connect(to))
            .await
            .unwrap_or_else(|_| panic!("connection {i}: not accepted within 10 s"))
            .expect("connect");
        held.push(s.into_std().unwrap());
    }
    held
}

/// How many of these (non-blocking) sockets the daemon has not closed.
fn still_open(sockets: &[std::net::TcpStream]) -> usize {
    sockets
        .iter()
        .filter(|s| {
            let mut buf = [0u8; 1];
            matches!(std::io::Read::read(&mut &**s, &mut buf),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
        })
        .count()
}

/// Reads one response (Content-Length bodies only); returns the status.
fn read_response(s: &mut std::net::TcpStream) -> u16 {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read the response head"),
            1,
            "closed mid-head"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .expect("content-length")
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head[9..12].parse().unwrap()
}

/// How long after `since` the daemon closed `s` (EOF or reset); None if it
/// was still open at `since + within`.
fn closed_after(
    s: &mut std::net::TcpStream,
    since: std::time::Instant,
    within: Duration,
) -> Option<Duration> {
    use std::io::Read;
    s.set_read_timeout(Some(
        (since + within)
            .saturating_duration_since(std::time::Instant::now())
            .max(Duration::from_millis(1)),
    ))
    .unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => Some(since.elapsed()),
        Ok(n) => panic!(
            "unexpected {n} bytes: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(_) => Some(since.elapsed()),
    }
}

#[test]
fn a_slow_request_head_and_an_idle_keep_alive_connection_are_closed_on_their_own_timeouts() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Instant;
    let cfg = TestConfig::with_http(CLOSED_DB, "  header_timeout: 1s\n  idle_timeout: 3s\n", "");
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], cfg.port));
    let request = b"GET /api/health HTTP/1.1\r\nHost: arasul\r\n\r\n";

    let t0 = Instant::now();
    let mut silent = TcpStream::connect(addr).unwrap();
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(&request[..30]).unwrap();
    let mut keep_alive = TcpStream::connect(addr).unwrap();
    keep_alive.write_all(request).unwrap();
    assert_eq!(read_response(&mut keep_alive), 200);
    let answered = Instant::now();

    // Neither a silent connection nor half a head outlives header_timeout.
    for (what, s) in [("silent", &mut silent), ("half a head", &mut half)] {
        let took = closed_after(s, t0, Duration::from_secs(5))
            .unwrap_or_else(|| panic!("{what}: still open after 5 s"));
        eprintln!("{what}: closed after {took:?}");
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{what}: closed after {took:?}, header_timeout is 1 s"
        );
    }

    // An idle keep-alive connection lives past header_timeout, serves the
    // next request, and is closed idle_timeout after its last response.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(answered.elapsed()));
    keep_alive.write_all(request).unwrap();
    assert_eq!(
        read_response(&mut keep_alive),
        200,
        "request after 1.5 s idle"
    );
    let answered = Instant::now();
    let took = closed_after(&mut keep_alive, answered, Duration::from_secs(6))
        .expect("idle connection still open 6 s after its last response");
    eprintln!("idle keep-alive: closed {took:?} after its last response");
    assert!(
        took >= Duration::from_millis(2700) && took < Duration::from_millis(4500),
        "closed {took:?} after the last response, idle_timeout is 3 s"
    );
}

#[test]
fn live_streams_beyond_http_max_streams_get_503_until_one_ends() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite;
    let cfg = TestConfig::with_http(CLOSED_DB, "  max_streams: 2\n", "");
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let token = admin_token(&cfg);
    let ws_url = format!("ws://127.0.0.1:{}/api/metrics/live-stream", cfg.port);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let sse = || {
            http.get(cfg.url("/api/logs/stream"))
                .bearer_auth(&token)
                .send()
        };
        // One WebSocket and one SSE stream take both places.
        let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
        let logs = sse().await.unwrap();
        assert_eq!(logs.status(), 200);

        // A third of either kind is refused, in the envelope.
        match tokio_tungstenite::connect_async(&ws_url).await {
            Err(tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                let body: serde_json::Value =
                    serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"]["code"], "too_many_streams", "{body}");
            }
            other => panic!("third stream: {other:?}"),
        }
        let refused = sse().await.unwrap();
        assert_eq!(refused.status(), 503);
        let body: serde_json::Value = refused.json().await.unwrap();
        assert_eq!(body["error"]["code"], "too_many_streams", "{body}");

        // When the WebSocket ends, its place is free again…
        ws.close(None).await.unwrap();
        while ws.next().await.is_some() {}
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let (_ws, _) = loop {
            match tokio_tungstenite::connect_async(&ws_url).await {
                Ok(accepted) => break accepted,
                Err(e) => assert!(
                    tokio::time::Instant::now() < deadline,
                    "no place after the WebSocket closed: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        // …and so is the SSE stream's when its client goes away.
        drop(logs);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let r = sse().await.unwrap();
            if r.status() == 200 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no place after the SSE client left: {}",
                r.status()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}
