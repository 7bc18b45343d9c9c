//! Category D against a private `dbus-daemon`: a test
//! `org.freedesktop.login1.Manager` records the reboots the daemon asks for.
//! The daemon is the real binary with a real Postgres; it is killed and
//! started again to show the hourly reboot counter survives it.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::dbus::PrivateBus;
use common::{Daemon, NotifySocket, PrivatePostgres, TestConfig, admin_token, free_port};

/// The logind stand-in: remembers each `Reboot(interactive)` call.
struct Login1 {
    calls: Arc<Mutex<Vec<bool>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Login1 {
    fn reboot(&self, interactive: bool) {
        self.calls.lock().unwrap().push(interactive);
    }
}

/// The bus, the stand-in served on it (on its own runtime) and its calls.
struct Logind {
    bus: PrivateBus,
    calls: Arc<Mutex<Vec<bool>>>,
    _conn: zbus::Connection,
    _rt: tokio::runtime::Runtime,
}

impl Logind {
    fn start() -> Logind {
        let bus = PrivateBus::start();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Runtime::new().unwrap();
        let conn = rt.block_on(async {
            zbus::connection::Builder::address(bus.address())
                .name("org.freedesktop.login1")
                .serve_at(
                    "/org/freedesktop/login1",
                    Login1 {
                        calls: calls.clone(),
                    },
                )
                .build()
                .await
                .unwrap()
        });
        Logind {
            bus,
            calls,
            _conn: conn,
            _rt: rt,
        }
    }

    fn calls(&self) -> Vec<bool> {
        self.calls.lock().unwrap().clone()
    }
}

fn start_daemon(cfg: &TestConfig) -> Daemon {
    let notify = NotifySocket::new();
    let d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    d
}

fn wait_db(cfg: &TestConfig, token: &str) {
    common::wait_until("database up and migrated", Duration::from_secs(30), || {
        let (_, p) = common::get_json_auth(&cfg.url("/api/database/pool"), token)?;
        (p["up"] == true && p["migrated"] == true).then_some(())
    });
}

fn post_reboot(cfg: &TestConfig, token: &str) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(cfg.url("/api/system/reboot"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    })
}

/// Logs in with the password `admin_token` set.
fn login(cfg: &TestConfig) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(cfg.url("/api/auth/login"))
            .json(
                &serde_json::json!({"username": "admin", "password": common::TEST_ADMIN_PASSWORD}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login after the restart");
        let v: serde_json::Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_owned()
    })
}

fn private_pg() -> PrivatePostgres {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    pg
}

fn reboot_config(pg: &PrivatePostgres, logind: &Logind, enabled: bool) -> TestConfig {
    TestConfig::new(
        &pg.url(),
        &format!(
            "healing:\n  reboot:\n    enabled: {enabled}\n    drain_timeout: 1s\n    bus_address: \"{}\"\n",
            logind.bus.address()
        ),
    )
}

#[test]
fn reboots_only_when_all_checks_pass_and_the_hourly_limit_survives_a_restart() {
    let pg = private_pg();
    let logind = Logind::start();
    let cfg = reboot_config(&pg, &logind, true);
    let state_dir = cfg.dir.path().join("state");
    let d = start_daemon(&cfg);
    let token = admin_token(&cfg);
    wait_db(&cfg, &token);

    // Unauthenticated: refused like every admin route, nothing asked.
    let (status, _) = post_reboot(&cfg, "not-a-token");
    assert_eq!(status, 401);

    // (Refused during an update: tests/it/update.rs, with a real bundle.)
    // Every check passes: the reboot is asked for, non-interactively.
    std::fs::create_dir_all(&state_dir).unwrap();
    let (status, body) = post_reboot(&cfg, &token);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], true);
    assert_eq!(logind.calls(), [false]);
    // The state before it is saved, with the disk figures.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("reboot_state.json")).unwrap())
            .unwrap();
    assert_eq!(saved["id"], body["id"]);
    assert!(saved["boot_id"].is_string(), "{saved}");
    assert!(saved.get("disk_percent").is_some(), "{saved}");

    let (status, _) = post_reboot(&cfg, &token);
    assert_eq!(status, 202);
    assert_eq!(logind.calls().len(), 2);
    // A third within the hour: refused.
    let (status, body) = post_reboot(&cfg, &token);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "too_many_reboots", "{body}");
    assert_eq!(logind.calls().len(), 2);

    // The daemon dies (SIGKILL) and starts again: the count is in Postgres.
    drop(d);
    let _d = start_daemon(&cfg);
    // A new login: the killed daemon may not have persisted the old session.
    let token = login(&cfg);
    wait_db(&cfg, &token);
    let (status, body) = post_reboot(&cfg, &token);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "too_many_reboots", "{body}");
    assert_eq!(logind.calls().len(), 2);

    // The start after the "reboot" validated the saved state: the boot id
    // did not change (nothing rebooted here), and it says so.
    let history = common::wait_until("the validation event", Duration::from_secs(20), || {
        let (_, h) = common::get_json_auth(&cfg.url("/api/self-healing/reboot-history"), &token)?;
        h["entries"]
            .as_array()?
            .iter()
            .any(|e| e["event_type"] == "post_reboot_validation")
            .then_some(h)
    });
    let entries = history["entries"].as_array().unwrap();
    let validation = entries
        .iter()
        .find(|e| e["event_type"] == "post_reboot_validation")
        .unwrap();
    assert_eq!(validation["severity"], "WARNING", "{validation}");
    assert!(
        validation["description"]
            .as_str()
            .unwrap()
            .contains("boot id is unchanged"),
        "{validation}"
    );
    let count = |t: &str| entries.iter().filter(|e| e["event_type"] == t).count();
    assert_eq!(count("reboot"), 2, "{history}");
    assert_eq!(count("reboot_refused"), 2, "{history}");
    assert!(state_dir.join("reboot_state.validated.json").exists());
    assert!(!state_dir.join("reboot_state.json").exists());
}

#[test]
fn reboots_are_refused_while_disabled() {
    let pg = private_pg();
    let logind = Logind::start();
    let cfg = reboot_config(&pg, &logind, false);
    let _d = start_daemon(&cfg);
    let token = admin_token(&cfg);
    wait_db(&cfg, &token);
    let (status, body) = post_reboot(&cfg, &token);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "reboot_disabled", "{body}");
    assert!(logind.calls().is_empty());
    assert!(!cfg.dir.path().join("state/reboot_state.json").exists());
}
