//! The AI routes against the test runtime (scripts/testrt-image) on the real
//! Docker engine: a supervisor runs in-process, the router is called with
//! `oneshot` and a real admin token. Each test has its own project label and
//! network, removed at the end even when it fails.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use arasuld::docker::{ServiceState, SupervisorHandle};
use arasuld::state::AppState;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::docker::{IMAGE, Project, SOCKET, spawn_supervisor};
use common::wait_until;
use serde_json::{Value, json};
use tower::ServiceExt;

const PASSWORD: &str = "Ai-Test-Passw0rd!";

/// One test's corner of the engine: an LLM and an embedding service (both
/// the test runtime; the embedding service on port 11435, so the port must
/// come from the catalog), a supervisor, and the router over them.
struct Env {
    /// Held for its Drop: removes the containers and network afterwards.
    _project: Project,
    dir: tempfile::TempDir,
    rt: Option<tokio::runtime::Runtime>,
    handle: SupervisorHandle,
    state: AppState,
    /// The router most calls go to (it holds the "last tokens/s").
    router: Router,
    token: String,
}

impl Env {
    fn new(tag: &str) -> Env {
        Env::with_llm(tag, 10, "", |_| {})
    }

    /// `pull_ms`: the runtime's pause between pull lines; `llm_extra`: more
    /// keys of the llm service (`{dir}` is the test's directory); `tweak`
    /// changes the daemon's config.
    fn with_llm(
        tag: &str,
        pull_ms: u32,
        llm_extra: &str,
        tweak: impl FnOnce(&mut arasuld::config::Config),
    ) -> Env {
        let project = Project::new(&format!("ai{tag}"));
        let (p, network) = (project.name.clone(), project.network());
        let dir = tempfile::tempdir().unwrap();
        let llm_extra = llm_extra.replace("{dir}", &dir.path().display().to_string());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let text = format!(
            r#"project: {p}
network: {network}
services:
- name: llm
  image: {IMAGE}
  role: llm
  env: {{TESTRT_PULL_DELAY_MS: "{pull_ms}", TESTRT_TOKEN_DELAY_MS: "1"}}
  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
{llm_extra}- name: embeddings
  image: {IMAGE}
  role: embeddings
  env: {{PORT: "11435"}}
  health: {{http: {{port: 11435, path: /health}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
"#
        );
        let services_file = dir.path().join("services.yaml");
        std::fs::write(&services_file, &text).unwrap();
        let catalog = arasuld::docker::catalog::parse("test", &text).unwrap();

        let mut config = common::offline_config();
        config.paths.services_file = services_file;
        config.paths.state_dir = dir.path().to_path_buf();
        tweak(&mut config);
        let (handle, state) = {
            let _guard = rt.enter();
            let (workers, handle) = spawn_supervisor(dir.path(), catalog, SOCKET);
            let auth = Arc::new(common::fast_auth(dir.path()));
            let state = common::app_state(config, auth, workers, handle.clone());
            arasuld::ai::pulls::spawn(&state.workers, state.models.clone());
            (handle, state)
        };
        let router = arasuld::api::router(state.clone());
        let mut env = Env {
            _project: project,
            dir,
            rt: Some(rt),
            handle,
            state,
            router,
            token: String::new(),
        };
        env.token = env.admin_token();
        env
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    /// Logs in with the generated initial password and changes it.
    fn admin_token(&self) -> String {
        let initial =
            std::fs::read_to_string(self.dir.path().join("secrets/initial-admin-password"))
                .unwrap()
                .trim()
                .to_owned();
        let (s, v) = self.send_json(
            Method::POST,
            "/api/auth/login",
            Some(json!({"username": "admin", "password": initial})),
        );
        assert_eq!(s, StatusCode::OK, "{v}");
        let token = v["token"].as_str().unwrap().to_owned();
        let req = Request::post("/api/auth/change-password")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::from(
                json!({"current_password": initial, "new_password": PASSWORD}).to_string(),
            ))
            .unwrap();
        let (s, _, body) = self.call(&self.router, req);
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        token
    }

    fn wait_healthy(&self) {
        for name in ["llm", "embeddings"] {
            wait_until(&format!("{name} healthy"), Duration::from_secs(40), || {
                (self.handle.service(name)?.state == ServiceState::Healthy).then_some(())
            });
        }
    }

    fn call(
        &self,
        router: &Router,
        req: Request<Body>,
    ) -> (StatusCode, header::HeaderMap, Vec<u8>) {
        self.rt().block_on(async {
            let resp = router.clone().oneshot(req).await.unwrap();
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = tokio::time::timeout(
                Duration::from_secs(60),
                axum::body::to_bytes(resp.into_body(), usize::MAX),
            )
            .await
            .expect("the body ends within 60 s")
            .unwrap();
            (status, headers, body.to_vec())
        })
    }

    fn request(&self, method: Method, uri: &str, body: Option<Value>) -> Request<Body> {
        let b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string()))
                .unwrap(),
            None => b.body(Body::empty()).unwrap(),
        }
    }

    /// Through the shared router; the body parsed as JSON (Null if it is not).
    fn send_json(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let req = self.request(method, uri, body);
        let (s, _, b) = self.call(&self.router, req);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// Through a fresh router (its own rate limits), for input checks.
    fn send_fresh(&self, method: Method, uri: &str, body: Value) -> (StatusCode, Value) {
        let router = arasuld::api::router(self.state.clone());
        let req = self.request(method, uri, Some(body));
        let (s, _, b) = self.call(&router, req);
        (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    /// A streamed answer: (status, content type, events as (name, data)).
    fn send_sse(&self, uri: &str, body: Value) -> (StatusCode, String, Vec<(String, Value)>) {
        let req = self.request(Method::POST, uri, Some(body));
        let (s, h, b) = self.call(&self.router, req);
        let ct = h
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (s, ct, parse_sse(&String::from_utf8_lossy(&b)))
    }

    /// What the test runtime of `service` received.
    fn runtime_requests(&self, service: &str, port: u16) -> Vec<Value> {
        let addr = self.handle.service(service).unwrap().address.unwrap();
        self.rt().block_on(async {
            let v: Value = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("http://{addr}:{port}/testrt/requests"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["requests"].as_array().unwrap().clone()
        })
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // Stop the supervisor first, so nothing recreates what `project`
        // removes when it is dropped right after.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// GET or POST on the test runtime of `service` itself.
fn runtime_call(
    env: &Env,
    service: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let addr = env.handle.service(service).unwrap().address.unwrap();
    env.rt().block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut req = c.request(method, format!("http://{addr}:11434{path}"));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    })
}

fn parse_sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = "message".to_string();
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(d.trim()).expect("JSON data"));
                }
            }
            data.map(|d| (name, d))
        })
        .collect()
}

fn model_names(v: &Value) -> Vec<String> {
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn assert_error(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["timestamp"].is_string(), "{v}");
}

#[test]
fn models_are_listed_shown_pulled_deleted_and_unloaded() {
    let env = Env::new("models");
    env.wait_healthy();

    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["timestamp"].is_string());
    assert!(model_names(&v).contains(&"llama3.2:1b".to_string()), "{v}");

    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models/llama3.2:1b", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["name"], "llama3.2:1b");
    assert!(
        v["model"]["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("completion"))
    );
    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models/nope:1b", None);
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "model_not_found");
    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models/a%2Fb", None);
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error(&v, "invalid_model");

    // Pull: progress lines in order, then `done`; the model is then listed.
    let (s, ct, events) = env.send_sse(
        "/api/services/llm/models/pull",
        json!({"model": "tinyllama:1b"}),
    );
    assert_eq!(s, StatusCode::OK, "{events:?}");
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let (last, progress) = events.split_last().unwrap();
    assert_eq!(last.0, "done", "{events:?}");
    assert_eq!(last.1["model"], "tinyllama:1b");
    assert!(progress.iter().all(|(n, _)| n == "message"), "{events:?}");
    assert_eq!(progress.first().unwrap().1["status"], "pulling manifest");
    assert_eq!(progress.last().unwrap().1["status"], "success");
    let completed: Vec<u64> = progress
        .iter()
        .filter(|(_, d)| d["digest"] == progress[1].1["digest"])
        .map(|(_, d)| d["completed"].as_u64().unwrap())
        .collect();
    assert!(
        completed.len() > 1 && completed.is_sorted(),
        "{completed:?}"
    );
    let (_, v) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert!(model_names(&v).contains(&"tinyllama:1b".to_string()), "{v}");

    // A pull the runtime fails ends in an `error` event.
    let (s, _, events) = env.send_sse(
        "/api/services/llm/models/pull",
        json!({"model": "missing-model:1"}),
    );
    assert_eq!(s, StatusCode::OK);
    let last = events.last().unwrap();
    assert_eq!(last.0, "error", "{events:?}");
    assert_eq!(last.1["code"], "pull_failed");
    assert!(
        last.1["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );

    // A chat loads the model; the status page shows it and the speed.
    let (s, v) = env.send_json(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"model": "tinyllama:1b", "messages": [{"role": "user", "content": "hello"}]})),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = env.send_json(Method::GET, "/api/services/ai", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["llm"]["state"], "healthy");
    assert_eq!(v["embeddings"]["name"], "embeddings");
    assert!(
        model_names(&json!({"models": v["loaded_models"]})).contains(&"tinyllama:1b".to_string()),
        "{v}"
    );
    assert!(v["gpu_utilization_percent"].is_null());
    // testrt reports 25 ms per token: 40 tokens/s.
    assert!(
        (v["last_tokens_per_second"].as_f64().unwrap() - 40.0).abs() < 0.01,
        "{v}"
    );
    assert_eq!(v["last_generation"]["model"], "tinyllama:1b");

    // Unload all: through /api/generate with keep_alive 0.
    let (s, v) = env.send_json(Method::POST, "/api/services/llm/unload", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["unloaded"], json!(["tinyllama:1b"]));
    let unloads: Vec<Value> = env
        .runtime_requests("llm", 11434)
        .into_iter()
        .filter(|r| r["path"] == "/api/generate")
        .collect();
    assert_eq!(unloads.len(), 1, "{unloads:?}");
    assert_eq!(unloads[0]["body"]["keep_alive"], 0);
    assert_eq!(unloads[0]["body"]["stream"], false);
    assert_eq!(unloads[0]["body"]["model"], "tinyllama:1b");
    let (_, v) = env.send_json(Method::GET, "/api/services/ai", None);
    assert_eq!(v["loaded_models"], json!([]), "{v}");
    // Naming a model that is not installed.
    let (s, v) = env.send_json(
        Method::POST,
        "/api/services/llm/unload",
        Some(json!({"model": "nope:1b"})),
    );
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");

    let (s, v) = env.send_json(
        Method::DELETE,
        "/api/services/llm/models/tinyllama:1b",
        None,
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["deleted"], "tinyllama:1b");
    let (_, v) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert!(
        !model_names(&v).contains(&"tinyllama:1b".to_string()),
        "{v}"
    );
    let (s, v) = env.send_json(
        Method::DELETE,
        "/api/services/llm/models/tinyllama:1b",
        None,
    );
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error(&v, "model_not_found");

    // The service routes still answer for the service named `llm`.
    let (s, v) = env.send_json(Method::GET, "/api/services/llm", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["service"]["name"], "llm");
    let (s, v) = env.send_json(Method::POST, "/api/services/llm/restart", None);
    assert_eq!(s, StatusCode::OK, "{v}");

    // A runtime that stops answering gives a bounded error, not a hang:
    // 504 from the client's timeout, or 503 once the health probe saw it.
    env.wait_healthy();
    let addr = env.handle.service("llm").unwrap().address.unwrap();
    env.rt().block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .post(format!("http://{addr}:11434/testrt/hang"))
            .send()
            .await
            .unwrap();
    });
    let t0 = std::time::Instant::now();
    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert!(
        s == StatusCode::GATEWAY_TIMEOUT || s == StatusCode::SERVICE_UNAVAILABLE,
        "{s}: {v}"
    );
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
}

#[test]
fn chat_and_embeddings_pass_through_and_refuse_oversized_input() {
    let env = Env::new("chat");
    env.wait_healthy();
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is an edge appliance?"}
    ]);

    // Non-streamed, default model (the first chat model installed).
    let (s, v) = env.send_json(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"messages": messages, "temperature": 0.2})),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "llama3.2:1b");
    assert_eq!(v["message"]["role"], "assistant");
    let answer = v["message"]["content"].as_str().unwrap().to_string();
    assert!(answer.contains("What is an edge appliance?"), "{answer}");
    assert!(v["tokens"].as_u64().unwrap() > 3);
    assert!((v["tokens_per_second"].as_f64().unwrap() - 40.0).abs() < 0.01);
    assert!(v["timestamp"].is_string());
    let sent = env
        .runtime_requests("llm", 11434)
        .into_iter()
        .rfind(|r| r["path"] == "/api/chat")
        .unwrap();
    assert_eq!(sent["body"]["options"]["temperature"], 0.2);
    assert_eq!(sent["body"]["stream"], false);
    assert_eq!(sent["body"]["messages"], messages);

    // Streamed: the chunks add up to the same answer, then the stats.
    let (s, ct, events) = env.send_sse(
        "/api/llm/chat",
        json!({"messages": messages, "stream": true}),
    );
    assert_eq!(s, StatusCode::OK, "{events:?}");
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let (last, chunks) = events.split_last().unwrap();
    assert!(chunks.len() > 3, "{events:?}");
    let text: String = chunks
        .iter()
        .map(|(n, d)| {
            assert_eq!(n, "message");
            d["content"].as_str().unwrap()
        })
        .collect();
    assert_eq!(text, answer);
    assert_eq!(last.0, "done", "{events:?}");
    assert_eq!(last.1["model"], "llama3.2:1b");
    assert_eq!(last.1["done_reason"], "stop");

    // max_tokens reaches the runtime as num_predict.
    let (s, v) = env.send_json(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"messages": messages, "max_tokens": 3})),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["tokens"], 3);
    assert_eq!(v["done_reason"], "length");
    // An embedding model cannot chat: the runtime's 400 is passed on.
    let (s, v) = env.send_json(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"messages": messages, "model": "nomic-embed-text"})),
    );
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error(&v, "llm_rejected");

    // Embeddings, one text and several, through the service on port 11435.
    let (s, v) = env.send_fresh(Method::POST, "/api/embeddings", json!({"text": "hello"}));
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["model"], "nomic-embed-text");
    assert_eq!(v["dimension"], 384);
    let one = v["vectors"].as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].as_array().unwrap().len(), 384);
    let (s, v) = env.send_fresh(
        Method::POST,
        "/api/embeddings",
        json!({"text": ["hello", "world"]}),
    );
    assert_eq!(s, StatusCode::OK, "{v}");
    let two = v["vectors"].as_array().unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0], one[0], "the same text gives the same vector");
    assert_ne!(two[0], two[1]);
    let embeds = env
        .runtime_requests("embeddings", 11435)
        .into_iter()
        .filter(|r| r["path"] == "/api/embed")
        .count();
    assert_eq!(embeds, 2);
    let (s, v) = env.send_json(Method::GET, "/api/services/embedding/info", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["info"]["model"], "nomic-embed-text");
    assert_eq!(v["info"]["dimension"], 384);
    assert_eq!(v["service"]["state"], "healthy");

    // Input limits.
    let user = |content: String| json!({"role": "user", "content": content});
    let checks = [
        (
            "/api/llm/chat",
            json!({"messages": messages, "max_tokens": 2049}),
            StatusCode::BAD_REQUEST,
            "invalid_max_tokens",
        ),
        (
            "/api/llm/chat",
            json!({"messages": messages, "temperature": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_temperature",
        ),
        (
            "/api/llm/chat",
            json!({"messages": []}),
            StatusCode::BAD_REQUEST,
            "invalid_messages",
        ),
        (
            "/api/llm/chat",
            json!({"messages": [{"role": "robot", "content": "x"}]}),
            StatusCode::BAD_REQUEST,
            "invalid_messages",
        ),
        (
            "/api/llm/chat",
            json!({"messages": vec![user("hi".into()); 101]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
        ),
        (
            "/api/llm/chat",
            json!({"messages": [user("x".repeat(40_000)), user("y".repeat(30_000))]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
        ),
        (
            "/api/llm/chat",
            json!({"messages": messages, "model": "evil/model"}),
            StatusCode::BAD_REQUEST,
            "invalid_model",
        ),
        (
            "/api/llm/chat",
            json!({"prompt": "x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            "/api/embeddings",
            json!({"text": vec!["a"; 65]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_texts",
        ),
        (
            "/api/embeddings",
            json!({"text": "z".repeat(8 * 1024 + 1)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_large",
        ),
        (
            "/api/embeddings",
            json!({"text": []}),
            StatusCode::BAD_REQUEST,
            "invalid_text",
        ),
        (
            "/api/embeddings",
            json!({"text": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (uri, body, status, code) in checks {
        let (s, v) = env.send_fresh(Method::POST, uri, body);
        assert_eq!(s, status, "{uri}: {v}");
        assert_error(&v, code);
    }
    let chats = env
        .runtime_requests("llm", 11434)
        .into_iter()
        .filter(|r| r["path"] == "/api/chat")
        .count();
    assert_eq!(chats, 4, "refused input never reaches the runtime");

    // The LLM stopped: 503 llm_unavailable; the status page still answers.
    env.rt().block_on(env.handle.stop("llm")).unwrap();
    let (s, v) = env.send_fresh(Method::POST, "/api/llm/chat", json!({"messages": messages}));
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_error(&v, "llm_unavailable");
    let (s, v) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert_error(&v, "llm_unavailable");
    let (s, v) = env.send_json(Method::GET, "/api/services/ai", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["llm"]["state"], "stopped");
    assert!(
        v["loaded_models"].is_null() && v["llm_error"].is_string(),
        "{v}"
    );
    // The last speed is still remembered.
    assert!(v["last_tokens_per_second"].is_number(), "{v}");
}

/// Without a supervisor behind the state (no services at all): every AI
/// route answers 503, and all of them are in the OpenAPI document.
#[tokio::test]
async fn without_ai_services_the_routes_answer_503_and_are_documented() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::offline_config();
    let workers = arasuld::tasks::Workers::new((&config.workers).into());
    let state = common::app_state(
        config,
        Arc::new(common::fast_auth(dir.path())),
        workers,
        SupervisorHandle::detached(),
    );
    let router = arasuld::api::router(state);
    let send = |req: Request<Body>| {
        let router = router.clone();
        async move {
            let resp = router.oneshot(req).await.unwrap();
            let s = resp.status();
            let b = axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap();
            (
                s,
                serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
            )
        }
    };
    let json_req = |method: Method, uri: &str, body: Value, token: Option<&str>| {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Body::from(body.to_string())).unwrap()
    };

    // Admin only.
    let (s, _) = send(json_req(Method::POST, "/api/llm/chat", json!({}), None)).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let initial =
        std::fs::read_to_string(dir.path().join("secrets/initial-admin-password")).unwrap();
    let (s, v) = send(json_req(
        Method::POST,
        "/api/auth/login",
        json!({"username": "admin", "password": initial.trim()}),
        None,
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let token = v["token"].as_str().unwrap().to_owned();
    let (s, v) = send(json_req(
        Method::POST,
        "/api/auth/change-password",
        json!({"current_password": initial.trim(), "new_password": PASSWORD}),
        Some(&token),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let messages = json!({"messages": [{"role": "user", "content": "hi"}]});
    for (method, uri, body, code) in [
        (
            Method::POST,
            "/api/llm/chat",
            messages.clone(),
            "llm_unavailable",
        ),
        (
            Method::GET,
            "/api/services/llm/models",
            Value::Null,
            "llm_unavailable",
        ),
        (
            Method::GET,
            "/api/services/llm/models/llama3.2:1b",
            Value::Null,
            "llm_unavailable",
        ),
        (
            Method::DELETE,
            "/api/services/llm/models/llama3.2:1b",
            Value::Null,
            "llm_unavailable",
        ),
        (
            Method::POST,
            "/api/services/llm/models/pull",
            json!({"model": "x:1"}),
            "llm_unavailable",
        ),
        (
            Method::POST,
            "/api/services/llm/unload",
            json!({}),
            "llm_unavailable",
        ),
        (
            Method::POST,
            "/api/embeddings",
            json!({"text": "x"}),
            "embeddings_unavailable",
        ),
        (
            Method::GET,
            "/api/services/embedding/info",
            Value::Null,
            "embeddings_unavailable",
        ),
    ] {
        let (s, v) = send(json_req(method.clone(), uri, body, Some(&token))).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{method} {uri}: {v}");
        assert_error(&v, code);
    }
    let (s, v) = send(json_req(
        Method::GET,
        "/api/services/ai",
        Value::Null,
        Some(&token),
    ))
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["llm"].is_null() && v["loaded_models"].is_null(), "{v}");
    assert!(v["last_tokens_per_second"].is_null());

    let (_, doc) = send(json_req(
        Method::GET,
        "/api/openapi.json",
        Value::Null,
        None,
    ))
    .await;
    for (path, method) in [
        ("/api/services/ai", "get"),
        ("/api/services/llm/models", "get"),
        ("/api/services/llm/models/{name}", "get"),
        ("/api/services/llm/models/{name}", "delete"),
        ("/api/services/llm/models/pull", "post"),
        ("/api/services/llm/unload", "post"),
        ("/api/services/embedding/info", "get"),
        ("/api/llm/chat", "post"),
        ("/api/embeddings", "post"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            op.is_object(),
            "{method} {path} missing from the OpenAPI document"
        );
        assert!(
            op["security"].as_array().is_some_and(|s| !s.is_empty()),
            "{method} {path} must be admin"
        );
    }
}

#[test]
fn the_services_api_lists_stops_starts_and_streams_logs_with_a_token_only() {
    let env = Env::new("svc");
    env.wait_healthy();
    // Public list; admin detail.
    let (s, v) = env.send_json(Method::GET, "/api/services", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    let names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["llm", "embeddings"]);
    // With the token the list has the details; anyone else on the LAN gets
    // the state only: no container, image id or address.
    assert!(v["services"][0]["address"].is_string(), "{v}");
    assert!(v["services"][0]["container_id"].is_string(), "{v}");
    let public = Request::get("/api/services").body(Body::empty()).unwrap();
    let (s, _, body) = env.call(&env.router, public);
    assert_eq!(s, StatusCode::OK);
    let public: Value = serde_json::from_slice(&body).unwrap();
    for svc in public["services"].as_array().unwrap() {
        assert_eq!(svc["state"], "healthy", "{svc}");
        for hidden in [
            "address",
            "container_id",
            "image_id",
            "api_port",
            "last_error",
        ] {
            assert_eq!(svc[hidden], Value::Null, "{hidden} in {svc}");
        }
    }
    let anonymous = Request::post("/api/services/embeddings/stop")
        .body(Body::empty())
        .unwrap();
    assert_eq!(env.call(&env.router, anonymous).0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        env.handle.service("embeddings").unwrap().state,
        ServiceState::Healthy
    );

    let (s, v) = env.send_json(Method::POST, "/api/services/embeddings/stop", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["service"]["state"], "stopped");
    assert_eq!(v["service"]["stopped_on_purpose"], true);
    let (s, v) = env.send_json(Method::POST, "/api/services/nope/restart", None);
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(v["error"]["code"], "not_found");

    let (s, v) = env.send_json(Method::POST, "/api/services/embeddings/start", None);
    assert_eq!(s, StatusCode::OK, "{v}");
    wait_until("embeddings healthy again", Duration::from_secs(30), || {
        (env.handle.service("embeddings")?.state == ServiceState::Healthy).then_some(())
    });

    // The container's log as SSE: the test runtime prints a start line.
    let req = env.request(Method::GET, "/api/services/llm/logs?tail=50", None);
    let (s, headers, body) = env.call(&env.router, req);
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let text = String::from_utf8_lossy(&body);
    assert!(text.lines().any(|l| l.starts_with("data:")), "{text}");
    let req = env.request(Method::GET, "/api/services/llm/logs?tail=99999", None);
    assert_eq!(env.call(&env.router, req).0, StatusCode::BAD_REQUEST);
}

/// Issue 16: a pull is admitted against the disk and the memory first
/// (refused with the numbers, in the page's language), waits in the one
/// queue, shows rate and ETA, is resumed after a stall (the runtime keeps
/// the partial blob), and a cancelled one leaves a partial download the
/// owner can see and remove. The sizes come from the registry's manifest,
/// which the test runtime serves.
#[test]
fn pulls_are_admitted_queued_resumed_after_a_stall_and_their_partials_removed() {
    // The model store on a 100 GiB tmpfs: the 70b model's 42 GB download
    // fits whatever this machine's disk holds, so its refusal is for memory.
    let store_root = tempfile::tempdir().unwrap();
    let _store_fs = common::Mount::tmpfs(&store_root.path().join("ollama"), "100g");
    let mut env = Env::with_llm(
        "pulls",
        100,
        &format!(
            "  volumes: [\"{}/ollama:/root/.ollama\"]\n",
            store_root.path().display()
        ),
        |c| {
            c.models.stall_timeout = Duration::from_secs(2);
            c.models.retries = 3;
        },
    );
    env.wait_healthy();
    // The registry is the runtime itself (it serves /v2/library/…).
    let addr = env.handle.service("llm").unwrap().address.unwrap();
    let mut config = (*env.state.config()).clone();
    config.models.registry = format!("http://{addr}:11434");
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(config));
    std::mem::forget(tx);
    let mut shared = (*env.state).clone();
    shared.config = rx.clone();
    // A second pulls worker, on a queue that reads this config.
    shared.models = {
        let _guard = env.rt().enter();
        let queue = env.dir.path().join("models/pulls.json");
        arasuld::ai::pulls::spawn(
            &shared.workers,
            arasuld::ai::pulls::PullDeps::new(
                arasuld::ai::pulls::PullQueue::open(Some(queue)),
                env.handle.clone(),
                rx,
            ),
        )
    };
    env.state = AppState::new(shared);
    env.router = arasuld::api::router(env.state.clone());
    let store = store_root.path().join("ollama/models");
    let manifest = |m: &str| -> Value {
        let (name, tag) = m.split_once(':').unwrap();
        runtime_call(
            &env,
            "llm",
            Method::GET,
            &format!("/v2/library/{name}/manifests/{tag}"),
            None,
        )
    };
    let size = |m: &Value| -> u64 {
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["size"].as_u64().unwrap())
            .sum::<u64>()
            + m["config"]["size"].as_u64().unwrap()
    };
    let send_lang = |method: Method, uri: &str, body: Option<Value>, lang: &str| {
        let mut req = env.request(method, uri, body);
        req.headers_mut()
            .insert(header::ACCEPT_LANGUAGE, lang.parse().unwrap());
        let (s, _, b) = env.call(&env.router, req);
        (
            s,
            serde_json::from_slice::<Value>(&b).unwrap_or(Value::Null),
        )
    };

    // ---- The curated list, each with what it needs and whether it fits.
    let (s, cat) = send_lang(Method::GET, "/api/models/catalog", None, "de-DE,de;q=0.9");
    assert_eq!(s, StatusCode::OK, "{cat}");
    let entries = cat["models"].as_array().unwrap();
    assert!(entries.len() >= 5, "{cat}");
    let small = entries.iter().find(|m| m["name"] == "llama3.2:1b").unwrap();
    assert_eq!(small["fits"], true, "{small}");
    assert_eq!(
        small["download_left"].as_u64(),
        Some(size(&manifest("llama3.2:1b"))),
        "the registry's size wins"
    );
    assert!(small["de"].as_str().unwrap().contains("klein"), "{small}");

    // ---- Refused for memory, in German, with the numbers; nothing queued.
    let (s, v) = send_lang(
        Method::POST,
        "/api/models/pulls",
        Some(json!({"model": "llama3.1:70b"})),
        "de",
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_error(&v, "insufficient_memory");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(
            "llama3.1:70b braucht etwa 48,8 GB Arbeitsspeicher, aber verfügbar sind nur etwa "
        ),
        "{msg}"
    );
    // ---- Installed behind arasuld's back, it still cannot be loaded for a chat.
    runtime_call(
        &env,
        "llm",
        Method::POST,
        "/api/pull",
        Some(json!({"model": "llama3.1:70b", "stream": false})),
    );
    let (s, v) = send_lang(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"model": "llama3.1:70b", "messages": [{"role": "user", "content": "hi"}]})),
        "en",
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_error(&v, "insufficient_memory");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("llama3.1:70b needs about 48.8 GB of memory to run"),
        "{v}"
    );
    let (s, v) = env.send_json(
        Method::POST,
        "/api/llm/chat",
        Some(json!({"model": "llama3.2:1b", "messages": [{"role": "user", "content": "hi"}]})),
    );
    assert_eq!(s, StatusCode::OK, "a model that fits still answers: {v}");
    // ---- Refused for disk: a model bigger than the free space, in English.
    let free = df_free(&store_root.path().join("ollama"));
    let billions = free / 600_000_000 + 2;
    let huge = format!("llama3.1:{billions}b");
    let (s, v) = send_lang(
        Method::POST,
        "/api/models/pulls",
        Some(json!({"model": huge})),
        "en-US",
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_error(&v, "insufficient_disk");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "{huge} needs {:.1} GB of disk space for its download, but the model store has ",
            (billions * 600_000_000) as f64 / 1e9
        )),
        "{msg}"
    );
    assert!(msg.contains("(2.1 GB of it is kept free)"), "2 GiB: {msg}");
    let (_, list) = env.send_json(Method::GET, "/api/models/pulls", None);
    assert_eq!(list["pulls"], json!([]), "refused pulls are not queued");
    // The SSE route refuses the same way, before any stream.
    let (s, v) = env.send_json(
        Method::POST,
        "/api/services/llm/models/pull",
        Some(json!({"model": "llama3.1:70b"})),
    );
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    // ---- A pull that stalls at 1 MB is cut after 2 s and resumed.
    runtime_call(
        &env,
        "llm",
        Method::POST,
        "/testrt/pull",
        Some(json!({"stall_at": 1_000_000})),
    );
    let (s, p) = env.send_json(
        Method::POST,
        "/api/models/pulls",
        Some(json!({"model": "llama3.2:3b"})),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{p}");
    let id = p["id"].as_u64().unwrap();
    let (s, again) = env.send_json(
        Method::POST,
        "/api/models/pulls",
        Some(json!({"model": "llama3.2:3b"})),
    );
    assert_eq!(
        (s, again["id"].as_u64()),
        (StatusCode::OK, Some(id)),
        "one queue entry per model"
    );
    let mut seen_rate = None;
    let done = wait_until("the pull done", Duration::from_secs(60), || {
        let (_, list) = env.send_json(Method::GET, "/api/models/pulls", None);
        let p = list["pulls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap();
        if p["state"] == "running"
            && p["rate"].as_f64().is_some_and(|r| r > 0.0)
            && p["eta_seconds"].is_u64()
        {
            seen_rate = Some(p.clone());
        }
        std::thread::sleep(Duration::from_millis(50));
        (p["state"] != "queued" && p["state"] != "running" && p["state"] != "retrying").then_some(p)
    });
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["stalls"], 1, "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    let total = size(&manifest("llama3.2:3b"));
    assert_eq!(
        (done["total"].as_u64(), done["completed"].as_u64()),
        (Some(total), Some(total)),
        "{done}"
    );
    let seen = seen_rate.expect("a running pull showed its rate and ETA");
    eprintln!("running pull as the API showed it: {seen}");
    let pulls = runtime_call(&env, "llm", Method::GET, "/testrt/pulls", None);
    let runs: Vec<&Value> = pulls["pulls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["model"] == "llama3.2:3b")
        .collect();
    assert_eq!(runs.len(), 2, "{pulls}");
    assert_eq!(runs[0]["stalled"], true);
    assert!(
        runs[1]["resumed_from"].as_u64().unwrap() >= 1_000_000,
        "the second try resumed: {pulls}"
    );
    let (_, tags) = env.send_json(Method::GET, "/api/services/llm/models", None);
    assert!(
        model_names(&tags).contains(&"llama3.2:3b".to_string()),
        "{tags}"
    );

    // ---- Cancelled mid-way: the partial download is listed and removable.
    runtime_call(
        &env,
        "llm",
        Method::POST,
        "/testrt/pull",
        Some(json!({"stall_at": 3_000_000})),
    );
    let (s, p) = env.send_json(
        Method::POST,
        "/api/models/pulls",
        Some(json!({"model": "qwen2.5:7b"})),
    );
    assert_eq!(s, StatusCode::ACCEPTED, "{p}");
    let id = p["id"].as_u64().unwrap();
    wait_until("the pull at its stall", Duration::from_secs(30), || {
        let (_, list) = env.send_json(Method::GET, "/api/models/pulls", None);
        (list["pulls"][0]["completed"].as_u64() >= Some(3_000_000)).then_some(())
    });
    let (s, v) = env.send_json(Method::DELETE, "/api/models/partials", None);
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_error(&v, "pull_running");
    let (s, c) = env.send_json(Method::DELETE, &format!("/api/models/pulls/{id}"), None);
    assert_eq!(
        (s, c["state"].as_str()),
        (StatusCode::OK, Some("cancelled")),
        "{c}"
    );
    let (s, v) = env.send_json(Method::DELETE, &format!("/api/models/pulls/{id}"), None);
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let weights = manifest("qwen2.5:7b")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, list) = env.send_json(Method::GET, "/api/models/pulls", None);
    let partial = list["partials"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["digest"] == weights.as_str())
        .cloned();
    let partial = partial.unwrap_or_else(|| panic!("the partial blob is listed: {list}"));
    assert!(partial["bytes"].as_u64().unwrap() >= 3_000_000, "{partial}");
    assert!(
        store
            .join("blobs")
            .join(format!("{}-partial", weights.replace(':', "-")))
            .exists()
    );
    let (s, r) = env.send_json(Method::DELETE, "/api/models/partials", None);
    assert_eq!(s, StatusCode::OK, "{r}");
    assert!(
        r["files"].as_u64().unwrap() >= 2 && r["bytes"].as_u64().unwrap() >= 3_000_000,
        "{r}"
    );
    let (_, list) = env.send_json(Method::GET, "/api/models/pulls", None);
    assert_eq!(list["partials"], json!([]), "{list}");
    // The finished model's blobs stay.
    let kept = manifest("llama3.2:3b")["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .replace(':', "-");
    assert!(
        store.join("blobs").join(kept).exists(),
        "a finished blob was removed"
    );
}

/// Free bytes of the file system holding `p` (as `df` shows them).
fn df_free(p: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
