//! Workflow runs reported by n8n, stored in a real PostgreSQL (a private
//! server per test, migrated by the daemon's own connector): activity,
//! history and stats numbers, the running → success update, validation,
//! the rate limit and who may call what.

use crate::common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::{Duration as Age, Utc};
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "Flows-Test-Passw0rd!";

struct App {
    app: common::App,
    token: String,
    _pg: Option<common::PrivatePostgres>,
}

impl std::ops::Deref for App {
    type Target = common::App;
    fn deref(&self) -> &common::App {
        &self.app
    }
}

impl App {
    /// With a private PostgreSQL (migrated before this returns), or with
    /// the database unreachable when `with_db` is false.
    async fn new(with_db: bool) -> App {
        let pg = with_db.then(|| {
            let mut pg = common::PrivatePostgres::init(common::free_port());
            pg.start();
            pg
        });
        let app = common::App::new(|_, config| {
            if let Some(pg) = &pg {
                config.database.url = arasuld::config::Secret::new(pg.url());
                config.database.min_connections = 0;
                config.database.check_interval = Duration::from_millis(300);
            }
        });
        if with_db {
            let database = app.state.config.borrow().database.clone();
            arasuld::db::spawn_connector(
                &app.state.workers,
                &app.state.db,
                &database,
                chrono::Utc::now(),
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !app.state.db.status().migrated {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "database not migrated: {:?}",
                    app.state.db.status()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let token = app.ready_token(PASSWORD, None).await;
        App {
            app,
            token,
            _pg: pg,
        }
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, v) = self.app.send(req).await;
        (status, v)
    }

    async fn report(&self, body: Value) -> (StatusCode, Value) {
        self.send(post(
            "/api/workflows/execution",
            &body.to_string(),
            Some(&self.token),
        ))
        .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(get(uri, Some(&self.token))).await
    }

    async fn stored(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM workflow_executions")
            .fetch_one(self.state.db.pool())
            .await
            .unwrap()
    }
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, body: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

fn ago(minutes: i64) -> String {
    (Utc::now() - Age::minutes(minutes)).to_rfc3339()
}

fn run(wf: &str, name: &str, exec: &str, status: &str, started: i64, ms: Option<i64>) -> Value {
    let start = Utc::now() - Age::minutes(started);
    let mut v = json!({
        "workflow_id": wf, "workflow_name": name, "execution_id": exec,
        "status": status, "started_at": start.to_rfc3339(),
    });
    if let Some(ms) = ms {
        v["finished_at"] = json!((start + Age::milliseconds(ms)).to_rfc3339());
    }
    if status == "error" {
        v["error"] = json!("node 'HTTP Request' failed: 502");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_runs_show_in_activity_history_and_stats() {
    let app = App::new(true).await;
    for (body, want) in [
        (
            run("wf-a", "Mail digest", "1", "success", 50, Some(100)),
            201,
        ),
        (
            run("wf-a", "Mail digest", "2", "success", 40, Some(300)),
            201,
        ),
        (run("wf-a", "Mail digest", "3", "error", 30, Some(800)), 201),
        (run("wf-b", "Backup", "7", "running", 5, None), 201),
        // Two days old: in history and stats, not in the last 24 h.
        (
            run("wf-b", "Backup", "6", "success", 48 * 60, Some(1000)),
            201,
        ),
    ] {
        let (s, v) = app.report(body).await;
        assert_eq!(s.as_u16(), want, "{v}");
        assert_eq!(v["result"], "created");
        assert!(v["execution"]["id"].is_i64());
        assert!(v["timestamp"].is_string());
    }

    // Public: no token needed, and no detail: a failed run says that it
    // failed, not what n8n said.
    let (s, v) = app.send(get("/api/workflows/activity", None)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["last_24h"],
        json!({"total": 4, "success": 2, "error": 1, "running": 1})
    );
    assert_eq!(v["active"], 1);
    let statuses: Vec<&str> = v["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["running", "error", "success", "success", "success"]
    );
    assert_eq!(v["recent"][1]["error"], Value::Null, "{v}");
    assert_eq!(v["recent"][1]["execution_id"], Value::Null, "{v}");
    assert_eq!(v["recent"][1]["duration_ms"], 800);
    // The admin sees the details.
    let (s, v) = app.get("/api/workflows/activity").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let recent: Vec<&str> = v["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, ["7", "3", "2", "1", "6"]);
    assert_eq!(v["recent"][1]["error"], "node 'HTTP Request' failed: 502");

    let (s, v) = app.get("/api/workflows/history?limit=2&offset=1").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["total"], 5);
    let ids: Vec<&str> = v["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["execution_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["3", "2"]);
    let (_, v) = app
        .get("/api/workflows/history?workflow_id=wf-a&status=success")
        .await;
    assert_eq!(v["total"], 2);

    let (s, v) = app.get("/api/workflows/stats").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let w = v["workflows"].as_array().unwrap();
    assert_eq!(w.len(), 2);
    // Most recently run first.
    assert_eq!(w[0]["workflow_id"], "wf-b");
    assert_eq!(w[0]["runs"], 2);
    assert_eq!(w[0]["running"], 1);
    assert_eq!(w[0]["success_rate"], 100.0);
    assert_eq!(w[0]["avg_duration_ms"], 1000.0);
    assert_eq!(w[0]["last_status"], "running");
    let a = &w[1];
    assert_eq!(a["workflow_id"], "wf-a");
    assert_eq!(a["workflow_name"], "Mail digest");
    assert_eq!(
        (a["runs"].clone(), a["success"].clone(), a["error"].clone()),
        (json!(3), json!(2), json!(1))
    );
    let rate = a["success_rate"].as_f64().unwrap();
    assert!((rate - 200.0 / 3.0).abs() < 1e-9, "{rate}");
    assert_eq!(a["avg_duration_ms"], 400.0);
    assert_eq!(a["last_status"], "error");
    let last = chrono::DateTime::parse_from_rfc3339(a["last_run"].as_str().unwrap()).unwrap();
    assert!(
        (Utc::now() - last.with_timezone(&Utc) - Age::minutes(30))
            .num_seconds()
            .abs()
            < 60
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reported_again_is_updated_not_duplicated() {
    let app = App::new(true).await;
    let started = ago(2);
    let (s, v) = app
        .report(
            json!({"workflow_id": "wf", "workflow_name": "Sync", "execution_id": "e1",
                       "status": "running", "started_at": started}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["execution"]["id"].clone();
    let (_, v) = app.send(get("/api/workflows/activity", None)).await;
    assert_eq!(v["active"], 1);

    let finished = ago(1);
    let (s, v) = app
        .report(
            json!({"workflow_id": "wf", "workflow_name": "Sync", "execution_id": "e1",
                       "status": "success", "started_at": started, "finished_at": finished}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], "updated");
    let x = &v["execution"];
    assert_eq!(x["id"], id);
    assert_eq!(x["status"], "success");
    let ms = x["duration_ms"].as_i64().unwrap();
    assert!((59_000..=61_000).contains(&ms), "{ms}");
    assert_eq!(app.stored().await, 1);

    // A late, stale "running" does not undo the finish.
    let (s, v) = app
        .report(
            json!({"workflow_id": "wf", "workflow_name": "Sync", "execution_id": "e1",
                       "status": "running", "started_at": started}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"], "unchanged");
    assert_eq!(v["execution"]["status"], "success");

    let (_, v) = app.send(get("/api/workflows/activity", None)).await;
    assert_eq!(v["active"], 0);
    assert_eq!(v["last_24h"]["total"], 1);
    assert_eq!(v["last_24h"]["success"], 1);

    // The same execution id under another workflow is another run.
    let (s, _) = app
        .report(
            json!({"workflow_id": "other", "workflow_name": "X", "execution_id": "e1",
                       "status": "error"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(app.stored().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reports_are_rejected_and_nothing_is_stored() {
    let app = App::new(true).await;
    let ok = json!({"workflow_id": "wf", "workflow_name": "n", "status": "success"});
    let with = |k: &str, v: Value| {
        let mut b = ok.clone();
        b[k] = v;
        b.to_string()
    };
    let long = "x".repeat(201);
    let cases: Vec<(String, u16)> = vec![
        (with("status", json!("done")), 422),
        // serde reads a null where an enum belongs as a syntax error: 400.
        (with("status", json!(null)), 400),
        (with("workflow_name", json!(long)), 422),
        (with("workflow_name", json!("")), 422),
        (with("workflow_id", json!("  ")), 422),
        (with("workflow_id", json!(7)), 422),
        (with("execution_id", json!(long)), 422),
        (with("started_at", json!("yesterday")), 422),
        (with("started_at", json!("2026-13-01T00:00:00Z")), 422),
        (with("duration_ms", json!(-5)), 422),
        (with("error", json!("x".repeat(10_001))), 422),
        (with("workflow_name", json!("nul\u{0}byte")), 422),
        (
            json!({"workflow_id": "wf", "workflow_name": "n", "status": "success",
                   "started_at": "2026-03-01T10:00:00Z", "finished_at": "2026-03-01T09:00:00Z"})
            .to_string(),
            422,
        ),
        (
            json!({"workflow_id": "wf", "workflow_name": "n", "status": "running",
                   "finished_at": "2026-03-01T09:00:00Z"})
            .to_string(),
            422,
        ),
        (
            json!({"workflow_id": "wf", "status": "success"}).to_string(),
            422,
        ),
        ("{not json".into(), 400),
        ("[]".into(), 422),
    ];
    for (body, want) in cases {
        let (s, v) = app
            .send(post("/api/workflows/execution", &body, Some(&app.token)))
            .await;
        assert_eq!(s.as_u16(), want, "{body}: {v}");
        assert!(v["error"]["code"].is_string(), "{body}: {v}");
        assert!(v["timestamp"].is_string());
    }
    let req = Request::post("/api/workflows/execution")
        .header(header::AUTHORIZATION, format!("Bearer {}", app.token))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(ok.to_string()))
        .unwrap();
    assert_eq!(app.send(req).await.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(app.stored().await, 0);

    for uri in [
        "/api/workflows/history?limit=0",
        "/api/workflows/history?limit=1001",
        "/api/workflows/history?offset=-1",
        "/api/workflows/history?limit=many",
        "/api/workflows/history?status=done",
    ] {
        let (s, v) = app.get(uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
    }

    // The valid one goes through: the cases above failed on what they changed.
    let (s, v) = app.report(ok).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(app.stored().await, 1);
}

#[tokio::test]
async fn admin_routes_need_a_token_and_reports_are_rate_limited() {
    let app = App::new(false).await;
    for uri in ["/api/workflows/history", "/api/workflows/stats"] {
        let (s, v) = app.send(get(uri, None)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(v["error"]["code"], "unauthorized");
    }
    let body = json!({"workflow_id": "wf", "workflow_name": "n", "status": "success"}).to_string();
    let (s, _) = app
        .send(post("/api/workflows/execution", &body, None))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Database down: a clear 503, for the reporter to retry.
    let (s, v) = app.report(serde_json::from_str(&body).unwrap()).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_eq!(v["error"]["code"], "database_unavailable");
    let (s, _) = app.send(get("/api/workflows/activity", None)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);

    // 100 per minute per client (two were sent above): a burst of 100, then
    // 429 (one more is allowed every 600 ms, hence the few extra tries).
    for i in 2..100 {
        let (s, _) = app.report(json!({"status": "bogus"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "request {i}");
    }
    let mut limited = None;
    for _ in 0..20 {
        let resp = app
            .router
            .clone()
            .oneshot(post("/api/workflows/execution", &body, Some(&app.token)))
            .await
            .unwrap();
        if resp.status() == StatusCode::TOO_MANY_REQUESTS {
            limited = Some(resp);
            break;
        }
    }
    let resp = limited.expect("no 429 after 100 reports");
    let wait: u64 = resp.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Other routes are not affected.
    let (s, _) = app.get("/api/workflows/stats").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_older_than_the_retention_are_deleted_in_batches() {
    let app = App::new(true).await;
    for (exec, minutes) in [
        ("old-1", 100 * 24 * 60),
        ("old-2", 91 * 24 * 60),
        ("new", 89 * 24 * 60),
    ] {
        let (s, v) = app
            .report(run("wf", "Nightly", exec, "success", minutes, Some(10)))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let before = Utc::now() - Age::from_std(arasuld::db::workflows::RETENTION).unwrap();
    // Batches of one: the loop must go on until a batch comes back short.
    let runs = arasuld::db::workflows::AGING;
    let n = arasuld::db::retention::delete_older_than(app.state.db.pool(), runs, before, 1, || {})
        .await
        .unwrap();
    assert_eq!(n, 2);
    let (_, v) = app.get("/api/workflows/history").await;
    assert_eq!(v["total"], 1);
    assert_eq!(v["executions"][0]["execution_id"], "new");
}
