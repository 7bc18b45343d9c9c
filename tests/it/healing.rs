//! The self-healing worker on the real Docker engine with the test runtime
//! image: the supervisor and the healing loop run in-process with a fast
//! config (probes every 300 ms, backoff from 1 s, a 60 s window), so the
//! ladder plays out in seconds. Events are checked in `self_healing.log` and,
//! where a database is given, in Postgres.

use crate::common;
mod notify;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arasuld::config::{DatabaseConfig, Secret};
use arasuld::db::Db;
use arasuld::docker::{ServiceState, SupervisorHandle};
use arasuld::healing::HealingConfig;
use arasuld::healing::record::{Category, EventKind, HealingRecord, LOG_FILE, Severity};
use arasuld::healing::worker::HealingDeps;
use arasuld::metrics::MetricsHub;
use arasuld::metrics::collect::Sample;
use arasuld::tasks::Workers;
use common::docker::{IMAGE, Project, SOCKET, spawn_supervisor};
use common::{PrivatePostgres, free_port, wait_until};

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";

/// Daemon config for API tests that count events: the disk levels only at
/// 100 %, so the daemon's own loop records nothing about this box's disk.
const QUIET_DISK: &str = "healing:\n  disk: {warn_percent: 100, cleanup_percent: 100, critical_percent: 100, reboot_percent: 100}\n";

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
    /// Where the healing worker's alerts go (detached unless a test attaches it).
    notify: arasuld::notify::Notifier,
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
            notify: arasuld::notify::Notifier::detached(),
            dir: tempfile::tempdir().unwrap(),
            rt: tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// One service `app` on the test runtime, with `extra` YAML added.
    fn catalog(&self, extra: &str) -> arasuld::docker::Catalog {
        self.catalog_as("other", extra)
    }

    /// `catalog` with the service in `role` (e.g. `llm`).
    fn catalog_as(&self, role: &str, extra: &str) -> arasuld::docker::Catalog {
        self.catalog_probed(
            role,
            "interval: 300ms, timeout: 500ms, retries: 2, start_period: 2s",
            extra,
        )
    }

    /// `catalog_as` with the probe's timing (`interval: …, timeout: …`).
    fn catalog_probed(&self, role: &str, timing: &str, extra: &str) -> arasuld::docker::Catalog {
        let text = format!(
            r#"project: {p}
network: {n}
services:
- name: app
  image: {IMAGE}
  role: {role}
  health: {{http: {{port: 11434, path: /api/version}}, {timing}}}
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
        self.start_with(catalog, db_url, fast_healing(), None)
    }

    /// `start` with a healing config and a metrics hub the test publishes to.
    fn start_with(
        &self,
        catalog: arasuld::docker::Catalog,
        db_url: &str,
        config: HealingConfig,
        metrics: Option<MetricsHub>,
    ) -> Running {
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
            arasuld::db::spawn_connector(&workers, &db, &db_cfg, chrono::Utc::now());
        }
        arasuld::healing::worker::spawn(
            &workers,
            HealingDeps {
                config,
                log_dir: self.log_dir(),
                services: h.clone(),
                metrics,
                db: db.clone(),
                state_dir: self.dir.path().join("state"),
                update: arasuld::update::UpdateActivity::new(),
                metrics_retention: Duration::from_secs(7 * 24 * 3600),
                proc_root: PathBuf::from("/proc"),
                live: None,
                notify: self.notify.clone(),
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

    /// A request to the test runtime inside the container; the JSON answer.
    fn testrt(
        &self,
        h: &SupervisorHandle,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> serde_json::Value {
        let s = h.service("app").unwrap();
        let url = format!("http://{}:11434{path}", s.address.unwrap());
        self.rt.block_on(async {
            let c = reqwest::Client::builder().no_proxy().build().unwrap();
            let mut req = c.request(method, &url).timeout(Duration::from_secs(10));
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            resp.json().await.unwrap_or(serde_json::Value::Null)
        })
    }

    /// `GET /api/system/status` of a router around this test's supervisor.
    fn system_status(&self, h: &SupervisorHandle, db: &Db) -> serde_json::Value {
        use tower::ServiceExt;
        let _guard = self.rt.enter();
        let mut config = common::offline_config();
        config.paths.log_dir = self.log_dir();
        let auth = Arc::new(common::fast_auth(self.dir.path()));
        let workers = Workers::new((&config.workers).into());
        let mut shared = (*common::app_state(config, auth, workers, h.clone())).clone();
        shared.db = db.clone();
        let state = arasuld::state::AppState::new(shared);
        // A calm box otherwise: the restart is the only reason.
        state.metrics.publish(sample(10.0, 40.0, 10.0, false));
        self.rt.block_on(async {
            let req = axum::http::Request::get("/api/system/status")
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = arasuld::api::router(state).oneshot(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice(&body).unwrap()
        })
    }

    fn stopped_file(&self) -> Vec<String> {
        std::fs::read(self.dir.path().join("state/services-stopped.json"))
            .ok()
            .map(|b| serde_json::from_slice(&b).unwrap())
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

    // The status header says WARNING for the next 10 minutes, and why.
    let status = env.system_status(&r.h, &r.db);
    assert_eq!(status["level"], "WARNING", "{status}");
    assert_eq!(status["reasons"].as_array().unwrap().len(), 1, "{status}");
    let reason = &status["reasons"][0];
    assert_eq!(reason["code"], "service_restarted", "{status}");
    assert_eq!(
        reason["message"],
        "The app service was restarted less than a minute ago by self-healing: \
         the container is not running (exited or removed).",
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

/// The LLM probe as shipped (assets/services.yaml) leaves a runtime that is
/// busy generating alone, even starved of CPU, and restarts a hung one: a
/// generation streams for three probe intervals with no restart and no
/// unhealthy moment, then the runtime hangs and is restarted and healthy.
#[test]
fn with_the_shipped_llm_probe_a_generating_runtime_is_left_alone_and_a_hung_one_restarted() {
    let shipped = arasuld::docker::catalog::parse(
        "assets/services.yaml",
        include_str!("../../assets/services.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let llm = shipped
        .services
        .iter()
        .find(|s| s.role == arasuld::docker::catalog::Role::Llm)
        .expect("the shipped catalog has an llm service");
    let probe = llm.health.as_ref().expect("the llm service is probed");
    let timing = format!(
        "interval: {}ms, timeout: {}ms, retries: {}, start_period: 5s",
        probe.interval.as_millis(),
        probe.timeout.as_millis(),
        probe.retries
    );
    // 15 tokens (the test runtime answers with ~20) spread over three
    // probe intervals, on a tenth of a core.
    let busy_for = probe.interval * 3;
    let tokens = 15;
    let extra = format!(
        "  cpu_limit: 0.1\n  env: {{TESTRT_TOKEN_DELAY_MS: \"{}\"}}\n",
        (busy_for / tokens).as_millis()
    );
    let env = Env::new("heal-busy");
    let r = env.start(env.catalog_probed("llm", &timing, &extra), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    let addr = r.h.service("app").unwrap().address.unwrap();

    let generation = env.rt.spawn(async move {
        let started = Instant::now();
        let sent = reqwest::Client::builder()
            .no_proxy()
            .timeout(busy_for * 3)
            .build()
            .unwrap()
            .post(format!("http://{addr}:11434/api/generate"))
            .json(&serde_json::json!({
                "model": "llama3.2:1b", "prompt": "tell me a very long story please",
                "options": {"num_predict": tokens}
            }))
            .send()
            .await
            .and_then(|r| r.error_for_status());
        let body = match sent {
            Ok(r) => r.text().await,
            Err(e) => Err(e),
        };
        (body, started.elapsed())
    });
    let mut not_healthy = Vec::new();
    while !generation.is_finished() {
        let state = r.h.service("app").unwrap().state;
        if state != ServiceState::Healthy {
            not_healthy.push(state);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (body, took) = env.rt.block_on(generation).unwrap();
    let body = body.expect("the generation streams to its end");
    assert_eq!(body.lines().count() as u32, tokens + 1, "{body}");
    // The first token comes at once, then 14 pauses.
    assert!(
        took >= busy_for / tokens * (tokens - 1),
        "generated for {took:?}"
    );
    assert!(not_healthy.is_empty(), "while generating: {not_healthy:?}");
    let s = r.h.service("app").unwrap();
    assert_eq!(s.restart_count, 0, "a busy runtime is not restarted");
    assert!(
        env.logged_of("service_restart").is_empty(),
        "{:?}",
        env.logged()
    );

    // Hung: restarted in place, healthy again.
    env.testrt_post(&r.h, "/testrt/hang");
    wait_until("a restart", Duration::from_secs(30), || {
        (r.h.service("app")?.restart_count > 0).then_some(())
    });
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    assert_eq!(
        env.logged_of("service_restart").len(),
        1,
        "{:?}",
        env.logged()
    );
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
    let cfg = TestConfig::new(&pg.url(), QUIET_DISK);
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
    let seeded_at = chrono::Utc::now();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        let rec = |i: i64, event_type: &str, severity: &str| HealingRecord {
            id: None,
            at: seeded_at - chrono::Duration::seconds(100 - i),
            event_type: EventKind::parse(event_type),
            severity: Severity::parse(severity).unwrap(),
            category: Some(Category::A),
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
    // Half-way between events 1 and 2, whenever this line runs (a `since`
    // taken from the clock now, in whole seconds, dropped event 2 when the
    // requests above took long enough).
    let since = (seeded_at - chrono::Duration::milliseconds(98_500))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
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

/// A sample as the sampler publishes it; `gpu_error` adds a failed GPU read.
fn sample(cpu: f64, temperature_c: f64, disk_percent: f64, gpu_error: bool) -> Sample {
    let errors = if gpu_error {
        serde_json::json!([{"series": "gpu", "message": "NVML: GPU is lost"}])
    } else {
        serde_json::json!([])
    };
    serde_json::from_value(serde_json::json!({
        "ts": chrono::Utc::now(),
        "cpu_percent": cpu,
        "ram_percent": 20.0,
        "temperature_c": temperature_c,
        "thermal_zones": [],
        "disk_percent": disk_percent,
        "gpu": null,
        "errors": errors,
    }))
    .unwrap()
}

fn metrics_hub() -> MetricsHub {
    MetricsHub::new(
        &arasuld::config::MetricsConfig::default(),
        arasuld::metrics::collect::PlatformInfo::default(),
        "none",
    )
}

/// Only the overload/critical rules under test: sustained windows of 0-1 s.
fn overload_healing() -> HealingConfig {
    let mut c = fast_healing();
    c.overload.temp_throttle.sustained = Duration::ZERO;
    c.overload.cpu_percent.sustained = Duration::from_secs(1);
    c
}

/// The healing worker alone, with no supervisor behind it (no services)
/// and no database: for the actions that need neither.
fn worker_alone(dir: &std::path::Path, config: HealingConfig, hub: &MetricsHub) -> Workers {
    worker_with_db(dir, config, hub, CLOSED_DB).0
}

/// `worker_alone` with a database connector to `db_url`.
fn worker_with_db(
    dir: &std::path::Path,
    config: HealingConfig,
    hub: &MetricsHub,
    db_url: &str,
) -> (Workers, Db) {
    let workers = Workers::new(arasuld::tasks::RestartPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(2),
        reset_after: Duration::from_secs(60),
    });
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
        arasuld::db::spawn_connector(&workers, &db, &db_cfg, chrono::Utc::now());
    }
    arasuld::healing::worker::spawn(
        &workers,
        HealingDeps {
            config,
            log_dir: dir.join("log"),
            services: SupervisorHandle::detached(),
            metrics: Some(hub.clone()),
            db: db.clone(),
            state_dir: dir.join("state"),
            update: arasuld::update::UpdateActivity::new(),
            metrics_retention: Duration::from_secs(7 * 24 * 3600),
            proc_root: PathBuf::from("/proc"),
            live: None,
            notify: arasuld::notify::Notifier::detached(),
        },
    );
    (workers, db)
}

fn read_log(dir: &std::path::Path) -> Vec<HealingRecord> {
    std::fs::read_to_string(dir.join("log").join(LOG_FILE))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn set_mtime(path: &std::path::Path, ago: Duration) {
    let t = std::time::SystemTime::now() - ago;
    std::fs::File::open(path).unwrap().set_modified(t).unwrap();
}

const HOUR: Duration = Duration::from_secs(3600);

/// A log dir, a state dir and a directory beside them that must survive.
struct Tree {
    _tmp: tempfile::TempDir,
    log: PathBuf,
    state: PathBuf,
    outside: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let (log, state, outside) = (
            tmp.path().join("log"),
            tmp.path().join("state"),
            tmp.path().join("outside"),
        );
        for d in [
            log.join("archive"),
            state.join("updates/staging/old-bundle"),
            state.join("updates/incoming"),
            state.join("updates/backup/previous"),
            state.join("updates/usb"),
            state.join("backups"),
            outside.clone(),
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let write = |p: PathBuf| std::fs::write(p, b"0123456789").unwrap();
        for f in [
            "system.log",
            "system.log.1",
            "system.log.2.gz",
            "update.log.3",
            "notes.txt",
        ] {
            write(log.join(f));
        }
        write(log.join("archive/old.log.1"));
        write(outside.join("keep.log.1"));
        write(outside.join("precious"));
        std::os::unix::fs::symlink(outside.join("keep.log.1"), log.join("link.log.1")).unwrap();
        // The updater's: one staged bundle two days old that it no longer
        // needs, one fresh partial upload, and the previous version's
        // backup, two days old but still needed (see `updater_keeps`).
        write(state.join("updates/staging/old-bundle/bundle.tar"));
        set_mtime(&state.join("updates/staging/old-bundle"), 48 * HOUR);
        write(state.join("updates/incoming/fresh.araupdate"));
        write(state.join("updates/backup/previous/arasul.dump"));
        set_mtime(&state.join("updates/backup/previous"), 48 * HOUR);
        // Not the updater's at all: the USB worker's handled-list, old.
        write(state.join("updates/usb/handled.json"));
        set_mtime(&state.join("updates/usb/handled.json"), 48 * HOUR);
        set_mtime(&state.join("updates/usb"), 48 * HOUR);
        // Five backups, b1 oldest; b2 is a directory with a link out.
        for (i, name) in ["b1.dump", "b2", "b3.dump", "b4.dump", "b5.dump"]
            .iter()
            .enumerate()
        {
            let p = state.join("backups").join(name);
            if *name == "b2" {
                std::fs::create_dir(&p).unwrap();
                std::os::unix::fs::symlink(outside.join("precious"), p.join("link")).unwrap();
            } else {
                write(p.clone());
            }
            set_mtime(&p, HOUR * (10 - i as u32));
        }
        Tree {
            _tmp: tmp,
            log,
            state,
            outside,
        }
    }

    /// What the updater publishes when idle: it still needs the previous
    /// version's backup.
    fn updater_keeps(&self) -> arasuld::update::Activity {
        arasuld::update::Activity {
            keep: [self.state.join("updates/backup/previous")].into(),
            ..Default::default()
        }
    }

    /// Every path under the tree's root, relative, sorted.
    fn listing(&self) -> Vec<String> {
        fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(root).unwrap().display().to_string());
                if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                    walk(root, &p, out);
                }
            }
        }
        let root = self.log.parent().unwrap();
        let mut out = Vec::new();
        walk(root, root, &mut out);
        out.sort();
        out
    }
}

#[test]
fn disk_cleanup_deletes_exactly_the_configured_paths() {
    use arasuld::healing::cleanup::clean_files;
    let tree = Tree::new();
    let before = tree.listing();
    let rules = HealingConfig::default().cleanup;
    let report = clean_files(
        &tree.log,
        &tree.state,
        &rules,
        &tree.updater_keeps(),
        std::time::SystemTime::now(),
    );
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut removed: Vec<String> = report
        .removed
        .iter()
        .map(|p| {
            p.strip_prefix(tree.log.parent().unwrap())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    removed.sort();
    assert_eq!(
        removed,
        [
            "log/system.log.1",
            "log/system.log.2.gz",
            "log/update.log.3",
            "state/backups/b1.dump",
            "state/backups/b2",
            "state/updates/staging/old-bundle",
        ]
    );
    assert_eq!(
        report.bytes_freed, 50,
        "five 10-byte files (b2 held a link)"
    );
    // Nothing else changed: what is left is exactly before minus removed.
    let gone = |p: &String| {
        removed
            .iter()
            .any(|r| p == r || p.starts_with(&format!("{r}/")))
    };
    let expected: Vec<String> = before.iter().filter(|p| !gone(p)).cloned().collect();
    assert_eq!(tree.listing(), expected);
    // The newest three backups and what links pointed at are still there.
    for f in ["b3.dump", "b4.dump", "b5.dump"] {
        assert!(tree.state.join("backups").join(f).exists(), "{f}");
    }
    assert!(tree.outside.join("precious").exists());
    assert!(tree.outside.join("keep.log.1").exists());

    // A second run finds nothing more.
    let again = clean_files(
        &tree.log,
        &tree.state,
        &rules,
        &tree.updater_keeps(),
        std::time::SystemTime::now(),
    );
    assert!(again.removed.is_empty(), "{:?}", again.removed);
}

#[test]
fn disk_cleanup_leaves_staging_and_backups_alone_during_an_update() {
    use arasuld::healing::cleanup::clean_files;
    let tree = Tree::new();
    let report = clean_files(
        &tree.log,
        &tree.state,
        &HealingConfig::default().cleanup,
        &arasuld::update::Activity {
            in_progress: Some("loading_images".into()),
            ..tree.updater_keeps()
        },
        std::time::SystemTime::now(),
    );
    assert!(
        report.removed.iter().all(|p| p.starts_with(&tree.log)),
        "{:?}",
        report.removed
    );
    assert_eq!(report.removed.len(), 3);
    assert!(
        report.skipped[0].contains("loading_images"),
        "{:?}",
        report.skipped
    );
    assert!(tree.state.join("updates/staging/old-bundle").exists());
    assert!(tree.state.join("backups/b1.dump").exists());
}

#[test]
fn the_worker_cleans_the_disk_and_runs_the_throttle_command() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::new();
    let marker = dir.path().join("throttled");
    let mut cfg = overload_healing();
    cfg.overload.throttle_command = vec![
        "sh".into(),
        "-c".into(),
        format!("sleep 0.2; echo throttled > {}", marker.display()),
    ];
    cfg.cleanup.dangling_images = false;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let hub = metrics_hub();
    // Log and state dirs of the tree: the worker's `log` is the tree's.
    let root = tree.log.parent().unwrap().to_path_buf();
    let workers = worker_alone(&root, cfg, &hub);
    hub.publish(sample(20.0, 84.0, 91.0, false));

    let recs = wait_until(
        "throttle and cleanup recorded",
        Duration::from_secs(20),
        || {
            let recs = read_log(&root);
            let has = |t: &str| recs.iter().any(|r| r.event_type == t);
            (has("heat_throttle") && has("disk_cleanup")).then_some(recs)
        },
    );
    let throttle = recs
        .iter()
        .find(|r| r.event_type == "heat_throttle")
        .unwrap();
    assert_eq!(throttle.action.as_deref(), Some("run_throttle_command"));
    assert_eq!(throttle.result, "ok", "{throttle:?}");
    assert!(throttle.duration_ms.unwrap() >= 200, "{throttle:?}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "throttled\n");

    let cleanup = recs
        .iter()
        .find(|r| r.event_type == "disk_cleanup")
        .unwrap();
    assert_eq!(cleanup.action.as_deref(), Some("disk_cleanup"));
    assert_eq!(cleanup.result, "ok", "{cleanup:?}");
    // Six as in the tree's own test, plus the previous version's backup:
    // this worker's updater (a fresh one) says it needs none of its files.
    assert!(
        cleanup.description.contains("removed 7 files"),
        "{cleanup:?}"
    );
    assert!(tree.state.join("updates/usb/handled.json").exists());
    assert!(!tree.log.join("system.log.1").exists());
    assert!(tree.state.join("backups/b3.dump").exists());
    rt.block_on(workers.shutdown(Duration::from_secs(5)));
}

#[test]
fn without_a_configured_command_the_gpu_reset_is_recorded_as_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let hub = metrics_hub();
    let workers = worker_alone(dir.path(), overload_healing(), &hub);
    hub.publish(sample(20.0, 40.0, 10.0, true));
    let rec = wait_until("GPU reset recorded", Duration::from_secs(20), || {
        read_log(dir.path())
            .into_iter()
            .find(|r| r.event_type == "gpu_reset")
    });
    assert_eq!(rec.action.as_deref(), Some("gpu_reset"));
    assert!(
        rec.result
            .starts_with("skipped: no healing.gpu_reset_command"),
        "{rec:?}"
    );
    rt.block_on(workers.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_stop_by_healing_is_not_remembered_across_a_daemon_restart() {
    let env = Env::new("heal-transient");
    let r = env.start(env.catalog(""), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    env.rt.block_on(r.h.stop_transient("app")).unwrap();
    let s = r.h.service("app").unwrap();
    assert_eq!(s.state, ServiceState::Stopped);
    assert!(s.stopped_on_purpose, "held stopped while the daemon runs");
    assert!(env.stopped_file().is_empty(), "{:?}", env.stopped_file());
    // The daemon dies before the start that would have followed.
    env.stop(r);
    let r = env.start(env.catalog(""), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    assert!(!r.h.service("app").unwrap().stopped_on_purpose);

    // Unlike an admin's stop, which outlives the daemon.
    env.rt.block_on(r.h.stop("app")).unwrap();
    assert_eq!(env.stopped_file(), ["app"]);
    env.stop(r);
    let r = env.start(env.catalog(""), CLOSED_DB);
    std::thread::sleep(Duration::from_secs(3));
    let s = r.h.service("app").unwrap();
    assert_eq!(s.state, ServiceState::Stopped);
    assert!(s.stopped_on_purpose);
    env.stop(r);
}

#[test]
fn gpu_reset_runs_with_the_llm_stopped_and_the_llm_comes_back() {
    let env = Env::new("heal-gpureset");
    let marker = env.dir.path().join("gpu-reset");
    let container = env.project.container("app");
    let mut cfg = overload_healing();
    // The command checks for itself that the LLM container is not running.
    cfg.gpu_reset_command = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "docker inspect -f '{{{{.State.Running}}}}' {container} > {}",
            marker.display()
        ),
    ];
    let hub = metrics_hub();
    let r = env.start_with(env.catalog_as("llm", ""), CLOSED_DB, cfg, Some(hub.clone()));
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    hub.publish(sample(20.0, 40.0, 10.0, true));
    let rec = wait_until("the GPU reset", Duration::from_secs(30), || {
        env.logged_of("gpu_reset").into_iter().next()
    });
    assert_eq!(rec.result, "ok", "{rec:?}");
    assert!(rec.duration_ms.is_some());
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "false");
    let s = r.h.service("app").unwrap();
    assert_eq!(s.state, ServiceState::Stopped);
    // Held by healing, not an admin's stop: not written down.
    assert!(env.stopped_file().is_empty(), "{:?}", env.stopped_file());

    hub.publish(sample(20.0, 40.0, 10.0, false));
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    assert!(!env.logged_of("gpu_recovered").is_empty());
    env.stop(r);
}

#[test]
fn cleanup_prunes_only_this_projects_dangling_images() {
    let env = Env::new("heal-images");
    let r = env.start(env.catalog(""), CLOSED_DB);
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    let container = env.project.container("app");
    // Untagged commits of the service container: one keeps the container's
    // project label, the other is relabelled as someone else's.
    let ours = common::docker::docker(&["commit", &container]);
    let theirs = common::docker::docker(&[
        "commit",
        "--change",
        "LABEL io.arasul.project=someone-else",
        &container,
    ]);
    let (ours, theirs) = (ours.trim().to_string(), theirs.trim().to_string());
    let exists = |id: &str| {
        std::process::Command::new("docker")
            .args(["image", "inspect", id])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(exists(&ours) && exists(&theirs));
    let (n, _) = env.rt.block_on(r.h.prune_images()).unwrap();
    assert!(n >= 1, "{n}");
    assert!(!exists(&ours), "our dangling image is still there");
    assert!(exists(&theirs), "an image of another project was removed");
    assert!(exists(IMAGE), "the tagged service image was removed");
    common::docker::docker(&["rmi", &theirs]);
    env.stop(r);
}

#[test]
fn sustained_cpu_overload_unloads_the_models_with_keep_alive_0() {
    let env = Env::new("heal-cpu");
    let hub = metrics_hub();
    let r = env.start_with(
        env.catalog_as("llm", ""),
        CLOSED_DB,
        overload_healing(),
        Some(hub.clone()),
    );
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    let model = "llama3.2:1b";
    env.testrt(
        &r.h,
        reqwest::Method::POST,
        "/api/generate",
        Some(serde_json::json!({"model": model, "stream": false})),
    );
    let ps = env.testrt(&r.h, reqwest::Method::GET, "/api/ps", None);
    assert_eq!(ps["models"][0]["name"], model, "{ps}");
    env.testrt(&r.h, reqwest::Method::DELETE, "/testrt/requests", None);

    // Overload samples, 95 % for longer than the (test) window of 1 s.
    let t0 = Instant::now();
    let rec = wait_until("the CPU overload action", Duration::from_secs(20), || {
        hub.publish(sample(95.0, 40.0, 10.0, false));
        env.logged_of("cpu_overload").into_iter().next()
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(1),
        "fired before the window"
    );
    assert_eq!(rec.action.as_deref(), Some("unload_llm_models"));
    assert_eq!(rec.result, "ok", "{rec:?}");

    let seen = env.testrt(&r.h, reqwest::Method::GET, "/testrt/requests", None);
    let unloads: Vec<&serde_json::Value> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["path"] == "/api/generate" && q["body"]["keep_alive"] == 0)
        .collect();
    assert_eq!(unloads.len(), 1, "{seen}");
    assert_eq!(unloads[0]["body"]["model"], model);
    let ps = env.testrt(&r.h, reqwest::Method::GET, "/api/ps", None);
    assert_eq!(ps["models"], serde_json::json!([]), "{ps}");
    env.stop(r);
}

#[test]
fn critical_disk_level_prunes_old_metrics_and_runs_vacuum_analyze() {
    let pg = private_pg();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = overload_healing();
    cfg.cleanup.dangling_images = false;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let hub = metrics_hub();
    let (workers, db) = worker_with_db(dir.path(), cfg, &hub, &pg.url());
    wait_until("database migrated", Duration::from_secs(20), || {
        db.status().migrated.then_some(())
    });
    let pool = rt.block_on(sqlx::PgPool::connect(&pg.url())).unwrap();
    rt.block_on(
        sqlx::query(
            "INSERT INTO metrics (ts, cpu_percent) VALUES
                 (now() - interval '30 days', 1), (now() - interval '1 hour', 2)",
        )
        .execute(&pool),
    )
    .unwrap();

    hub.publish(sample(20.0, 40.0, 96.0, false));
    let recs = wait_until(
        "cleanup and VACUUM recorded",
        Duration::from_secs(30),
        || {
            let recs = read_log(dir.path());
            let has = |t: &str| recs.iter().any(|r| r.event_type == t);
            (has("disk_cleanup") && has("vacuum_analyze")).then_some(recs)
        },
    );
    let cleanup = recs
        .iter()
        .find(|r| r.event_type == "disk_cleanup")
        .unwrap();
    assert_eq!(cleanup.result, "ok", "{cleanup:?}");
    assert!(
        cleanup
            .description
            .contains("1 metrics rows past retention"),
        "{cleanup:?}"
    );
    let vacuum = recs
        .iter()
        .find(|r| r.event_type == "vacuum_analyze")
        .unwrap();
    assert_eq!(vacuum.action.as_deref(), Some("vacuum_analyze"));
    assert_eq!(vacuum.result, "ok", "{vacuum:?}");
    assert!(vacuum.duration_ms.is_some());
    let left: Vec<f32> = rt
        .block_on(sqlx::query_scalar("SELECT cpu_percent FROM metrics").fetch_all(&pool))
        .unwrap();
    assert_eq!(left, [2.0]);
    // Postgres itself says the table was vacuumed and analyzed by hand.
    wait_until("the vacuum in pg_stat", Duration::from_secs(10), || {
        let row: (
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = rt
            .block_on(
                sqlx::query_as(
                    "SELECT last_vacuum, last_analyze FROM pg_stat_user_tables
                      WHERE relname = 'metrics'",
                )
                .fetch_one(&pool),
            )
            .unwrap();
        (row.0.is_some() && row.1.is_some()).then_some(())
    });
    rt.block_on(pool.close());
    rt.block_on(workers.shutdown(Duration::from_secs(5)));
}

#[test]
fn sustained_gpu_load_resets_the_llm_session_unload_then_reload() {
    let env = Env::new("heal-session");
    let hub = metrics_hub();
    let mut cfg = overload_healing();
    cfg.overload.gpu_percent.sustained = Duration::from_secs(1);
    let r = env.start_with(env.catalog_as("llm", ""), CLOSED_DB, cfg, Some(hub.clone()));
    env.wait_state(&r.h, ServiceState::Healthy, Duration::from_secs(30));
    let model = "llama3.2:1b";
    env.testrt(
        &r.h,
        reqwest::Method::POST,
        "/api/generate",
        Some(serde_json::json!({"model": model, "stream": false})),
    );
    env.testrt(&r.h, reqwest::Method::DELETE, "/testrt/requests", None);
    let busy_gpu = || {
        let mut s = sample(20.0, 40.0, 10.0, false);
        s.gpu = Some(
            serde_json::from_value(serde_json::json!({
                "backend": "nvml", "name": "test", "utilization_percent": 99.0,
                "throttle_reasons": [], "rails": [],
            }))
            .unwrap(),
        );
        s
    };
    let rec = wait_until("the session reset", Duration::from_secs(20), || {
        hub.publish(busy_gpu());
        env.logged_of("gpu_overload").into_iter().next()
    });
    assert_eq!(rec.action.as_deref(), Some("reset_llm_session"));
    assert_eq!(rec.result, "ok", "{rec:?}");
    assert!(rec.description.contains("reloaded llama3.2:1b"), "{rec:?}");
    let seen = env.testrt(&r.h, reqwest::Method::GET, "/testrt/requests", None);
    let generates: Vec<&serde_json::Value> = seen["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| q["path"] == "/api/generate")
        .map(|q| &q["body"])
        .collect();
    assert_eq!(
        generates,
        [
            &serde_json::json!({"model": model, "keep_alive": 0, "stream": false}),
            &serde_json::json!({"model": model, "stream": false}),
        ],
        "{seen}"
    );
    let ps = env.testrt(&r.h, reqwest::Method::GET, "/api/ps", None);
    assert_eq!(ps["models"][0]["name"], model, "loaded again: {ps}");
    env.stop(r);
}

#[test]
fn the_api_serves_recovery_actions_failures_reboots_and_metrics() {
    use common::{Daemon, NotifySocket, TestConfig, admin_token, get_json_auth};
    let pg = private_pg();
    let cfg = TestConfig::new(&pg.url(), QUIET_DISK);
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let token = admin_token(&cfg);
    let get = |path: &str| get_json_auth(&cfg.url(path), &token).unwrap();
    wait_until("database up and migrated", Duration::from_secs(30), || {
        let (_, p) = get("/api/database/pool");
        (p["up"] == true && p["migrated"] == true).then_some(())
    });
    for path in [
        "/api/self-healing/recovery-actions",
        "/api/self-healing/service-failures",
        "/api/self-healing/reboot-history",
        "/api/self-healing/metrics",
    ] {
        let (status, body) = common::get_json(&cfg.url(path)).unwrap();
        assert_eq!(status, 401, "{path}: {body}");
    }

    let now = chrono::Utc::now();
    let hours = |h: f64| now - chrono::Duration::milliseconds((h * 3_600_000.0) as i64);
    let rec = |at, event_type: &str, service: Option<&str>, action: Option<&str>, result: &str| {
        HealingRecord {
            id: None,
            at,
            event_type: EventKind::parse(event_type),
            severity: Severity::Warning,
            category: Some(if event_type.starts_with("reboot") {
                Category::D
            } else {
                Category::A
            }),
            service: service.map(str::to_string),
            description: event_type.into(),
            action: action.map(str::to_string),
            result: result.into(),
            duration_ms: action.map(|_| 12),
        }
    };
    let recs = vec![
        // app2 went down before the window and came back 16.8 h into it.
        rec(hours(200.0), "service_down", Some("app2"), None, "recorded"),
        rec(
            hours(168.0 - 16.8),
            "service_recovered",
            Some("app2"),
            None,
            "recorded",
        ),
        // app down for 16.8 h (10 % of the week).
        rec(hours(20.0), "service_down", Some("app"), None, "recorded"),
        rec(
            hours(19.9),
            "service_restart",
            Some("app"),
            Some("restart_service"),
            "failed: docker: boom",
        ),
        rec(
            hours(19.0),
            "service_restart",
            Some("app"),
            Some("restart_service"),
            "ok",
        ),
        rec(
            hours(10.0),
            "service_restart",
            Some("app"),
            Some("restart_service"),
            "ok",
        ),
        rec(
            hours(5.0),
            "service_restart",
            Some("app"),
            Some("restart_service"),
            "ok",
        ),
        rec(
            hours(3.2),
            "service_recovered",
            Some("app"),
            None,
            "recorded",
        ),
        rec(
            hours(3.0),
            "service_failed",
            Some("app"),
            Some("mark_failed"),
            "ok",
        ),
        rec(
            hours(2.0),
            "gpu_reset",
            None,
            Some("gpu_reset"),
            "skipped: no healing.gpu_reset_command configured",
        ),
        rec(hours(1.0), "reboot_refused", None, None, "recorded"),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::PgPool::connect(&pg.url()).await.unwrap();
        arasuld::db::healing::insert_events(&pool, &recs)
            .await
            .unwrap();
        // The box has kept records for longer than the week.
        sqlx::query(
            "INSERT INTO daemon_starts (started_at, version, build_hash)
             VALUES (now() - interval '30 days', 'old', 'old')",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    });

    let types = |body: &serde_json::Value| -> Vec<String> {
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_type"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, body) = get("/api/self-healing/recovery-actions");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 6, "{body}");
    assert_eq!(types(&body)[..2], ["gpu_reset", "service_failed"]);
    assert_eq!(body["entries"][0]["duration_ms"], 12);
    assert!(body["timestamp"].is_string());
    let (_, body) = get("/api/self-healing/recovery-actions?limit=2&offset=5");
    assert_eq!(types(&body), ["service_restart"]);
    assert_eq!(body["entries"][0]["result"], "failed: docker: boom");
    assert_eq!(get("/api/self-healing/recovery-actions?limit=0").0, 400);
    assert_eq!(get("/api/self-healing/service-failures?offset=-1").0, 400);

    let (_, body) = get("/api/self-healing/service-failures");
    assert_eq!(
        types(&body),
        ["service_failed", "service_down", "service_down"],
        "{body}"
    );
    let (_, body) = get("/api/self-healing/reboot-history");
    assert_eq!(types(&body), ["reboot_refused"], "{body}");

    let (status, body) = get("/api/self-healing/metrics");
    assert_eq!(status, 200, "{body}");
    let uptime = |name: &str| {
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["service"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))["uptime_percent_7d"]
            .as_f64()
            .unwrap()
    };
    assert!((uptime("app") - 90.0).abs() < 0.01, "{body}");
    assert!((uptime("app2") - 90.0).abs() < 0.01, "{body}");
    let action = |name: &str| {
        body["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["action"] == name)
            .unwrap_or_else(|| panic!("{name} in {body}"))
            .clone()
    };
    let restart = action("restart_service");
    assert_eq!(
        (restart["total"].as_i64(), restart["succeeded"].as_i64()),
        (Some(4), Some(3))
    );
    assert_eq!(restart["success_rate"], 0.75);
    let reset = action("gpu_reset");
    assert_eq!(
        (reset["total"].as_i64(), reset["skipped"].as_i64()),
        (Some(0), Some(1))
    );
    assert!(reset["success_rate"].is_null());
}
