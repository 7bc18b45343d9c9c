//! Signed updates end to end: the real `arasuld` binary on a private
//! PostgreSQL server and the real Docker engine, with bundles made by
//! `arasuld bundle create` and signed by a key from `arasuld bundle
//! keygen`. Versions of the service are the test runtime image with one
//! change each: v2 answers `/api/version` with 2.0.0, v3 exits at once
//! (crash loop).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::docker::{IMAGE, Project, docker};
use common::{
    Daemon, PrivatePostgres, TEST_ADMIN_PASSWORD, TestConfig, admin_token, bin, free_port,
    get_json, get_json_auth, login_token, wait_until,
};
use serde_json::Value;

/// One box: its Docker project, database, config dir and daemon.
struct Env {
    daemon: Option<Daemon>,
    cfg: TestConfig,
    db_url: String,
    token: String,
    v1: String,
    v2: String,
    v3: String,
    _project: Project,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An image made from the test runtime with one ENV line added.
fn variant(name: &str, env: &str) {
    let cid = docker(&["create", IMAGE]);
    assert!(!cid.is_empty(), "docker create {IMAGE}");
    run(Command::new("docker").args(["commit", "--change", &format!("ENV {env}"), &cid, name]));
    docker(&["rm", "-f", &cid]);
}

fn psql(url: &str, sql: &str) -> String {
    run(Command::new("psql").args([url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]))
}

/// Schema and data of the database as `pg_dump` prints them, without the
/// random `\restrict` keys and the tables the daemon writes on its own.
fn db_image(url: &str) -> String {
    let out = run(Command::new("pg_dump").args([
        url,
        "--no-owner",
        "--exclude-table-data=metrics",
        "--exclude-table-data=metric_gaps",
        "--exclude-table-data=daemon_starts",
        "--exclude-table-data=update_*",
        "--exclude-table-data=self_healing_events",
        "--exclude-table-data=audit_log",
        "--exclude-table-data=sessions",
        "--exclude-table-data=notification_outbox",
    ]));
    out.lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .filter(|l| !l.starts_with("SELECT pg_catalog.setval("))
        .filter(|l| !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Env {
    fn new(tag: &str, pg: &PrivatePostgres) -> Env {
        Self::new_with(tag, pg, |_| {})
    }

    /// `before_start` sees the test dir before the daemon first starts.
    fn new_with(tag: &str, pg: &PrivatePostgres, before_start: impl FnOnce(&Path)) -> Env {
        let project = Project::new(tag);
        let db = format!("upd_{}", project.name.replace('-', "_"));
        psql(&pg.url(), &format!("CREATE DATABASE {db}"));
        let db_url = format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port);
        let cfg = TestConfig::new(&db_url, "");
        let d = cfg.dir.path().to_path_buf();
        let mut yaml = std::fs::read_to_string(cfg.path()).unwrap();
        yaml.push_str(&format!(
            "update:\n  verify_timeout: 30s\n  stability_window: 2s\n  config_dir: {}/etc\n",
            d.display()
        ));
        std::fs::write(cfg.path(), yaml).unwrap();
        let v1 = format!("arasul-testrt:{}-v1", project.name);
        let v2 = format!("arasul-testrt:{}-v2", project.name);
        let v3 = format!("arasul-testrt:{}-v3", project.name);
        docker(&["tag", IMAGE, &v1]);
        variant(&v2, "TESTRT_VERSION=2.0.0");
        variant(&v3, "TESTRT_MODE=exit-now");
        std::fs::write(
            d.join("services.yaml"),
            format!(
                "project: {p}\nnetwork: {n}\nservices:\n- name: app\n  image: {v1}\n  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 500ms, retries: 2, start_period: 3s}}\n",
                p = project.name,
                n = project.network()
            ),
        )
        .unwrap();
        run(Command::new(bin())
            .args(["bundle", "keygen", "--out"])
            .arg(d.join("vendor")));
        std::fs::create_dir_all(d.join("keys")).unwrap();
        std::fs::copy(
            d.join("vendor/update-signing.pem"),
            d.join("keys/update-signing.pem"),
        )
        .unwrap();
        let mut env = Env {
            daemon: None,
            cfg,
            db_url,
            token: String::new(),
            v1,
            v2,
            v3,
            _project: project,
        };
        before_start(env.dir());
        env.start(&[]);
        env.token = admin_token(&env.cfg);
        env.wait_app(&env.v1.clone());
        env
    }

    fn dir(&self) -> &Path {
        self.cfg.dir.path()
    }

    fn start(&mut self, envs: &[(&str, &str)]) {
        self.daemon = Some(Daemon::start(&self.cfg.path(), envs));
        wait_until("the daemon to serve", Duration::from_secs(30), || {
            get_json(&self.cfg.url("/api/health")).filter(|(s, _)| *s == 200)
        });
        if !self.token.is_empty() {
            self.token = login_token(&self.cfg, TEST_ADMIN_PASSWORD);
        }
    }

    /// Waits for the daemon to die (fault injection kills it).
    fn wait_killed(&mut self) {
        let mut d = self.daemon.take().expect("a daemon");
        d.wait_exit(Duration::from_secs(120));
    }

    /// `app` healthy on `image`.
    fn wait_app(&self, image: &str) -> Value {
        wait_until(
            &format!("app healthy on {image}"),
            Duration::from_secs(60),
            || {
                let (_, v) = get_json(&self.cfg.url("/api/services"))?;
                let s = v["services"].as_array()?.first()?.clone();
                (s["state"] == "healthy" && s["image"] == image).then_some(s)
            },
        )
    }

    /// What `/api/version` of the running app container says.
    fn app_version(&self) -> String {
        self.wait_app_any();
        // The container's address is an admin detail.
        let (_, v) = get_json_auth(&self.cfg.url("/api/services/app"), &self.token).unwrap();
        let addr = v["service"]["address"].as_str().unwrap().to_string();
        let (_, v) = get_json(&format!("http://{addr}:11434/api/version")).unwrap();
        v["version"].as_str().unwrap_or_default().to_string()
    }

    fn wait_app_any(&self) -> Value {
        wait_until("app healthy", Duration::from_secs(60), || {
            let (_, v) = get_json(&self.cfg.url("/api/services"))?;
            let s = v["services"].as_array()?.first()?.clone();
            (s["state"] == "healthy").then_some(s)
        })
    }

    /// `arasuld bundle create` signed with the vendor key, for
    /// `version` (min 0.1.0) into `out`; the caller adds the payload.
    fn bundle_create(&self, version: &str, out: &Path) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["bundle", "create", "--key"])
            .arg(self.dir().join("vendor/update-signing.key"))
            .args(["--version", version, "--min-version", "0.1.0", "--out"])
            .arg(out);
        cmd
    }

    /// Writes the migration and config files, then `arasuld bundle create`.
    fn bundle(
        &self,
        version: &str,
        image: Option<&str>,
        migrations: &[(&str, &str)],
        configs: &[(&str, &str)],
    ) -> PathBuf {
        let src = self.dir().join(format!("src-{version}"));
        std::fs::create_dir_all(&src).unwrap();
        let out = self.dir().join(format!("v{version}.araupdate"));
        let mut cmd = self.bundle_create(version, &out);
        if let Some(i) = image {
            cmd.args(["--image", &format!("app={i}")]);
        }
        for (name, sql) in migrations {
            let p = src.join(name);
            std::fs::write(&p, sql).unwrap();
            cmd.arg("--migration").arg(p);
        }
        for (name, text) in configs {
            let p = src.join(name);
            std::fs::write(&p, text).unwrap();
            cmd.arg("--config-file").arg(p);
        }
        run(&mut cmd);
        out
    }

    /// `curl -F file=@bundle`: (status, body).
    fn upload(&self, bundle: &Path) -> (u16, Value) {
        let out = Command::new("curl")
            .args(["-sS", "-w", "\n%{http_code}", "-H"])
            .arg(format!("Authorization: Bearer {}", self.token))
            .arg("-F")
            .arg(format!("file=@{}", bundle.display()))
            .arg(self.cfg.url("/api/update/upload"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
        (
            code.trim().parse().unwrap_or(0),
            serde_json::from_str(body).unwrap_or(Value::Null),
        )
    }

    /// Upload (verified, 200), apply (202), then the run's final status.
    fn apply(&self, bundle: &Path) -> Value {
        let (code, check) = self.upload(bundle);
        assert_eq!(code, 200, "{check}");
        let (code, _) = self.post("/api/update/apply");
        assert_eq!(code, 202);
        self.wait_final()
    }

    fn post(&self, path: &str) -> (u16, Value) {
        post_auth(&self.cfg.url(path), &self.token)
    }

    fn status(&self) -> Value {
        get_json_auth(&self.cfg.url("/api/update/status"), &self.token)
            .unwrap()
            .1
    }

    /// Polls the status until the run is over.
    fn wait_final(&self) -> Value {
        wait_until("the update to finish", Duration::from_secs(180), || {
            let s = get_json_auth(&self.cfg.url("/api/update/status"), &self.token)?.1;
            ["done", "rolled_back", "failed"]
                .contains(&s["state"].as_str()?)
                .then_some(s)
        })
    }

    fn history(&self) -> Vec<Value> {
        let (code, v) = get_json_auth(&self.cfg.url("/api/update/history"), &self.token).unwrap();
        assert_eq!(code, 200, "{v}");
        v["updates"].as_array().unwrap().clone()
    }

    fn config_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.dir().join("etc").join(name)).ok()
    }

    fn table_exists(&self, name: &str) -> bool {
        psql(
            &self.db_url,
            &format!("SELECT to_regclass('public.{name}') IS NOT NULL"),
        ) == "t"
    }

    fn v2_bundle(&self) -> PathBuf {
        self.bundle(
            "0.2.0",
            Some(&self.v2),
            &[(
                "001_notes.sql",
                "CREATE TABLE notes (id int PRIMARY KEY, body text);\nINSERT INTO notes VALUES (1, 'from v2');\n",
            )],
            &[("app.conf", "mode=v2\n")],
        )
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.daemon.take();
        for i in [&self.v1, &self.v2, &self.v3] {
            docker(&["rmi", "-f", i]);
        }
    }
}

fn post_auth(url: &str, token: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Ok(r) = reqwest::Client::new()
            .post(url)
            .bearer_auth(token)
            .timeout(Duration::from_secs(30))
            .send()
            .await
        else {
            // The daemon died before answering (fault injection).
            return (0, Value::Null);
        };
        let code = r.status().as_u16();
        (code, r.json().await.unwrap_or(Value::Null))
    })
}

fn private_pg() -> PrivatePostgres {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    pg
}

#[test]
fn v1_to_v2_by_upload_then_a_crashing_v3_is_rolled_back() {
    let pg = private_pg();
    let mut env = Env::new("upd-happy", &pg);
    assert_eq!(env.app_version(), "0.9.0-testrt");

    // v1 → v2: image, migration and config.
    let bundle = env.v2_bundle();
    // The image must come from the bundle, not from the engine's cache.
    docker(&["rmi", &env.v2]);
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    assert_eq!(check["version"], "0.2.0");
    assert_eq!(check["installed_version"], "0.1.0");
    assert_eq!(check["signature"]["valid"], true);
    assert_eq!(check["signature"]["key"], "update-signing.pem");
    assert_eq!(check["components"]["images"][0]["service"], "app");
    assert_eq!(check["components"]["migrations"][0], "001_notes.sql");
    let s = env.status();
    assert_eq!(s["state"], "validated");
    assert_eq!(s["pending"]["version"], "0.2.0");

    let (code, s) = env.post("/api/update/apply");
    assert_eq!(code, 202, "{s}");
    let s = env.wait_final();
    assert_eq!(s["state"], "done", "{s}");
    assert_eq!(s["installed_version"], "0.2.0");
    env.wait_app(&env.v2.clone());
    assert_eq!(env.app_version(), "2.0.0");
    assert_eq!(psql(&env.db_url, "SELECT body FROM notes"), "from v2");
    assert_eq!(env.config_file("app.conf").as_deref(), Some("mode=v2\n"));
    let h = env.history();
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(
        (&h[0]["version"], &h[0]["from_version"], &h[0]["result"]),
        (
            &Value::from("0.2.0"),
            &Value::from("0.1.0"),
            &Value::from("done")
        )
    );
    let log = std::fs::read_to_string(env.dir().join("log/update.log")).unwrap();
    assert!(log.contains("done: installed 0.2.0"), "{log}");
    // The owner is told (the outbox records it even with no channel set).
    let alerts = || {
        psql(
            &env.db_url,
            "SELECT string_agg(cause, ',' ORDER BY id) FROM notification_outbox",
        )
    };
    wait_until("the update_done alert", Duration::from_secs(10), || {
        alerts().contains("update_done:0.2.0").then_some(())
    });

    // v2 → v3: its image exits at once; the box must come back to v2.
    let before = db_image(&env.db_url);
    let bundle = env.bundle(
        "0.3.0",
        Some(&env.v3.clone()),
        &[(
            "001_more.sql",
            "CREATE TABLE v3_things (id int);\nINSERT INTO notes VALUES (2, 'from v3');\n",
        )],
        &[("app.conf", "mode=v3\n"), ("new.conf", "only in v3\n")],
    );
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    assert_eq!(check["installed_version"], "0.2.0");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    let s = env.wait_final();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(s["error"].as_str().unwrap().contains("app is down"), "{s}");
    assert_eq!(s["installed_version"], "0.2.0");
    env.wait_app(&env.v2.clone());
    assert_eq!(env.app_version(), "2.0.0");
    assert!(!env.table_exists("v3_things"));
    assert_eq!(
        db_image(&env.db_url),
        before,
        "the database is the backup again"
    );
    assert_eq!(env.config_file("app.conf").as_deref(), Some("mode=v2\n"));
    assert_eq!(env.config_file("new.conf"), None);
    let h = env.history();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(h[0]["result"], "rolled_back");
    assert_eq!(h[0]["version"], "0.3.0");
    assert!(h[0]["error"].as_str().unwrap().contains("app is down"));
    assert_eq!(h[1]["result"], "done");
    wait_until(
        "the update_rolled_back alert",
        Duration::from_secs(10),
        || alerts().contains("update_rolled_back:0.3.0").then_some(()),
    );

    // Both runs are over for the reboot checks too: they ask the updater,
    // not a file whose shape they guessed (every reboot used to be refused
    // with update_in_progress after the first update). Reboots enabled, with
    // no logind to ask: every check passes and the call itself fails.
    env.daemon = None;
    let mut yaml = std::fs::read_to_string(env.cfg.path()).unwrap();
    yaml.push_str(&format!(
        "healing:\n  reboot:\n    enabled: true\n    drain_timeout: 1s\n    bus_address: \"unix:path={}/no-logind\"\n",
        env.dir().display()
    ));
    std::fs::write(env.cfg.path(), yaml).unwrap();
    env.start(&[]);
    let token = env.token.clone();
    wait_until("database up", Duration::from_secs(30), || {
        let (_, p) = get_json_auth(&env.cfg.url("/api/database/pool"), &token)?;
        (p["up"] == true && p["migrated"] == true).then_some(())
    });
    let (code, v) = env.post("/api/system/reboot");
    assert_ne!(v["error"]["code"], "update_in_progress", "{code} {v}");
    assert_eq!(code, 503, "only logind's absence stops it: {v}");
}

#[test]
fn migration_three_of_five_failing_rolls_everything_back() {
    let pg = private_pg();
    let env = Env::new("upd-mig", &pg);
    let before = db_image(&env.db_url);
    let bundle = env.bundle(
        "0.2.0",
        Some(&env.v2),
        &[
            (
                "001_a.sql",
                "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n",
            ),
            (
                "002_idx.sql",
                "-- arasul:no-transaction\nCREATE INDEX CONCURRENTLY a_id ON a (id);\n",
            ),
            (
                "003_bad.sql",
                "CREATE TABLE b (id int);\nINSERT INTO no_such_table VALUES (1);\n",
            ),
            ("004_c.sql", "CREATE TABLE c (id int);\n"),
            ("005_d.sql", "CREATE TABLE d (id int);\n"),
        ],
        &[("app.conf", "mode=v2\n")],
    );
    let s = env.apply(&bundle);
    assert_eq!(s["state"], "rolled_back", "{s}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("migration 3/5 003_bad.sql"), "{err}");
    for t in ["a", "b", "c", "d"] {
        assert!(!env.table_exists(t), "table {t} survived the rollback");
    }
    assert_eq!(db_image(&env.db_url), before);
    assert_eq!(env.config_file("app.conf"), None);
    env.wait_app(&env.v1.clone());
    assert_eq!(s["installed_version"], "0.1.0");
}

#[test]
fn a_second_upload_during_an_update_is_refused_and_a_truncated_upload_changes_nothing() {
    let pg = private_pg();
    let env = Env::new("upd-409", &pg);

    // Truncated: the connection closes half-way through the file.
    let bundle = env.v2_bundle();
    let bytes = std::fs::read(&bundle).unwrap();
    let code = truncated_upload(&env, &bytes[..bytes.len() / 2], bytes.len(), || {
        // While the body streams in, the status says so.
        wait_until(
            "the status to show the upload",
            Duration::from_secs(10),
            || {
                let s = env.status();
                (s["state"] == "uploading" && s["source"] == "upload").then_some(())
            },
        );
    });
    assert!(code.is_none() || code == Some(400), "{code:?}");
    let s = wait_until("the updater idle again", Duration::from_secs(10), || {
        let s = env.status();
        (s["state"] == "idle").then_some(s)
    });
    assert_eq!(s["pending"], Value::Null);
    let incoming = env.dir().join("state/updates/incoming");
    wait_until("no partial upload left", Duration::from_secs(10), || {
        std::fs::read_dir(&incoming)
            .map(|d| d.count() == 0)
            .unwrap_or(true)
            .then_some(())
    });

    // The full bundle is accepted afterwards; while it is being applied a
    // second upload is refused with 409.
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    let (code, body) = env.upload(&bundle);
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"]["code"], "update_in_progress");
    let (code, body) = env.post("/api/update/apply");
    assert_eq!(code, 409, "{body}");
    let s = env.wait_final();
    assert_eq!(s["state"], "done", "{s}");
    // Nothing is staged any more.
    let (code, body) = env.post("/api/update/apply");
    assert_eq!(
        (code, &body["error"]["code"]),
        (409, &Value::from("no_update_staged"))
    );
}

/// Sends a multipart upload that stops after `part` of the file; returns
/// the status code if the server answered.
fn truncated_upload(
    env: &Env,
    part: &[u8],
    full_len: usize,
    while_open: impl FnOnce(),
) -> Option<u16> {
    use std::io::{Read, Write};
    let boundary = "arasulboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.araupdate\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let len = head.len() + full_len + tail.len();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", env.cfg.port)).unwrap();
    write!(
        s,
        "POST /api/update/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n",
        env.token
    )
    .unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(part).unwrap();
    s.flush().unwrap();
    while_open();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

/// Kill at each state in turn, restart: the box is consistently old or new.
#[test]
fn killed_at_every_state_the_restart_leaves_the_box_old_or_new() {
    let pg = private_pg();
    for state in [
        "validated",
        "backing_up",
        "loading_images",
        "migrating",
        "switching",
        "verifying",
        "done",
        "rolling_back",
    ] {
        let mut env = Env::new(&format!("crash-{}", state.replace('_', "")), &pg);
        let before = db_image(&env.db_url);
        // rolling_back is reached with an update that fails (v3 exits).
        let failing = state == "rolling_back";
        let bundle = if failing {
            env.bundle(
                "0.2.0",
                Some(&env.v3.clone()),
                &[("001_notes.sql", "CREATE TABLE notes (id int);\n")],
                &[("app.conf", "mode=v3\n")],
            )
        } else {
            env.v2_bundle()
        };
        env.daemon.take();
        env.start(&[("ARASUL_TEST_CRASH_AT", state)]);
        env.wait_app(&env.v1.clone());
        let (code, check) = env.upload(&bundle);
        assert_eq!(code, 200, "{state}: {check}");
        let (code, _) = env.post("/api/update/apply");
        assert!(code == 202 || code == 0, "{state}: apply answered {code}");
        env.wait_killed();
        env.start(&[]);
        let s = if state == "validated" {
            // Nothing happened yet: the bundle waits again.
            let s = wait_until("pending again", Duration::from_secs(30), || {
                let s = env.status();
                (s["state"] == "validated").then_some(s)
            });
            assert_eq!(s["pending"]["version"], "0.2.0", "{state}: {s}");
            let (code, _) = env.post("/api/update/apply");
            assert_eq!(code, 202);
            env.wait_final()
        } else {
            env.wait_final()
        };
        let new = match state {
            // Verification passes again after the restart: finished.
            "verifying" | "done" | "validated" => true,
            _ => false,
        };
        if new {
            assert_eq!(s["state"], "done", "{state}: {s}");
            env.wait_app(&env.v2.clone());
            assert_eq!(env.app_version(), "2.0.0", "{state}");
            assert!(env.table_exists("notes"), "{state}");
            assert_eq!(env.config_file("app.conf").as_deref(), Some("mode=v2\n"));
        } else {
            assert_eq!(s["state"], "rolled_back", "{state}: {s}");
            env.wait_app(&env.v1.clone());
            assert_eq!(env.app_version(), "0.9.0-testrt", "{state}");
            assert!(!env.table_exists("notes"), "{state}");
            assert_eq!(db_image(&env.db_url), before, "{state}");
            assert_eq!(env.config_file("app.conf"), None, "{state}");
        }
        let h = env.history();
        assert_eq!(h[0]["result"], s["state"], "{state}: {h:?}");
    }
}

#[test]
fn disk_full_during_the_backup_aborts_before_anything_live_changes() {
    let pg = private_pg();
    let env = Env::new("upd-full", &pg);
    let _mount = common::Mount::tmpfs(&env.dir().join("state/updates/backup"), "12k");
    let bundle = env.v2_bundle();
    let s = env.apply(&bundle);
    assert_eq!(s["state"], "rolled_back", "{s}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("database backup failed"), "{err}");
    // Nothing live was touched: old image, no migration, no config.
    env.wait_app(&env.v1.clone());
    assert!(!env.table_exists("notes"));
    assert_eq!(env.config_file("app.conf"), None);
    assert_eq!(env.history()[0]["result"], "rolled_back");
}

#[test]
fn an_upload_abandoned_during_its_verification_leaves_no_staged_bundle() {
    use std::io::{Read, Write};
    let pg = private_pg();
    let env = Env::new("upd-gone", &pg);
    // A bundle big enough that verifying it (hash + copy into staging)
    // takes a while: a 512 MiB package.
    let big = env.dir().join("big.deb");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let bundle = env.dir().join("big.araupdate");
    run(env
        .bundle_create("0.2.0", &bundle)
        .arg("--package")
        .arg(&big));
    std::fs::remove_file(&big).unwrap();

    // The whole upload, by hand, then the client goes away while the
    // daemon verifies what it received.
    let boundary = "arasul-test-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.araupdate\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let size = std::fs::metadata(&bundle).unwrap().len();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", env.cfg.port)).unwrap();
    write!(
        sock,
        "POST /api/update/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{head}",
        env.token,
        head.len() as u64 + size + tail.len() as u64
    )
    .unwrap();
    let mut f = std::fs::File::open(&bundle).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        sock.write_all(&buf[..n]).unwrap();
    }
    sock.write_all(tail.as_bytes()).unwrap();
    wait_until("the whole bundle received", Duration::from_secs(60), || {
        (env.status()["percent"] == 100).then_some(())
    });
    std::thread::sleep(Duration::from_millis(100));
    drop(sock);

    // Nothing staged is left behind (it used to stay, verified, for good),
    // and the updater takes the next bundle.
    let staging = env.dir().join("state/updates/staging");
    wait_until(
        "the staging dir to be empty",
        Duration::from_secs(60),
        || {
            let left: Vec<_> = std::fs::read_dir(&staging)
                .map(|r| r.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            left.is_empty().then_some(())
        },
    );
    let (code, check) = env.upload(&env.v2_bundle());
    assert_eq!(code, 200, "{check}");
}

#[test]
fn a_failure_after_the_images_loaded_puts_the_old_tag_back() {
    let pg = private_pg();
    let env = Env::new("upd-retag", &pg);
    let image_id = |r: &str| docker(&["image", "inspect", "--format", "{{.Id}}", r]);
    let old_id = image_id(&env.v1);
    // A bundle whose image carries the running tag with other content (a
    // fixed build of the same tag), and a migration that fails: the run
    // fails in `migrating`, after `docker load` moved the tag, before any
    // container was switched.
    docker(&["tag", &env.v2, &env.v1]);
    let bundle = env.bundle(
        "0.2.0",
        Some(&env.v1.clone()),
        &[("001_bad.sql", "SELECT * FROM no_such_table;\n")],
        &[],
    );
    docker(&["tag", &old_id, &env.v1]);
    assert_eq!(image_id(&env.v1), old_id);
    let s = env.apply(&bundle);
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(s["error"].as_str().unwrap().contains("001_bad.sql"), "{s}");
    // The tag is the old image's again: the next recreate runs what ran.
    assert_eq!(
        image_id(&env.v1),
        old_id,
        "the tag stayed on the bundle's image"
    );
    env.wait_app(&env.v1.clone());

    // A bundle that names v2 (a tag this box already has) but whose
    // tarball carries v3: the tag existing after the load proves nothing;
    // the run stops in loading_images and app stays on v1.
    let tar = env.dir().join("v3.tar");
    run(Command::new("docker")
        .args(["save", "-o"])
        .arg(&tar)
        .arg(&env.v3));
    let bundle = env.dir().join("v2-lie.araupdate");
    run(env
        .bundle_create("0.2.0", &bundle)
        .arg("--image-tar")
        .arg(format!("app={}={}", env.v2, tar.display())));
    let s = env.apply(&bundle);
    assert_eq!(s["state"], "rolled_back", "{s}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains(&format!("does not carry {}", env.v2)), "{err}");
    env.wait_app(&env.v1.clone());
}

#[test]
fn a_full_disk_during_the_rollback_does_not_wedge_the_updater() {
    let pg = private_pg();
    let mut mount = None;
    let env = Env::new_with("upd-wedge", &pg, |d| {
        mount = Some(common::Mount::tmpfs(&d.join("state"), "48m"));
    });
    let state = env.dir().join("state");
    let bundle = env.v2_bundle();
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    wait_until("verifying", Duration::from_secs(60), || {
        (env.status()["state"] == "verifying").then_some(())
    });
    // The state dir's disk fills up, then something critical happens: the
    // rollback cannot record a single state on disk.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=1M"])
        .arg(format!("of={}", state.join("filler").display()))
        .stderr(std::process::Stdio::null())
        .status();
    psql(
        &env.db_url,
        "INSERT INTO self_healing_events (at, event_type, severity, description, result)
         VALUES (now(), 'disk_critical', 'CRITICAL', 'disk 100 % full', 'recorded')",
    );
    // The run still ends (it used to stay in `verifying` for good, the
    // updater claimed, every upload 409 until a restart).
    let s = wait_until("the run to end", Duration::from_secs(60), || {
        let s = env.status();
        ["rolled_back", "failed"]
            .contains(&s["state"].as_str()?)
            .then_some(s)
    });
    let log = std::fs::read_to_string(env.dir().join("log/update.log")).unwrap_or_default();
    assert!(
        s["log"].to_string().contains("not recorded on disk")
            || log.contains("not recorded on disk"),
        "{s}"
    );
    // Space again: the updater takes the next bundle.
    std::fs::remove_file(state.join("filler")).unwrap();
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "the updater was given back: {check}");
    drop(env);
    drop(mount);
}

#[test]
fn a_rollback_that_fails_stops_once_with_a_critical_event() {
    let pg = private_pg();
    let mut env = Env::new("upd-fail", &pg);
    // v3 exits at once; the daemon dies as verification starts.
    let bundle = env.bundle(
        "0.2.0",
        Some(&env.v3.clone()),
        &[("001_notes.sql", "CREATE TABLE notes (id int);\n")],
        &[],
    );
    env.daemon.take();
    env.start(&[("ARASUL_TEST_CRASH_AT", "verifying")]);
    env.wait_app(&env.v1.clone());
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    env.post("/api/update/apply");
    env.wait_killed();
    // The backup is lost while the daemon is down: the rollback cannot
    // restore the database.
    let backups = env.dir().join("state/updates/backup");
    for d in std::fs::read_dir(&backups).unwrap() {
        std::fs::remove_file(d.unwrap().path().join("db.dump")).unwrap();
    }
    env.start(&[]);
    let s = env.wait_final();
    assert_eq!(s["state"], "failed", "{s}");
    assert!(
        s["error"].as_str().unwrap().contains("rollback failed"),
        "{s}"
    );
    let run_id = psql(
        &env.db_url,
        "SELECT id FROM update_runs WHERE version = '0.2.0'",
    );
    let db_url = env.db_url.clone();
    let log_file = env.dir().join("log/update.log");
    let critical = || {
        psql(
            &db_url,
            &format!(
                "SELECT count(*) FROM update_events WHERE run_id = '{run_id}' AND severity = 'CRITICAL'"
            ),
        )
    };
    assert_eq!(critical(), "1");
    let log_lines = || {
        std::fs::read_to_string(&log_file)
            .unwrap()
            .lines()
            .filter(|l| l.contains("rolling_back:"))
            .count()
    };
    let attempts = log_lines();
    assert_eq!(attempts, 1, "one rollback attempt");
    // A restart does not try again.
    env.daemon.take();
    env.start(&[]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(env.status()["state"], "failed");
    assert_eq!(log_lines(), attempts);
    assert_eq!(critical(), "1");
    assert_eq!(env.history()[0]["result"], "failed");
}

#[test]
fn self_healing_stands_aside_while_an_update_switches_a_service() {
    let pg = private_pg();
    let env = Env::new("upd-heal", &pg);
    // v2 here accepts connections and never answers: unhealthy, yet
    // running, for the whole verification window.
    let hang = format!("arasul-testrt:t{}-upd-heal-hang", std::process::id());
    variant(&hang, "TESTRT_MODE=hang");
    let _image = RemoveImage(hang.clone());
    let bundle = env.bundle("0.2.0", Some(&hang), &[], &[]);
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    wait_until(
        "app unhealthy on the new image",
        Duration::from_secs(30),
        || {
            let (_, v) = get_json(&env.cfg.url("/api/services"))?;
            let s = v["services"].as_array()?.first()?.clone();
            (s["image"] == hang.as_str() && s["state"] == "unhealthy").then_some(())
        },
    );
    let s = env.wait_final();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("not healthy within 30s"),
        "{s}"
    );
    env.wait_app(&env.v1.clone());
    // Self-healing (restart after 3 failed probes by default) never
    // touched the service while the update owned it.
    let log = std::fs::read_to_string(env.dir().join("log/self_healing.log")).unwrap_or_default();
    let acted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"service\":\"app\"") && !l.contains("\"action\":null"))
        .collect();
    assert!(
        acted.is_empty(),
        "self-healing acted during the update: {acted:?}"
    );
}

/// Removes a test image on drop (even when the test fails).
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        docker(&["rmi", "-f", &self.0]);
    }
}

#[test]
fn a_bundle_over_the_size_limit_is_refused_with_413() {
    let pg = private_pg();
    let mut env = Env::new("upd-big", &pg);
    let bundle = env.v2_bundle();
    let mut yaml = std::fs::read_to_string(env.cfg.path()).unwrap();
    yaml = yaml.replace("update:\n", "update:\n  max_bundle_bytes: 100000\n");
    std::fs::write(env.cfg.path(), yaml).unwrap();
    env.daemon.take();
    env.start(&[]);
    let (code, body) = env.upload(&bundle);
    assert_eq!(code, 413, "{body}");
    assert_eq!(body["error"]["code"], "bundle_too_large");
    let s = env.status();
    assert_eq!(
        (&s["state"], &s["pending"]),
        (&Value::from("idle"), &Value::Null)
    );
    let incoming = env.dir().join("state/updates/incoming");
    assert_eq!(
        std::fs::read_dir(&incoming).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left of the upload"
    );
}

#[test]
fn a_critical_self_healing_event_while_verifying_rolls_the_update_back() {
    let pg = private_pg();
    let env = Env::new("upd-crit", &pg);
    let bundle = env.v2_bundle();
    let (code, check) = env.upload(&bundle);
    assert_eq!(code, 200, "{check}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    // Verification lasts at least the 2 s stability window.
    wait_until("verifying", Duration::from_secs(60), || {
        (env.status()["state"] == "verifying").then_some(())
    });
    psql(
        &env.db_url,
        "INSERT INTO self_healing_events (at, event_type, severity, description, result)
         VALUES (now(), 'disk_critical', 'CRITICAL', 'disk 99 % full', 'recorded');
         INSERT INTO audit_log (at, actor, action, ip, detail)
         VALUES (now(), 'admin', 'logout_all', '192.0.2.1', '{\"detail\": \"while verifying\"}')",
    );
    let s = env.wait_final();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(
        s["error"].as_str().unwrap().contains("disk_critical"),
        "{s}"
    );
    env.wait_app(&env.v1.clone());
    assert!(!env.table_exists("notes"));
    // What the box wrote while verifying is its history: the rollback puts
    // the schema and the bundle's data back, not the history (it used to
    // erase every row written since the backup).
    assert_eq!(
        psql(
            &env.db_url,
            "SELECT count(*) FROM self_healing_events WHERE description = 'disk 99 % full'"
        ),
        "1"
    );
    assert_eq!(
        psql(
            &env.db_url,
            "SELECT count(*) FROM audit_log WHERE detail->>'detail' = 'while verifying'"
        ),
        "1"
    );
    // The sequences moved past the carried rows: new rows still go in.
    psql(
        &env.db_url,
        "INSERT INTO self_healing_events (at, event_type, severity, description, result)
         VALUES (now(), 'note', 'INFO', 'after the rollback', 'recorded')",
    );
}

#[test]
fn a_bundled_config_that_would_not_load_is_refused_at_upload_and_changes_nothing() {
    let pg = private_pg();
    let env = Env::new("upd-badcfg", &pg);
    let main_before = std::fs::read_to_string(env.cfg.path()).unwrap();
    // What `check-config` refuses: a listen address that is none, and a
    // service with a key the catalog does not know.
    let bad_daemon = env.bundle(
        "0.2.0",
        None,
        &[],
        &[(
            "arasuld.yaml",
            "logging:\n  level: debug\nhttp:\n  listen: not-an-address\n",
        )],
    );
    let (code, v) = env.upload(&bad_daemon);
    assert_eq!(code, 422, "{v}");
    assert_eq!(v["error"]["code"], "invalid_config", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("50-update.yaml (from the update bundle)"),
        "{msg}"
    );
    assert!(msg.contains("http.listen"), "{msg}");
    let bad_catalog = env.dir().join("bad-catalog.araupdate");
    std::fs::rename(
        env.bundle(
            "0.2.1",
            None,
            &[],
            &[(
                "services.yaml",
                "services:\n- name: app\n  restart_policy: always\n",
            )],
        ),
        &bad_catalog,
    )
    .unwrap();
    let (code, v) = env.upload(&bad_catalog);
    assert_eq!(code, 422, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("restart_policy"),
        "{v}"
    );
    // Nothing was staged, installed or changed.
    assert_eq!(env.status()["state"], "idle", "{}", env.status());
    assert_eq!(
        std::fs::read_to_string(env.cfg.path()).unwrap(),
        main_before
    );
    assert!(!env.dir().join("arasuld.yaml.d").exists());
    assert!(!env.dir().join("services.yaml.d").exists());
    let staged = std::fs::read_dir(env.dir().join("state/updates/staging"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(staged, 0, "a refused bundle left a staging dir");
}

#[test]
fn bundled_configs_go_to_drop_ins_take_effect_by_reload_and_a_bad_one_is_rolled_back() {
    let pg = private_pg();
    let mut env = Env::new("upd-dropin", &pg);
    let main_before = std::fs::read_to_string(env.cfg.path()).unwrap();
    let catalog_before = std::fs::read_to_string(env.dir().join("services.yaml")).unwrap();
    // v2: the daemon logs at debug, and app gets an env var its /api/version
    // answers with, by drop-ins; no image, no restart of the daemon.
    let v2 = env.bundle(
        "0.2.0",
        None,
        &[],
        &[
            ("arasuld.yaml", "logging:\n  level: debug\n"),
            (
                "services.yaml",
                "services:\n- name: app\n  env:\n    TESTRT_VERSION: 2.0.0-env\n",
            ),
        ],
    );
    let s = env.apply(&v2);
    assert_eq!(s["state"], "done", "{s}");
    let log = s["log"].to_string();
    assert!(log.contains("logging.level"), "{log}");
    assert!(log.contains("services: app: changed"), "{log}");
    assert_eq!(env.app_version(), "2.0.0-env");
    // The conffiles are as they were; the drop-ins hold the bundle's files.
    assert_eq!(
        std::fs::read_to_string(env.cfg.path()).unwrap(),
        main_before
    );
    assert_eq!(
        std::fs::read_to_string(env.dir().join("services.yaml")).unwrap(),
        catalog_before
    );
    let dropin = env.dir().join("services.yaml.d/50-update.yaml");
    assert!(
        std::fs::read_to_string(&dropin)
            .unwrap()
            .contains("2.0.0-env")
    );
    assert!(env.dir().join("arasuld.yaml.d/50-update.yaml").exists());

    // v3: a catalog change that crashes app: verified, rolled back, and
    // the v2 drop-in and app on it are back.
    let v3 = env.bundle(
        "0.3.0",
        None,
        &[],
        &[(
            "services.yaml",
            "services:\n- name: app\n  env:\n    TESTRT_MODE: exit-now\n",
        )],
    );
    let s = env.apply(&v3);
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(s["error"].as_str().unwrap().contains("app is down"), "{s}");
    assert!(
        std::fs::read_to_string(&dropin)
            .unwrap()
            .contains("2.0.0-env")
    );
    assert_eq!(env.app_version(), "2.0.0-env");

    // A restart reads the same: main file plus drop-ins.
    env.daemon.take();
    env.start(&[]);
    assert_eq!(env.app_version(), "2.0.0-env");
    let (_, check) = get_json_auth(&env.cfg.url("/api/update/status"), &env.token).unwrap();
    assert_eq!(check["installed_version"], "0.2.0", "{check}");
}

#[test]
fn a_bundled_package_goes_to_the_root_helper_which_checks_it_again() {
    use std::io::Write as _;
    let pg = private_pg();
    let mut env = Env::new_with("upd-pkg", &pg, |d| {
        let cfg = d.join("arasuld.yaml");
        let yaml = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            yaml.replace("update:\n", "update:\n  package_timeout: 20s\n"),
        )
        .unwrap();
    });
    // A signed bundle with an image and a package. The daemon switches the
    // image, then asks the root helper (here: `arasuld install-package`
    // run by the test, as the path unit runs it) for the package.
    let deb = env.dir().join("arasuld_0.2.0_amd64.deb");
    std::fs::write(&deb, b"!<arch>\n").unwrap();
    let bundle = env.dir().join("pkg.araupdate");
    run(env
        .bundle_create("0.2.0", &bundle)
        .arg("--image")
        .arg(format!("app={}", env.v2))
        .arg("--package")
        .arg(&deb));
    let (code, v) = env.upload(&bundle);
    assert_eq!(code, 200, "{v}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    let request = env.dir().join("state/updates/package/request.json");
    let req: Value = wait_until("the package request", Duration::from_secs(60), || {
        serde_json::from_slice(&std::fs::read(&request).ok()?).ok()
    });
    assert_eq!(req["action"], "install", "{req}");
    assert_eq!(req["version"], "0.2.0", "{req}");
    // The daemon's user could have changed the staged package since it was
    // verified: the helper hashes its own copy against the signed manifest.
    let staged = Path::new(req["staging_dir"].as_str().unwrap())
        .join("payload/package-arasuld_0.2.0_amd64.deb");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap_or_else(|e| panic!("{}: {e}", staged.display()))
        .write_all(b"tampered")
        .unwrap();
    let store = env.dir().join("helper-store");
    let helper = |keys: &Path| {
        Command::new(bin())
            .args(["install-package", "--state-dir"])
            .arg(env.dir().join("state"))
            .arg("--keys-dir")
            .arg(keys)
            .arg("--store")
            .arg(&store)
            .output()
            .unwrap()
    };
    let keys = env.dir().join("keys");
    let out = helper(&keys);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("does not match the signed manifest"),
        "{said}"
    );
    assert!(!request.exists(), "the helper leaves the request taken");
    let s = env.wait_final();
    assert_eq!(s["state"], "rolled_back", "{s}");
    let err = s["error"].as_str().unwrap();
    assert!(err.contains("the package was not installed"), "{err}");
    assert!(err.contains("does not match the signed manifest"), "{err}");
    env.wait_app(&env.v1.clone());
    assert_eq!(s["installed_version"], "0.1.0", "{s}");

    // Keys another user could have written (the daemon's config dir is
    // its own) are not trusted for an install as root.
    let (code, v) = env.upload(&bundle);
    assert_eq!(code, 200, "{v}");
    let (code, _) = env.post("/api/update/apply");
    assert_eq!(code, 202);
    wait_until("the package request", Duration::from_secs(60), || {
        request.exists().then_some(())
    });
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = helper(&keys);
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o755)).unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("may be changed by another user"), "{said}");
    let s = env.wait_final();
    assert_eq!(s["state"], "rolled_back", "{s}");
    assert!(
        s["error"]
            .as_str()
            .unwrap()
            .contains("may be changed by another user"),
        "{s}"
    );

    // A record older than the running binary (the .deb upgraded with apt)
    // is corrected at start; one newer (a bundle without a package) stays.
    // The state file is the one the updater wrote for the runs above, with
    // only its recorded version changed.
    let state = env.dir().join("state/update_state.json");
    for (recorded, shown) in [("0.0.9", "0.1.0"), ("0.3.0", "0.3.0")] {
        env.daemon.take();
        let mut written: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        assert_eq!(written["run"]["state"], "rolled_back", "{written}");
        written["installed_version"] = recorded.into();
        std::fs::write(&state, serde_json::to_vec_pretty(&written).unwrap()).unwrap();
        env.start(&[]);
        assert_eq!(
            env.status()["installed_version"],
            shown,
            "recorded {recorded}"
        );
    }
}

/// Issue 16: a box that never sees the internet gets its model from a
/// stick. The model is in the store of one runtime (the source: real blobs
/// whose names are their sha256, a manifest as Ollama writes it), which
/// lists it and answers with it. `arasuld bundle create --model` builds a
/// signed bundle from that store; the box (its own runtime, on its own
/// network, pulls off) verifies and installs it as a provisioning bundle,
/// and its runtime then lists the model and answers with it. A second
/// bundle whose model tar was corrupted after signing is refused at upload.
#[test]
fn a_model_bundle_from_one_runtime_is_installed_on_an_offline_box() {
    let pg = private_pg();
    let env = Env::new_with("models", &pg, |d| {
        let path = d.join("services.yaml");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "- name: app\n",
            &format!(
                "- name: app\n  role: llm\n  volumes: [\"{}/store-box:/root/.ollama\"]\n",
                d.display()
            ),
        );
        std::fs::write(&path, text).unwrap();
    });
    let d = env.dir().to_path_buf();

    // ---- The source runtime and the model in its store.
    let store = d.join("store-src/models");
    let blob = |content: &[u8]| -> String {
        let hex = hex::encode(ring::digest::digest(&ring::digest::SHA256, content).as_ref());
        std::fs::create_dir_all(store.join("blobs")).unwrap();
        std::fs::write(store.join(format!("blobs/sha256-{hex}")), content).unwrap();
        format!("sha256:{hex}")
    };
    let weights: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let weights_digest = blob(&weights);
    let template = blob(b"{{ .Prompt }}");
    let config = blob(br#"{"model_format":"gguf","model_family":"llama"}"#);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config, "size": 46},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": weights_digest, "size": weights.len()},
            {"mediaType": "application/vnd.ollama.image.template", "digest": template, "size": 13},
        ],
    });
    let mpath = store.join("manifests/registry.ollama.ai/library/tinyllama/1b");
    std::fs::create_dir_all(mpath.parent().unwrap()).unwrap();
    std::fs::write(&mpath, manifest.to_string()).unwrap();
    let project = env._project.name.clone();
    let source = format!("{project}-source");
    docker(&[
        "run",
        "-d",
        "--name",
        &source,
        "--label",
        &format!("io.arasul.project={project}"),
        "-v",
        &format!("{}/store-src:/root/.ollama", d.display()),
        IMAGE,
    ]);
    let source_ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &source,
    ]);
    let source_url = format!("http://{}:11434", source_ip.trim());
    let listed = |base: &str| -> bool {
        get_json(&format!("{base}/api/tags")).is_some_and(|(_, v)| {
            v["models"]
                .as_array()
                .is_some_and(|m| m.iter().any(|m| m["name"] == "tinyllama:1b"))
        })
    };
    wait_until(
        "the source runtime lists the model",
        Duration::from_secs(30),
        || listed(&source_url).then_some(()),
    );

    // ---- The box does not have it.
    let box_url = {
        let (_, v) = get_json_auth(&env.cfg.url("/api/services/app"), &env.token).unwrap();
        format!("http://{}:11434", v["service"]["address"].as_str().unwrap())
    };
    assert!(!listed(&box_url), "the box starts without the model");

    // ---- Bundle it from the source's store (a provisioning bundle: same version).
    let out = d.join("models.araupdate");
    let version = env.status()["installed_version"]
        .as_str()
        .unwrap()
        .to_string();
    let mut cmd = env.bundle_create(&version, &out);
    cmd.args(["--model", "llm=tinyllama:1b", "--model-store"])
        .arg(&store);
    let printed = run(&mut cmd);
    eprintln!("{printed}");
    let inspect = run(Command::new(bin()).args(["bundle", "inspect"]).arg(&out));
    assert!(inspect.contains("\"name\": \"tinyllama:1b\""), "{inspect}");

    // A copy whose model tar was changed after signing: refused at upload.
    let mut bad = std::fs::read(&out).unwrap();
    let at = bad.len() - 600_000;
    bad[at] ^= 0x01;
    let bad_path = d.join("bad-models.araupdate");
    std::fs::write(&bad_path, &bad).unwrap();
    let (code, v) = env.upload(&bad_path);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (400, Some("payload_mismatch")),
        "{v}"
    );
    assert!(
        !d.join("store-box/models/manifests").exists(),
        "nothing installed from the bad one"
    );

    // A store too small for the model: refused with the numbers before a
    // byte is written, and rolled back.
    {
        let _small = common::Mount::tmpfs(&d.join("store-box/models"), "1m");
        let fin = env.apply(&out);
        assert_eq!(fin["state"], "rolled_back", "{fin}");
        let err = fin["error"].as_str().unwrap_or_default();
        assert!(
            err.contains("tinyllama:1b needs 3.0 MB of disk space for its download, but the model store has 1.0 MB free"),
            "{err}"
        );
    }
    assert!(!listed(&box_url), "nothing installed from the refused run");

    let t0 = std::time::Instant::now();
    let fin = env.apply(&out);
    assert_eq!(fin["state"], "done", "{fin}");
    eprintln!(
        "model bundle of {} bytes applied in {:?}",
        std::fs::metadata(&out).unwrap().len(),
        t0.elapsed()
    );
    assert!(
        listed(&box_url),
        "the box's runtime lists the installed model"
    );
    assert_eq!(
        std::fs::read(d.join(format!(
            "store-box/models/blobs/{}",
            weights_digest.replace(':', "-")
        )))
        .unwrap(),
        weights,
        "the weights arrived byte for byte"
    );
    // It answers, through the box's own API.
    let (code, v) = common::post_json_auth(
        &env.cfg.url("/api/llm/chat"),
        &env.token,
        serde_json::json!({"model": "tinyllama:1b", "messages": [{"role": "user", "content": "Hello offline"}]}),
    );
    assert_eq!(code, 200, "{v}");
    assert!(
        v["message"]["content"]
            .as_str()
            .unwrap()
            .contains("tinyllama:1b"),
        "{v}"
    );
    docker(&["rm", "-f", &source]);
}
