//! The self-healing worker on the real Docker engine with the test runtime
//! image: the supervisor and the healing loop run in-process with a fast
//! config (probes every 300 ms, backoff from 1 s, a 60 s window), so the
//! ladder plays out in seconds. Events are checked in `self_healing.log` and,
//! where a database is given, in Postgres.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use arasuld::config::{DatabaseConfig, Secret};
use arasuld::db::{Db, StartRecord};
use arasuld::docker::{ServiceState, SupervisorHandle};
use arasuld::healing::HealingConfig;
use arasuld::healing::worker::{HealingDeps, HealingRecord, LOG_FILE};
use arasuld::tasks::{WorkerKind, Workers};
use common::docker::{IMAGE, Project, SOCKET, spawn_supervisor};
use common::{PrivatePostgres, free_port, wait_until};

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";

/// A fast ladder: restart, re-check after 500 ms, stop + start, then
/// restarts 1 s, 2 s, 4 s apart; more than 5 in 60 s → failed.
fn fast_healing() -> HealingConfig {
    let mut c = HealingConfig {
        tick: Duration::from_secs(1),
        ..Default::default()
    };
    c.services.health_failures = 2;
    c.services.recheck_after = Duration::from_millis(500);
    c.services.backoff_initial = Duration::from_secs(1);
    c.services.backoff_max = Duration::from_secs(4);
    c.services.backoff_reset_after = Duration::from_secs(60);
    c.services.max_restarts = 5;
    c.services.restart_window = Duration::from_secs(60);
    // Only category A here: no database or Docker alarms in these tests.
    c.critical.db_lost_after = Duration::from_secs(3600);
    c.critical.docker_lost_after = Duration::from_secs(3600);
    c
}

/// Fields drop in order: the runtime (and with it the supervisor and the
/// healing loop) goes first, so nothing recreates a container after the
/// Project guard removed them, even when a test fails half-way.
struct Env {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    project: Project,
}

struct Running {
    workers: Workers,
    h: SupervisorHandle,
    db: Db,
}

impl Env {
    fn new(tag: &str) -> Env {
        Env {
            project: Project::new(tag),
            dir: tempfile::tempdir().unwrap(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// One service `app` on the test runtime, with `extra` YAML added.
    fn catalog(&self, extra: &str) -> arasuld::docker::Catalog {
        let text = format!(
            r#"project: {p}
network: {n}
services:
- name: app
  image: {IMAGE}
  role: other
  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 500ms, retries: 2, start_period: 2s}}
{extra}"#,
            p = self.project.name,
            n = self.project.network(),
        );
        arasuld::docker::catalog::parse("test", &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Supervisor, database connector (when `db_url` is a real server) and
    /// the healing worker, on this test's runtime.
    fn start(&self, catalog: arasuld::docker::Catalog, db_url: &str) -> Running {
        let _guard = self.rt.enter();
        let (workers, h) = spawn_supervisor(&self.dir.path().join("state"), catalog, SOCKET);
        let db_cfg = DatabaseConfig {
            url: Secret::new(db_url.to_string()),
            min_connections: 0,
            max_connections: 4,
            connect_timeout: Duration::from_secs(2),
            retry_max: Duration::from_millis(500),
            check_interval: Duration::from_millis(300),
            ..Default::default()
        };
        let db = Db::new(&db_cfg).unwrap();
        if db_url != CLOSED_DB {
            let (d, cfg) = (db.clone(), db_cfg.clone());
            let record = StartRecord {
                started_at: chrono::Utc::now(),
                version: "test".into(),
                build_hash: "test".into(),
            };
            workers.spawn("db-connector", WorkerKind::Core, move |ctx| {
                let (d, cfg, record) = (d.clone(), cfg.clone(), record.clone());
                async move { d.run_connector(ctx, cfg, record).await }
            });
        }
        arasuld::healing::worker::spawn(
            &workers,
            HealingDeps {
                config: fast_healing(),
                log_dir: self.log_dir(),
                services: h.clone(),
                metrics: None,
                db: db.clone(),
            },
        );
        Running { workers, h, db }
    }

    fn stop(&self, r: Running) {
        let stuck = self.rt.block_on(r.workers.shutdown(Duration::from_secs(5)));
        assert!(stuck.is_empty(), "workers did not stop: {stuck:?}");
    }

    fn wait_state(&self, h: &SupervisorHandle, want: ServiceState, timeout: Duration) {
        wait_until(&format!("app to be {want:?}"), timeout, || {
            (h.service("app")?.state == want).then_some(())
        });
    }

    /// Every record in `self_healing.log`, oldest first.
    fn logged(&self) -> Vec<HealingRecord> {
        let text = std::fs::read_to_string(self.log_dir().join(LOG_FILE)).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every line of the log is a record"))
            .collect()
    }

    fn logged_of(&self, event_type: &str) -> Vec<HealingRecord> {
        let all = self.logged();
        all.into_iter()
            .filter(|r| r.event_type == event_type)
            .collect()
    }

    fn db_events(&self, db: &Db) -> Vec<HealingRecord> {
        self.rt
            .block_on(arasuld::db::healing::all_events(db.pool()))
            .unwrap_or_default()
    }

    /// POSTs to the test runtime's control endpoint inside the container.
    fn testrt_post(&self, h: &SupervisorHandle, path: &str) {
        let s = h.service("app").unwrap();
        let url = format!("http://{}:11434{path}", s.address.unwrap());
        self.rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            c.post(&url)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .unwrap();
        });
    }
}

fn private_pg() -> PrivatePostgres {
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    pg
}

#[test]
fn killed_container_is_restarted_and_event_recorded() {
    let env = Env::new("heal-kill");
    let pg = private_pg();
    let r = env.start(env.catalog(""), &pg.url());
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    wait_until("database up", Duration::from_secs(20), || {
        r.db.status().migrated.then_some(())
    });
    let before = r.h.service("app").unwrap().restart_count;

    let t0 = Instant::now();
    common::docker::docker(&["kill", &env.project.container("app")]);
    wait_until("a restart", Duration::from_secs(15), || {
        (r.h.service("app")?.restart_count > before).then_some(())
    });
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(15));
    let recovered = t0.elapsed();
    eprintln!("killed → healthy again in {recovered:?}");

    let restarts = env.logged_of("service_restart");
    assert_eq!(restarts.len(), 1, "{:?}", env.logged());
    let rec = &restarts[0];
    assert_eq!(rec.service.as_deref(), Some("app"));
    assert_eq!(rec.action.as_deref(), Some("restart_service"));
    assert_eq!(rec.result, "ok");
    assert_eq!(rec.severity, "WARNING");
    assert!(rec.duration_ms.is_some());
    assert_eq!(env.logged_of("service_down").len(), 1);
    // The same in Postgres.
    let in_db = wait_until("the events in Postgres", Duration::from_secs(10), || {
        let ev = env.db_events(&r.db);
        ev.iter()
            .any(|e| e.event_type == "service_recovered")
            .then_some(ev)
    });
    let types: Vec<&str> = in_db.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        types,
        ["service_down", "service_restart", "service_recovered"],
        "{in_db:?}"
    );
    env.stop(r);
}

#[test]
fn running_but_unhealthy_container_is_restarted() {
    let env = Env::new("heal-hang");
    let r = env.start(env.catalog(""), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    let id = r.h.service("app").unwrap().container_id.unwrap();
    env.testrt_post(&r.h, "/testrt/hang");
    // Docker alone never restarts it: it still runs, only the probes fail.
    wait_until("a restart", Duration::from_secs(20), || {
        (r.h.service("app")?.restart_count > 0).then_some(())
    });
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(20));
    assert_eq!(
        r.h.service("app").unwrap().container_id.unwrap(),
        id,
        "restarted in place"
    );
    let restarts = env.logged_of("service_restart");
    assert_eq!(restarts.len(), 1, "{:?}", env.logged());
    assert_eq!(restarts[0].result, "ok");
    let down = env.logged_of("service_down");
    assert!(down[0].description.contains("Unhealthy"), "{down:?}");
    env.stop(r);
}

#[test]
fn crash_loop_backs_off_then_is_marked_failed_with_a_critical_event() {
    let env = Env::new("heal-loop");
    let r = env.start(env.catalog("  env: {TESTRT_MODE: exit-now}\n"), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Failed, Duration::from_secs(45));
    let failed = env.logged_of("service_failed");
    assert_eq!(failed.len(), 1, "{:?}", env.logged());
    assert_eq!(failed[0].severity, "CRITICAL");
    assert_eq!(failed[0].action.as_deref(), Some("mark_failed"));
    assert_eq!(failed[0].result, "ok");

    // ≤ 6 restarts (restart or stop + start) in the window.
    let all = env.logged();
    let attempts: Vec<&HealingRecord> = all
        .iter()
        .filter(|e| ["service_restart", "service_stop_start"].contains(&e.event_type.as_str()))
        .collect();
    assert!(
        (2..=6).contains(&attempts.len()),
        "{} attempts: {attempts:?}",
        attempts.len()
    );
    // Plain restarts come further and further apart (1 s, 2 s, 4 s, 4 s).
    let at: Vec<i64> = all
        .iter()
        .filter(|e| e.event_type == "service_restart")
        .map(|e| e.at.timestamp_millis())
        .collect();
    let gaps: Vec<i64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    eprintln!("gaps between restarts (ms): {gaps:?}");
    assert!(gaps.len() >= 3, "{gaps:?}");
    // Each gap is the backoff plus the time the restart itself took, which
    // varies by a few hundred ms under load: allow 20 % of slack at the cap.
    assert!(
        gaps.windows(2).all(|w| w[1] + w[0] / 5 >= w[0]),
        "delays must not shrink: {gaps:?}"
    );
    assert!(gaps.last().unwrap() > &(gaps[0] + 1000), "{gaps:?}");
    // The escalation to C fired under backoff.
    assert!(
        all.iter()
            .any(|e| e.event_type == "service_escalated" && e.severity == "CRITICAL")
    );

    // Failed means left alone.
    let count = r.h.service("app").unwrap().restart_count;
    let n = all.len();
    std::thread::sleep(Duration::from_secs(3));
    let s = r.h.service("app").unwrap();
    assert_eq!(s.state, ServiceState::Failed);
    assert_eq!(s.restart_count, count);
    assert!(
        !env.logged()[n..]
            .iter()
            .any(|e| e.event_type == "service_restart"),
        "restarted after being marked failed"
    );

    // A start through the API clears the mark and healing starts over.
    env.rt.block_on(r.h.start("app")).unwrap();
    wait_until("the mark cleared", Duration::from_secs(10), || {
        (!env.logged_of("failed_cleared").is_empty()).then_some(())
    });
    env.stop(r);
}

#[test]
fn a_service_stopped_by_the_admin_is_never_restarted() {
    let env = Env::new("heal-stop");
    let r = env.start(env.catalog(""), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    env.rt.block_on(r.h.stop("app")).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let s = r.h.service("app").unwrap();
    assert_eq!(s.state, ServiceState::Stopped);
    assert_eq!(s.restart_count, 0);
    assert!(env.logged().is_empty(), "{:?}", env.logged());
    env.stop(r);
}

#[test]
fn postgres_down_during_healing_actions_happen_and_events_are_written_later() {
    let env = Env::new("heal-pgdown");
    let mut pg = private_pg();
    let r = env.start(env.catalog(""), &pg.url());
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    wait_until("database up", Duration::from_secs(20), || {
        r.db.status().migrated.then_some(())
    });
    pg.stop();
    wait_until("database seen down", Duration::from_secs(10), || {
        (!r.db.status().up).then_some(())
    });

    common::docker::docker(&["kill", &env.project.container("app")]);
    wait_until("a restart", Duration::from_secs(15), || {
        (r.h.service("app")?.restart_count > 0).then_some(())
    });
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(15));
    let logged = env.logged();
    assert!(
        logged.iter().any(|e| e.event_type == "service_restart"),
        "{logged:?}"
    );

    pg.start();
    let in_db = wait_until(
        "the buffered events in Postgres",
        Duration::from_secs(20),
        || {
            let ev = env.db_events(&r.db);
            (ev.len() >= logged.len()).then_some(ev)
        },
    );
    // Written in the order they were recorded, with their original times.
    let pairs: Vec<(&str, &str, i64)> = in_db
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.description.as_str(),
                e.at.timestamp_millis(),
            )
        })
        .collect();
    let want: Vec<(&str, &str, i64)> = logged
        .iter()
        .map(|e| {
            (
                e.event_type.as_str(),
                e.description.as_str(),
                e.at.timestamp_millis(),
            )
        })
        .collect();
    assert_eq!(&pairs[..want.len()], &want[..]);
    env.stop(r);
}

#[test]
fn the_api_lists_events_with_filters_and_reports_the_loop() {
    use common::{Daemon, NotifySocket, TestConfig, admin_token, get_json_auth};
    let mut pg = private_pg();
    let cfg = TestConfig::new(&pg.url(), "");
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let token = admin_token(&cfg);
    let get = |path: &str| get_json_auth(&cfg.url(path), &token).unwrap();

    // Unauthenticated: refused like every admin route.
    assert_eq!(
        common::get_json(&cfg.url("/api/self-healing/status"))
            .unwrap()
            .0,
        401
    );
    let (status, body) = get("/api/self-healing/status");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], true);
    assert_eq!(body["loop_status"], "healthy", "{body}");
    assert!(body["heartbeat_age_ms"].as_u64().unwrap() < 20_000);
    assert_eq!(body["failed_services"], serde_json::json!([]));

    wait_until("database up and migrated", Duration::from_secs(30), || {
        let (_, p) = get("/api/database/pool");
        (p["up"] == true && p["migrated"] == true).then_some(())
    });
    // Seed the trail the way the worker writes it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        let rec = |i: i64, event_type: &str, severity: &str| HealingRecord {
            id: None,
            at: chrono::Utc::now() - chrono::Duration::seconds(100 - i),
            event_type: event_type.into(),
            severity: severity.into(),
            category: Some("A".into()),
            service: Some("app".into()),
            description: format!("event {i}"),
            action: None,
            result: "recorded".into(),
            duration_ms: None,
        };
        let recs = vec![
            rec(1, "service_down", "WARNING"),
            rec(2, "service_restart", "WARNING"),
            rec(3, "service_failed", "CRITICAL"),
        ];
        arasuld::db::healing::insert_events(&pool, &recs)
            .await
            .unwrap();
        pool.close().await;
    });

    let (status, body) = get("/api/self-healing/events");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 3);
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["service_failed", "service_restart", "service_down"]);
    let (_, body) = get("/api/self-healing/events?severity=critical");
    assert_eq!(body["total"], 1);
    assert_eq!(body["events"][0]["description"], "event 3");
    let (_, body) = get("/api/self-healing/events?event_type=service_down");
    assert_eq!(body["events"][0]["description"], "event 1");
    let (_, body) = get("/api/self-healing/events?limit=1&offset=1");
    assert_eq!(body["events"].as_array().unwrap().len(), 1);
    assert_eq!(body["events"][0]["event_type"], "service_restart");
    let since = (chrono::Utc::now() - chrono::Duration::seconds(98))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (_, body) = get(&format!("/api/self-healing/events?since={since}"));
    assert_eq!(body["total"], 2, "{body}");
    assert_eq!(get("/api/self-healing/events?severity=LOUD").0, 400);
    assert_eq!(get("/api/self-healing/events?limit=0").0, 400);
    let (_, body) = get("/api/self-healing/status");
    assert_eq!(body["last_event"]["event_type"], "service_failed", "{body}");

    pg.stop();
    wait_until(
        "the events listing to say 503",
        Duration::from_secs(30),
        || (get("/api/self-healing/events").0 == 503).then_some(()),
    );
}
