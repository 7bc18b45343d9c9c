//! The logs API on real files: the router in-process over a temp
//! `paths.log_dir`, with an admin token from a real login. Covers the tail
//! of a big file, the level filter, the live stream across rotation and
//! truncation, search, and bad requests.

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::StreamExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "Logs-Test-Passw0rd!";

struct App {
    app: common::App,
    token: String,
}

impl std::ops::Deref for App {
    type Target = common::App;
    fn deref(&self) -> &common::App {
        &self.app
    }
}

impl App {
    async fn new() -> App {
        let app = common::App::new(|dir, config| {
            config.paths.log_dir = dir.join("log");
            std::fs::create_dir_all(&config.paths.log_dir).unwrap();
        });
        let token = app.ready_token(PASSWORD, None).await;
        App { app, token }
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("log").join(name)
    }

    async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let (status, _, v) = self.app.send(req).await;
        (status, v)
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(get(uri, Some(&self.token))).await
    }
}

fn get(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut b = Request::get(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Body::empty()).unwrap()
}

/// A line as the daemon's tracing JSON layer writes it.
fn tracing_line(i: usize, level: &str, msg: &str) -> String {
    format!(
        "{{\"timestamp\":\"2026-03-01T10:{:02}:{:02}.{:06}Z\",\"level\":\"{level}\",\"fields\":{{\"message\":\"{msg}\",\"n\":{i}}},\"target\":\"arasuld::test\"}}\n",
        (i / 60) % 60,
        i % 60,
        i % 1_000_000
    )
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn messages(lines: &Value) -> Vec<String> {
    lines
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn tail_of_a_big_file_is_exactly_its_last_lines_in_order() {
    let app = App::new().await;
    // 200k lines, every 10th a warning, every 50th an error.
    let mut text = String::new();
    for i in 0..200_000 {
        let level = if i % 50 == 0 {
            "ERROR"
        } else if i % 10 == 0 {
            "WARN"
        } else {
            "INFO"
        };
        text.push_str(&tracing_line(i, level, &format!("event {i}")));
    }
    std::fs::write(app.log("system.log"), &text).unwrap();

    let (s, v) = app.get("/api/logs?source=system&lines=5000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["source"], "system");
    let got = messages(&v["lines"]);
    let want: Vec<String> = (195_000..200_000)
        .map(|i| format!("event {i} n={i}"))
        .collect();
    assert_eq!(got, want);
    let first = &v["lines"][0];
    assert_eq!(first["level"], "error"); // 195000 is a multiple of 50
    // Line 195000: minute 3250 % 60 = 10, second 0, 195000 µs.
    assert_eq!(first["ts"], "2026-03-01T10:10:00.195Z");
    assert!(first["raw"].as_str().unwrap().starts_with("{\"timestamp\""));

    let (_, v) = app.get("/api/logs?source=system&lines=1").await;
    assert_eq!(messages(&v["lines"]), ["event 199999 n=199999"]);

    // Minimum level warn: warnings and errors only, still the newest, in order.
    let (s, v) = app.get("/api/logs?source=system&lines=30&level=warn").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let want: Vec<String> = (0..200_000)
        .rev()
        .filter(|i| i % 10 == 0)
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .map(|i| format!("event {i} n={i}"))
        .collect();
    assert_eq!(messages(&v["lines"]), want);
    let levels: Vec<&str> = v["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["level"].as_str().unwrap())
        .collect();
    assert!(levels.iter().all(|l| *l == "warn" || *l == "error"));
    assert!(levels.contains(&"error"));

    let (_, v) = app.get("/api/logs?source=system&lines=5&level=ERROR").await;
    let want: Vec<String> = [199_800, 199_850, 199_900, 199_950]
        .iter()
        .map(|i| format!("event {i} n={i}"))
        .collect();
    assert_eq!(messages(&v["lines"])[1..], want[..]);
}

#[tokio::test]
async fn self_healing_and_missing_files_are_served() {
    let app = App::new().await;
    append(
        &app.log("self_healing.log"),
        "{\"at\":\"2026-03-01T10:00:00Z\",\"event_type\":\"service_restart\",\"severity\":\"WARNING\",\"category\":\"A\",\"service\":\"llm\",\"description\":\"restarting llm\",\"action\":\"restart_service\",\"result\":\"ok\",\"duration_ms\":120}\n",
    );
    let (s, v) = app.get("/api/logs?source=self_healing&level=warn").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let l = &v["lines"][0];
    assert_eq!(l["level"], "warn");
    assert_eq!(l["ts"], "2026-03-01T10:00:00Z");
    assert!(l["message"].as_str().unwrap().starts_with("restarting llm"));

    // No update has run: its logs are empty, not an error.
    let (s, v) = app.get("/api/logs?source=update_usb").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["lines"], json!([]));

    let (s, v) = app.get("/api/logs/list").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let logs = v["logs"].as_array().unwrap();
    let names: Vec<&str> = logs.iter().map(|l| l["source"].as_str().unwrap()).collect();
    assert_eq!(names, ["system", "self_healing", "update", "update_usb"]);
    assert_eq!(logs[1]["exists"], true);
    assert!(logs[1]["size"].as_u64().unwrap() > 100);
    assert!(logs[1]["modified"].is_string());
    assert_eq!(logs[3]["exists"], false);
    assert_eq!(logs[3]["size"], 0);
    assert!(
        logs[3]["path"]
            .as_str()
            .unwrap()
            .ends_with("/log/update_usb.log")
    );
}

#[tokio::test]
async fn bad_requests_are_400_and_nothing_outside_log_dir_is_read() {
    let app = App::new().await;
    std::fs::write(app.dir.path().join("secret.txt"), "top secret\n").unwrap();
    for uri in [
        "/api/logs?source=../secret.txt",
        "/api/logs?source=%2Fetc%2Fpasswd",
        "/api/logs?source=system.log",
        "/api/logs/stream?source=nope",
        "/api/logs/search?q=secret&source=../secret.txt",
    ] {
        let (s, v) = app.get(uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error"]["code"], "unknown_source", "{uri}");
        assert!(v["error"]["message"].as_str().unwrap().contains("system"));
        assert!(v["timestamp"].is_string());
    }
    for (uri, code) in [
        ("/api/logs?lines=0", "invalid_lines"),
        ("/api/logs?lines=5001", "invalid_lines"),
        ("/api/logs?lines=abc", "invalid_parameters"),
        ("/api/logs?level=loud", "invalid_level"),
        ("/api/logs/search?q=", "invalid_query"),
        ("/api/logs/search", "invalid_parameters"),
        ("/api/logs/search?q=a&limit=0", "invalid_limit"),
    ] {
        let (s, v) = app.get(uri).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(v["error"]["code"], code, "{uri}");
    }
    // Searching every source never reaches the file outside log_dir.
    let (s, v) = app.get("/api/logs/search?q=top%20secret").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["matches"], json!([]));
}

#[tokio::test]
async fn every_logs_route_needs_a_token() {
    let app = App::new().await;
    for uri in [
        "/api/logs/list",
        "/api/logs?source=system",
        "/api/logs/stream?source=system",
        "/api/logs/search?q=x",
    ] {
        let (s, v) = app.send(get(uri, None)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(v["error"]["code"], "unauthorized");
        let (s, _) = app.send(get(uri, Some("not-a-token"))).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn search_is_case_insensitive_newest_first_and_limited() {
    let app = App::new().await;
    let mut text = String::new();
    for i in 0..1000 {
        let msg = if i % 100 == 7 {
            format!("Disk FULL on node {i}")
        } else {
            format!("all good {i}")
        };
        text.push_str(&tracing_line(i, "INFO", &msg));
    }
    std::fs::write(app.log("system.log"), &text).unwrap();
    append(
        &app.log("update.log"),
        "2026-03-01T11:00:00Z ERROR disk full, update aborted\n",
    );

    let (s, v) = app
        .get("/api/logs/search?q=disk%20full&source=system")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let want: Vec<String> = (0..10)
        .rev()
        .map(|k| {
            let i = k * 100 + 7;
            format!("Disk FULL on node {i} n={i}")
        })
        .collect();
    assert_eq!(messages(&v["matches"]), want);

    let (_, v) = app
        .get("/api/logs/search?q=DISK%20FULL&source=system&limit=3")
        .await;
    assert_eq!(messages(&v["matches"]), want[..3].to_vec());

    // Every source: the update log's line is the newest of all.
    let (_, v) = app.get("/api/logs/search?q=disk%20full&limit=2").await;
    let m = v["matches"].as_array().unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["source"], "update");
    assert_eq!(m[0]["level"], "error");
    assert_eq!(m[1]["source"], "system");
    assert_eq!(m[1]["message"], "Disk FULL on node 907 n=907");
}

/// Reads SSE `line` events from a response body until `n` arrived.
struct Events {
    body: axum::body::BodyDataStream,
    buf: String,
}

impl Events {
    async fn next_lines(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while out.len() < n {
            while let Some(end) = self.buf.find("\n\n") {
                let frame: String = self.buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for l in frame.lines() {
                    if let Some(e) = l.strip_prefix("event:") {
                        event = if e.trim() == "line" { "line" } else { "other" };
                    } else if let Some(d) = l.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if event == "line" {
                    out.push(serde_json::from_str(&data).unwrap());
                } else {
                    assert!(data.is_empty(), "unexpected event {frame:?}");
                }
            }
            if out.len() >= n {
                break;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .unwrap_or_else(|_| panic!("timed out; got {out:?}"))
                .expect("stream ended")
                .unwrap();
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sends_new_lines_and_survives_rotation_and_truncation() {
    let app = App::new().await;
    let path = app.log("update.log");
    append(&path, "2026-03-01T09:00:00Z INFO old line, not sent\n");
    let resp = app
        .router
        .clone()
        .oneshot(get(
            "/api/logs/stream?source=update&level=info",
            Some(&app.token),
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut ev = Events {
        body: resp.into_body().into_data_stream(),
        buf: String::new(),
    };

    append(
        &path,
        "2026-03-01T10:00:00Z INFO one\n2026-03-01T10:00:01Z DEBUG below the filter\n2026-03-01T10:00:02Z WARN two\n",
    );
    let got = ev.next_lines(2).await;
    assert_eq!(got[0]["message"], "one");
    assert_eq!(got[0]["source"], "update");
    assert_eq!(got[0]["ts"], "2026-03-01T10:00:00Z");
    assert_eq!(got[1]["message"], "two");
    assert_eq!(got[1]["level"], "warn");

    // logrotate without copytruncate: renamed, then a new file.
    append(
        &path,
        "2026-03-01T10:00:03Z INFO three, last of the old file\n",
    );
    std::fs::rename(&path, app.log("update.log.1")).unwrap();
    append(
        &path,
        "2026-03-01T10:00:04Z INFO four, first of the new file\n",
    );
    let got = ev.next_lines(2).await;
    assert_eq!(got[0]["message"], "three, last of the old file");
    assert_eq!(got[1]["message"], "four, first of the new file");

    // copytruncate: emptied in place, then written again.
    append(&path, "2026-03-01T10:00:05Z INFO five\n");
    assert_eq!(ev.next_lines(1).await[0]["message"], "five");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    // Shorter than what the stream had read: seen as truncated even if
    // the stream never looked at the empty file.
    append(&path, "2026-03-01T10:00:06Z INFO six\n");
    assert_eq!(ev.next_lines(1).await[0]["message"], "six");
}

/// Component names are global in the OpenAPI document: a schema of another
/// module with the same type name would silently replace ours.
#[tokio::test]
async fn openapi_document_describes_these_routes_with_their_own_schemas() {
    let app = App::new().await;
    let (s, doc) = app.send(get("/api/openapi.json", None)).await;
    assert_eq!(s, StatusCode::OK);
    for (path, method, status, property) in [
        ("/api/logs/list", "get", "200", "logs"),
        ("/api/logs", "get", "200", "lines"),
        ("/api/logs/search", "get", "200", "matches"),
        ("/api/workflows/execution", "post", "201", "execution"),
        ("/api/workflows/activity", "get", "200", "last_24h"),
        ("/api/workflows/history", "get", "200", "executions"),
        ("/api/workflows/stats", "get", "200", "workflows"),
    ] {
        let op = &doc["paths"][path][method];
        let schema = &op["responses"][status]["content"]["application/json"]["schema"]["$ref"];
        let name = schema
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path}: no {status} schema"))
            .trim_start_matches("#/components/schemas/");
        let props = &doc["components"]["schemas"][name]["properties"];
        assert!(
            props[property].is_object() && props["timestamp"].is_object(),
            "{method} {path}: schema {name} has no {property:?}: {props}"
        );
        assert!(op["responses"]["401"].is_object(), "{method} {path}");
    }
    assert!(doc["paths"]["/api/logs/stream"]["get"].is_object());
}
