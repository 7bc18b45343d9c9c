//! Test harness: the real `arasuld` binary as a child process, a notify
//! socket to watch what it tells systemd, and private PostgreSQL servers
//! that a test can start and stop at will; the router in-process ([`App`]).
//! No mocks.
#![allow(dead_code)]

pub mod app;
pub mod dbus;
pub mod docker;
pub mod registry;
pub mod smtp;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use app::App;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_arasuld")
}

/// A port nothing listens on right now, for a server that a test starts
/// later (the daemon, a private PostgreSQL, SMTP, a registry); no other
/// test process gets it while this one runs.
///
/// Below the kernel's ephemeral range: a port that `bind(…:0)` handed out
/// was free only until the next `bind(…:0)` or outgoing connection in any
/// of the parallel test processes took it as well, and a daemon then failed
/// with "address in use". Ports below the range are never handed out that
/// way. Between test processes, a port is claimed with an exclusive lock on
/// a file named after it, held until this process exits, so two tests
/// cannot both find it free before either has bound it.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static CLAIMED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    const SPAN: u32 = 10_000;
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let low = ephemeral_low.saturating_sub(SPAN).max(1_024);
    let span = ephemeral_low.saturating_sub(low).max(1);
    let locks = std::env::temp_dir().join("arasuld-test-ports");
    std::fs::create_dir_all(&locks).unwrap();
    // Each process starts at its own offset, so they seldom meet a claim.
    let salt = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (salt + n) % span) as u16;
        let Ok(claim) = std::fs::File::create(locks.join(format!("{port}.lock"))) else {
            continue;
        };
        if claim.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            CLAIMED.lock().unwrap().push(claim);
            return port;
        }
    }
    panic!("no free port in {low}..{ephemeral_low}");
}

/// A tmpfs, unmounted on drop (even when the test fails); needs root.
pub struct Mount(PathBuf);

impl Mount {
    /// A tmpfs of `size` (e.g. `12k`, `48m`, `1t`) at `dir` (created). A
    /// large one gives a test a known amount of free space whatever this
    /// machine's disk holds: a tmpfs takes memory only for what is written.
    pub fn tmpfs(dir: &Path, size: &str) -> Mount {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts a tmpfs and needs root"
        );
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mount tmpfs at {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(dir.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Runs `cmd` with `input` on its stdin, closed after it so the program
/// sees the end (written from a thread, so a large input cannot block on a
/// full pipe), and what it printed.
pub fn with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

/// A program's stdout and then its stderr, as text.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every 50 ms until it returns Some, or panics after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A config file in a temp dir with every path inside it.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestConfig {
    pub fn new(database_url: &str, extra: &str) -> TestConfig {
        TestConfig::with_http(database_url, "", extra)
    }
    /// `http` adds keys to the `http:` section, each line indented two
    /// spaces (`"  idle_timeout: 2s\n"`); `extra` adds whole sections.
    pub fn with_http(database_url: &str, http: &str, extra: &str) -> TestConfig {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let text = format!(
            "http:\n  listen: 127.0.0.1:{port}\n  shutdown_grace: 2s\n{http}\
             database:\n  url: {database_url}\n  retry_max: 1s\n  check_interval: 1s\n  connect_timeout: 2s\n\
             docker:\n  pull: never\n\
             models:\n  registry: \"\"\n\
             paths:\n  state_dir: {d}/state\n  log_dir: {d}/log\n  secrets_dir: {d}/secrets\n  keys_dir: {d}/keys\n  services_file: {d}/services.yaml\n  data_path: {d}\n\
             {extra}"
        );
        std::fs::write(dir.path().join("arasuld.yaml"), text).unwrap();
        TestConfig { dir, port }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("arasuld.yaml")
    }
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// What the daemon sent to `$NOTIFY_SOCKET`.
pub struct NotifySocket {
    pub path: PathBuf,
    sock: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            sock,
            _dir: dir,
        }
    }
    /// The next datagram, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.sock.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }
    /// Reads datagrams until one contains `needle`; returns all seen.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Some(m) = self.recv(deadline - Instant::now()) {
                let hit = m.contains(needle);
                seen.push(m);
                if hit {
                    return seen;
                }
            }
        }
        panic!("no {needle:?} on the notify socket within {timeout:?}; saw {seen:?}");
    }
}

/// The real binary, with its output collected line by line.
pub struct Daemon {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> Daemon {
        Daemon::start_with(config, envs, |_| {})
    }

    /// As `start`, with a last say over the command (limits, `pre_exec`).
    pub fn start_with(
        config: &Path,
        envs: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        Daemon::start_bin(bin(), config, envs, customize)
    }

    /// As `start_with`, with another build of the binary (`$ARASUL_TEST_BIN`).
    pub fn start_bin(
        bin: &str,
        config: &Path,
        envs: &[(&str, &str)],
        customize: impl FnOnce(&mut Command),
    ) -> Daemon {
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        customize(&mut cmd);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("arasuld| {line}");
                    lines.lock().unwrap().push(line);
                }
            });
        }
        Daemon { child, lines }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        wait_until(&format!("log line {needle:?}"), timeout, || {
            self.log_contains(needle).then_some(())
        });
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the exit; returns the status and how long it took.
    pub fn wait_exit(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        let t0 = Instant::now();
        let status = wait_until("arasuld to exit", timeout, || {
            self.child.try_wait().unwrap()
        });
        (status, t0.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Directory with PostgreSQL's server binaries (initdb, pg_ctl).
pub fn pg_bin() -> PathBuf {
    if let Ok(p) = std::env::var("ARASUL_TEST_PG_BIN") {
        return p.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .filter(|p| p.join("initdb").exists())
        .expect("PostgreSQL server binaries not found: run scripts/test, which installs them")
}

/// A private PostgreSQL server in a temp dir that a test starts and stops
/// (the shared dev cluster must stay up for the other tests).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

impl PrivatePostgres {
    /// Creates the data dir; the server is not started yet.
    pub fn init(port: u16) -> PrivatePostgres {
        let dir = tempfile::tempdir().unwrap();
        as_postgres_owner(dir.path());
        let pg = PrivatePostgres {
            port,
            dir,
            running: false,
        };
        pg.run(&[
            "initdb",
            "-D",
            &pg.data(),
            "--auth=trust",
            "-U",
            "postgres",
            "--no-sync",
        ]);
        pg
    }
    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
    pub fn start(&mut self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log").display().to_string();
        self.run(&[
            "pg_ctl",
            "-D",
            &self.data(),
            "-o",
            &opts,
            "-l",
            &log,
            "-w",
            "start",
        ]);
        self.running = true;
    }
    pub fn stop(&mut self) {
        self.run(&["pg_ctl", "-D", &self.data(), "-m", "fast", "-w", "stop"]);
        self.running = false;
    }
    fn run(&self, args: &[&str]) {
        let exe = pg_bin().join(args[0]);
        let mut cmd = if unsafe { libc::geteuid() } == 0 {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = cmd.args(&args[1..]).output().expect("run postgres tool");
        assert!(
            out.status.success(),
            "{} failed: {}{}",
            args[0],
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.run(&["pg_ctl", "-D", &self.data(), "-m", "immediate", "stop"])
            }));
        }
    }
}

/// As root, hand the dir to the `postgres` user (initdb refuses to run as root).
fn as_postgres_owner(dir: &Path) {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres user");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .unwrap();
    let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
}

/// GET returning (status, body as JSON or Null).
pub fn get_json(url: &str) -> Option<(u16, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        Some((status, body))
    })
}

/// The admin password `admin_token` sets (meets the policy).
pub const TEST_ADMIN_PASSWORD: &str = "Test-Admin-Passw0rd!";

/// Logs in with the initial password the daemon generated in the config's
/// secrets dir, changes it to [`TEST_ADMIN_PASSWORD`] (admin routes answer
/// 403 until then) and returns a Bearer token.
pub fn admin_token(cfg: &TestConfig) -> String {
    let initial = std::fs::read_to_string(cfg.dir.path().join("secrets/initial-admin-password"))
        .expect("initial admin password file");
    let token = login_token(cfg, initial.trim());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(cfg.url("/api/auth/change-password"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"current_password": initial.trim(), "new_password": TEST_ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "change the initial password");
        token
    })
}

/// A session token for the admin with `password` (already changed).
pub fn login_token(cfg: &TestConfig, password: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(cfg.url("/api/auth/login"))
            .json(&serde_json::json!({"username": "admin", "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login");
        let v: serde_json::Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    })
}

/// POST a JSON body with a Bearer token: (status, body as JSON or Null).
pub fn post_json_auth(url: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    send_json_auth(reqwest::Method::POST, url, token, body)
}

/// PUT a JSON body with a Bearer token: (status, body as JSON or Null).
pub fn put_json_auth(url: &str, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    send_json_auth(reqwest::Method::PUT, url, token, body)
}

fn send_json_auth(
    method: reqwest::Method,
    url: &str,
    token: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .request(method, url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

/// GET with a Bearer token, returning (status, body as JSON or Null).
pub fn get_json_auth(url: &str, token: &str) -> Option<(u16, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .get(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(serde_json::Value::Null);
        Some((status, body))
    })
}

/// Auth with argon2 at toy costs (64 KiB, t = 1), secrets under `dir/secrets`.
pub fn fast_auth(dir: &Path) -> arasuld::auth::Auth {
    let cfg = arasuld::auth::AuthConfig {
        secrets_dir: dir.join("secrets"),
        hash_params: arasuld::auth::HashParams {
            m_kib: 64,
            t: 1,
            p: 1,
        },
        ..Default::default()
    };
    arasuld::auth::Auth::open(cfg).unwrap().0
}

/// A config whose database is a closed port (the DB is "down").
pub fn offline_config() -> arasuld::config::Config {
    let mut config = arasuld::config::Config::default();
    config.database.url = arasuld::config::Secret::new("postgres://nobody@127.0.0.1:1/x".into());
    // Model sizes from the curated list only: nothing leaves the machine.
    config.models.registry = String::new();
    config
}

/// The shared state the router needs, built around the given parts; no
/// control loop behind it (reload answers 503).
pub fn app_state(
    config: arasuld::config::Config,
    auth: Arc<arasuld::auth::Auth>,
    workers: arasuld::tasks::Workers,
    services: arasuld::docker::SupervisorHandle,
) -> arasuld::state::AppState {
    let queue_file = tempfile::tempdir()
        .map(|d| arasuld::ai::pulls::PullQueue::file_in(&d.keep()))
        .ok();
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    // Kept alive so the config never reads as closed.
    std::mem::forget(tx);
    let (control, _) = tokio::sync::mpsc::channel(1);
    let db = arasuld::db::Db::new(&config.database).unwrap();
    let updates = arasuld::update::UpdateManager::new(
        arasuld::update::manager::UpdateDeps::from_config(&config, &db, &services),
    );
    let models = arasuld::ai::pulls::PullDeps::new(
        arasuld::ai::pulls::PullQueue::open(queue_file),
        services.clone(),
        rx.clone(),
    );
    let backups = arasuld::backup::Backups::new(
        rx.clone(),
        db.clone(),
        services.clone(),
        None,
        arasuld::notify::Notifier::detached(),
    );
    arasuld::state::AppState::new(arasuld::state::Shared {
        backups,
        updates,
        db,
        metrics: arasuld::metrics::MetricsHub::new(&config.metrics, Default::default(), "none"),
        config: rx,
        workers,
        auth,
        services,
        started_at: chrono::Utc::now(),
        control,
        mdns: tokio::sync::watch::channel(Default::default()).1,
        keys: Default::default(),
        tls: None,
        models,
        config_path: None,
        notify: arasuld::notify::Notifier::detached(),
        healing: arasuld::healing::HealingHandle::detached(),
        ai: arasuld::ai::Ai::new(),
    })
}

/// The SHA-256 fingerprint of a PEM certificate as openssl prints it
/// (`AB:CD:…`): what the box must show the owner.
pub fn cert_fingerprint(cert: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    line.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_owned()
}
