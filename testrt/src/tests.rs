//! Handler tests (in memory) and one end-to-end test over loopback TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::http::{self, Request, decode_chunked};
use crate::ollama::{
    After, App, Config, EVAL_NS_PER_TOKEN, normalise_name, pull_events, pull_fails,
};
use crate::util::EMBED_DIM;

fn app() -> App {
    App::new(Config {
        pull_delay: Duration::ZERO,
        token_delay: Duration::ZERO,
        ..Config::default()
    })
}

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
    after: After,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
    /// The NDJSON lines of a streamed body.
    fn lines(&self) -> Vec<Value> {
        assert!(self.head.contains("application/x-ndjson"), "{}", self.head);
        String::from_utf8(self.body.clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn call(app: &App, method: &str, path: &str, body: Option<Value>) -> Resp {
    let req = Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: Vec::new(),
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    };
    let mut out = Vec::new();
    let (status, after) = app.handle(&req, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
    let body = if head.contains("Transfer-Encoding: chunked") {
        decode_chunked(body.as_bytes())
    } else {
        body.as_bytes().to_vec()
    };
    Resp {
        status,
        head: head.to_string(),
        body,
        after,
    }
}

fn ps_names(app: &App) -> Vec<String> {
    call(app, "GET", "/api/ps", None).json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn version_root_health() {
    let a = app();
    assert_eq!(
        call(&a, "GET", "/api/version", None).json()["version"],
        "0.9.0-testrt"
    );
    let root = call(&a, "GET", "/", None);
    assert_eq!(
        (root.status, root.body.as_slice()),
        (200, &b"Ollama is running"[..])
    );
    assert_eq!(call(&a, "GET", "/health", None).json()["status"], "ok");
    let head = call(&a, "HEAD", "/", None);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(call(&a, "GET", "/nope", None).status, 404);
    assert_eq!(call(&a, "GET", "/api/generate", None).status, 405);

    let r = call(&a, "POST", "/testrt/health", Some(json!({"status": 503})));
    assert_eq!(r.status, 200);
    assert_eq!(call(&a, "GET", "/health", None).status, 503);
    assert_eq!(call(&a, "GET", "/api/version", None).status, 503);
    assert_eq!(call(&a, "GET", "/api/tags", None).status, 200);
}

#[test]
fn tags_show_delete() {
    let a = app();
    let tags = call(&a, "GET", "/api/tags", None).json();
    let models = tags["models"].as_array().unwrap();
    let names: Vec<_> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["llama3.2:1b", "nomic-embed-text:latest"]);
    let m = &models[0];
    assert_eq!(m["model"], "llama3.2:1b");
    assert!(m["size"].as_u64().unwrap() > 0);
    assert_eq!(m["digest"].as_str().unwrap().len(), 64);
    assert!(m["modified_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(m["details"]["parameter_size"], "1B");
    assert_eq!(m["details"]["format"], "gguf");

    let show = call(
        &a,
        "POST",
        "/api/show",
        Some(json!({"model": "nomic-embed-text"})),
    );
    assert_eq!(show.status, 200);
    assert_eq!(show.json()["capabilities"], json!(["embedding"]));
    assert_eq!(show.json()["details"]["family"], "nomic-bert");
    let missing = call(&a, "POST", "/api/show", Some(json!({"model": "x"})));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "model 'x' not found"}));
    assert_eq!(call(&a, "POST", "/api/show", Some(json!({}))).status, 400);
    assert_eq!(call(&a, "POST", "/api/show", None).status, 400);

    let del = call(
        &a,
        "DELETE",
        "/api/delete",
        Some(json!({"model": "llama3.2:1b"})),
    );
    assert_eq!(del.status, 200);
    assert!(del.body.is_empty());
    let again = call(
        &a,
        "DELETE",
        "/api/delete",
        Some(json!({"model": "llama3.2:1b"})),
    );
    assert_eq!(again.status, 404);
    assert_eq!(again.json()["error"], "model 'llama3.2:1b' not found");
    let tags = call(&a, "GET", "/api/tags", None).json();
    assert_eq!(tags["models"].as_array().unwrap().len(), 1);
}

#[test]
fn name_normalisation() {
    assert_eq!(normalise_name("llama3.2"), "llama3.2:latest");
    assert_eq!(normalise_name("llama3.2:1b"), "llama3.2:1b");
    assert_eq!(normalise_name("host:5000/ns/m"), "host:5000/ns/m:latest");
    assert_eq!(normalise_name(" m:7b "), "m:7b");
}

#[test]
fn pull_stream_shape_and_install() {
    let events = pull_events("qwen2.5:0.5b");
    assert_eq!(
        events.first().unwrap(),
        &json!({"status": "pulling manifest"})
    );
    assert_eq!(events.last().unwrap(), &json!({"status": "success"}));
    let progress: Vec<_> = events
        .iter()
        .filter(|e| e.get("digest").is_some())
        .collect();
    assert!(progress.len() >= 4);
    for p in &progress {
        let (total, done) = (
            p["total"].as_u64().unwrap(),
            p["completed"].as_u64().unwrap(),
        );
        assert!(done <= total && total > 0);
        let digest = p["digest"].as_str().unwrap();
        assert!(digest.starts_with("sha256:") && digest.len() == 71);
        assert_eq!(p["status"], format!("pulling {}", &digest[7..19]));
    }
    // The big layer reports growing progress, ending complete.
    let first: Vec<u64> = progress
        .iter()
        .filter(|p| p["digest"] == progress[0]["digest"])
        .map(|p| p["completed"].as_u64().unwrap())
        .collect();
    assert!(first.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(
        *first.last().unwrap(),
        progress[0]["total"].as_u64().unwrap()
    );

    let a = app();
    let r = call(
        &a,
        "POST",
        "/api/pull",
        Some(json!({"model": "qwen2.5:0.5b"})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.lines(), events);
    let tags = call(&a, "GET", "/api/tags", None).json();
    assert!(
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "qwen2.5:0.5b")
    );

    let r = call(
        &a,
        "POST",
        "/api/pull",
        Some(json!({"model": "phi3", "stream": false})),
    );
    assert_eq!(r.json(), json!({"status": "success"}));
    assert_eq!(
        call(&a, "POST", "/api/show", Some(json!({"model": "phi3"}))).status,
        200
    );
}

#[test]
fn pull_of_unknown_model_fails() {
    assert!(pull_fails("missing-model:1b"));
    assert!(!pull_fails("llama3.2"));
    let a = app();
    let r = call(
        &a,
        "POST",
        "/api/pull",
        Some(json!({"model": "missing-model"})),
    );
    let lines = r.lines();
    assert_eq!(lines[0]["status"], "pulling manifest");
    assert_eq!(
        lines.last().unwrap()["error"],
        "pull model manifest: file does not exist"
    );
    let r = call(
        &a,
        "POST",
        "/api/pull",
        Some(json!({"model": "missing-model", "stream": false})),
    );
    assert_eq!(r.status, 500);
    assert_eq!(
        call(
            &a,
            "POST",
            "/api/show",
            Some(json!({"model": "missing-model"}))
        )
        .status,
        404
    );
}

#[test]
fn generate_loads_answers_and_reports_speed() {
    let a = app();
    assert!(ps_names(&a).is_empty());
    let body = json!({"model": "llama3.2:1b", "prompt": "Why is the sky blue?", "stream": false});
    let r = call(&a, "POST", "/api/generate", Some(body.clone()));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["done"], true);
    assert_eq!(v["done_reason"], "stop");
    assert_eq!(v["model"], "llama3.2:1b");
    assert!(
        v["response"]
            .as_str()
            .unwrap()
            .contains("Why is the sky blue?")
    );
    let (n, d) = (
        v["eval_count"].as_u64().unwrap(),
        v["eval_duration"].as_u64().unwrap(),
    );
    assert!(n > 0);
    assert_eq!(d, n * EVAL_NS_PER_TOKEN);
    assert!(v["total_duration"].as_u64().unwrap() > d);
    // Deterministic.
    let again = call(&a, "POST", "/api/generate", Some(body)).json();
    assert_eq!(again["response"], v["response"]);
    // Loaded now, with an expiry about 5 min ahead.
    let ps = call(&a, "GET", "/api/ps", None).json();
    let m = &ps["models"][0];
    assert_eq!(m["name"], "llama3.2:1b");
    assert!(m["size_vram"].as_u64().unwrap() > 0);
    assert!(m["expires_at"].as_str().unwrap().ends_with('Z'));

    let r = call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "nope", "prompt": "hi"})),
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"],
        "model \"nope\" not found, try pulling it first"
    );
    let r = call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "nomic-embed-text", "prompt": "hi"})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        call(&a, "POST", "/api/generate", Some(json!({"prompt": "x"}))).status,
        400
    );
    let r = call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "llama3.2:1b", "prompt": "x", "keep_alive": "soon"})),
    );
    assert_eq!(r.status, 400);
}

#[test]
fn keep_alive_zero_unloads() {
    for ka in [json!(0), json!("0"), json!("0s")] {
        let a = app();
        call(
            &a,
            "POST",
            "/api/generate",
            Some(json!({"model": "llama3.2:1b"})),
        );
        assert_eq!(ps_names(&a), ["llama3.2:1b"], "empty prompt loads");
        let r = call(
            &a,
            "POST",
            "/api/generate",
            Some(json!({"model": "llama3.2:1b", "keep_alive": ka})),
        );
        let v = r.json();
        assert_eq!(
            (v["done"].clone(), v["done_reason"].clone()),
            (json!(true), json!("unload"))
        );
        assert!(ps_names(&a).is_empty(), "keep_alive {ka} unloads");

        // Chat: answered, then unloaded.
        let r = call(
            &a,
            "POST",
            "/api/chat",
            Some(
                json!({"model": "llama3.2:1b", "keep_alive": ka, "stream": false,
                        "messages": [{"role": "user", "content": "hello"}]}),
            ),
        );
        assert_eq!(r.json()["done_reason"], "stop");
        assert!(ps_names(&a).is_empty());
        let r = call(
            &a,
            "POST",
            "/api/chat",
            Some(json!({"model": "llama3.2:1b", "keep_alive": ka, "messages": []})),
        );
        assert_eq!(r.json()["done_reason"], "unload");
        assert_eq!(r.json()["message"]["role"], "assistant");
    }
    // The request log shows what arrived.
    let a = app();
    call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "llama3.2:1b", "keep_alive": 0})),
    );
    let log = call(&a, "GET", "/testrt/requests", None).json();
    let last = log["requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["path"], "/api/generate");
    assert_eq!(last["body"]["keep_alive"], 0);
}

#[test]
fn keep_alive_negative_and_short() {
    let a = app();
    call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "llama3.2:1b", "keep_alive": -1})),
    );
    let ps = call(&a, "GET", "/api/ps", None).json();
    assert!(ps["models"][0]["expires_at"].as_str().unwrap() > "2300");
    call(
        &a,
        "POST",
        "/api/generate",
        Some(json!({"model": "llama3.2:1b", "keep_alive": "50ms"})),
    );
    assert_eq!(ps_names(&a), ["llama3.2:1b"]);
    std::thread::sleep(Duration::from_millis(120));
    assert!(ps_names(&a).is_empty(), "expired models leave /api/ps");
}

#[test]
fn streamed_chat_and_num_predict() {
    let a = app();
    let r = call(
        &a,
        "POST",
        "/api/chat",
        Some(json!({"model": "llama3.2:1b",
                    "messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "hi there"}]})),
    );
    let lines = r.lines();
    assert!(lines.len() > 2);
    let (last, chunks) = lines.split_last().unwrap();
    assert!(
        chunks
            .iter()
            .all(|c| c["done"] == false && c["message"]["role"] == "assistant")
    );
    let text: String = chunks
        .iter()
        .map(|c| c["message"]["content"].as_str().unwrap())
        .collect();
    assert!(text.contains("hi there"), "{text}");
    assert_eq!(last["done"], true);
    assert_eq!(last["eval_count"].as_u64().unwrap(), chunks.len() as u64);

    let r = call(
        &a,
        "POST",
        "/api/generate",
        Some(
            json!({"model": "llama3.2:1b", "prompt": "count", "stream": false,
                    "options": {"num_predict": 3}}),
        ),
    );
    let v = r.json();
    assert_eq!(v["eval_count"], 3);
    assert_eq!(v["done_reason"], "length");
}

#[test]
fn embed_shapes_and_determinism() {
    let a = app();
    let one = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "nomic-embed-text", "input": "hello"})),
    )
    .json();
    assert_eq!(one["model"], "nomic-embed-text");
    let e = one["embeddings"].as_array().unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].as_array().unwrap().len(), EMBED_DIM);
    let many = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "nomic-embed-text", "input": ["hello", "world"]})),
    )
    .json();
    assert_eq!(many["embeddings"][0], one["embeddings"][0]);
    assert_ne!(many["embeddings"][0], many["embeddings"][1]);
    let small = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "nomic-embed-text", "input": "x", "dimensions": 8})),
    )
    .json();
    assert_eq!(small["embeddings"][0].as_array().unwrap().len(), 8);
    let bad = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "nomic-embed-text", "input": 5})),
    );
    assert_eq!(bad.status, 400);
    let unknown = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "bge-m3", "input": "x"})),
    );
    assert_eq!(unknown.status, 404);
    let legacy = call(
        &a,
        "POST",
        "/api/embeddings",
        Some(json!({"model": "nomic-embed-text", "prompt": "hello"})),
    )
    .json();
    assert_eq!(legacy["embedding"], one["embeddings"][0]);
    let svc = call(&a, "POST", "/embed", Some(json!({"texts": ["hello"]}))).json();
    assert_eq!(svc["vectors"][0], one["embeddings"][0]);
    assert_eq!(svc["dimension"], EMBED_DIM);
}

#[test]
fn request_log_is_bounded_and_clearable() {
    let a = app();
    for i in 0..130 {
        call(
            &a,
            "POST",
            "/api/show",
            Some(json!({"model": format!("m{i}")})),
        );
    }
    call(&a, "POST", "/api/show", None);
    let log = call(&a, "GET", "/testrt/requests", None).json();
    let reqs = log["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 100);
    assert_eq!(reqs[0]["body"]["model"], "m31");
    assert_eq!(reqs[99]["body"], Value::Null);
    let r = call(&a, "DELETE", "/testrt/requests", None).json();
    assert_eq!(r["cleared"], 100);
    let log = call(&a, "GET", "/testrt/requests", None).json();
    assert!(log["requests"].as_array().unwrap().is_empty());
}

#[test]
fn controls_return_actions() {
    let a = app();
    let r = call(&a, "POST", "/testrt/exit", Some(json!({"code": 7})));
    assert_eq!((r.status, r.after), (200, After::Exit(7)));
    assert_eq!(call(&a, "POST", "/testrt/exit", None).after, After::Exit(1));
    assert_eq!(call(&a, "POST", "/testrt/oom", None).after, After::Oom);
    assert!(!a.hanging.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(call(&a, "POST", "/testrt/hang", None).status, 200);
    assert!(a.hanging.load(std::sync::atomic::Ordering::SeqCst));
}

#[test]
fn listen_address_precedence() {
    use super::listen_addr;
    let s = |x: &str| Some(x.to_string());
    assert_eq!(
        listen_addr(None, None, None).unwrap().to_string(),
        "0.0.0.0:11434"
    );
    assert_eq!(
        listen_addr(None, s("8080"), None).unwrap().to_string(),
        "0.0.0.0:8080"
    );
    assert_eq!(
        listen_addr(s("127.0.0.1:9"), s("8080"), None)
            .unwrap()
            .to_string(),
        "127.0.0.1:9"
    );
    assert_eq!(
        listen_addr(None, None, s("http://0.0.0.0:11500/"))
            .unwrap()
            .to_string(),
        "0.0.0.0:11500"
    );
    assert_eq!(
        listen_addr(None, None, s("0.0.0.0")).unwrap().to_string(),
        "0.0.0.0:11434"
    );
    assert!(listen_addr(None, s("x"), None).is_err());
}

/// Sends raw bytes and reads the whole response (the server closes).
fn raw(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn end_to_end_over_loopback_including_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(app());
    let served = app.clone();
    std::thread::spawn(move || super::serve(listener, served));

    let out = raw(addr, "GET /api/version HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(out.ends_with("{\"version\":\"0.9.0-testrt\"}"), "{out}");

    let body = r#"{"model":"llama3.2:1b","prompt":"hi"}"#;
    let out = raw(
        addr,
        &format!(
            "POST /api/generate HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    );
    let (head, chunked) = out.split_once("\r\n\r\n").unwrap();
    assert!(head.contains("application/x-ndjson"));
    let text = String::from_utf8(http::decode_chunked(chunked.as_bytes())).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["done"], true);

    let out = raw(addr, "BROKEN\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");

    // Hang: the connection is accepted, nothing ever comes back.
    let out = raw(addr, "POST /testrt/hang HTTP/1.1\r\n\r\n");
    assert!(out.starts_with("HTTP/1.1 200"));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n\r\n").unwrap();
    let mut buf = [0u8; 16];
    let e = s.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{e}"
    );
}
