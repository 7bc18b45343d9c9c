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
use crate::util::{EMBED_DIM, base64_decode};
use crate::ws::{self, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT};

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
    /// The `data:` payloads of a server-sent-events body, in order.
    fn events(&self) -> Vec<String> {
        assert!(self.head.contains("text/event-stream"), "{}", self.head);
        let text = String::from_utf8(self.body.clone()).unwrap();
        assert!(text.ends_with("\n\n"), "{text}");
        text.split_terminator("\n\n")
            .map(|e| e.strip_prefix("data: ").expect(e).to_string())
            .collect()
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
    call_with_headers(app, method, path, &[], body)
}

fn call_with_headers(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Resp {
    let req = Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect(),
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
fn generation_can_be_broken_while_the_version_still_answers() {
    let a = app();
    let request = json!({"model": "llama3.2:1b", "prompt": "hi", "stream": false});
    assert_eq!(
        call(&a, "POST", "/api/generate", Some(request.clone())).status,
        200
    );
    let r = call(&a, "POST", "/testrt/generate", Some(json!({"status": 500})));
    assert_eq!(r.status, 200);
    let r = call(&a, "POST", "/api/generate", Some(request.clone()));
    assert_eq!(r.status, 500);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("runner process")
    );
    assert_eq!(call(&a, "GET", "/api/version", None).status, 200);
    // Embeddings are another runner: untouched.
    let emb = json!({"model": "nomic-embed-text", "input": "x"});
    assert_eq!(call(&a, "POST", "/api/embed", Some(emb)).status, 200);
    call(&a, "POST", "/testrt/generate", Some(json!({"status": 200})));
    assert_eq!(call(&a, "POST", "/api/generate", Some(request)).status, 200);
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
    assert!(reqs[99]["headers"].as_object().unwrap().is_empty());
    let r = call(&a, "DELETE", "/testrt/requests", None).json();
    assert_eq!(r["cleared"], 100);
    call_with_headers(
        &a,
        "GET",
        "/api/tags",
        &[
            ("X-Forwarded-Prefix", "/ollama"),
            ("Accept", "a/b"),
            ("accept", "c/d"),
        ],
        None,
    );
    let log = call(&a, "GET", "/testrt/requests", None).json();
    assert_eq!(
        log["requests"][0]["headers"],
        json!({"x-forwarded-prefix": "/ollama", "accept": "a/b, c/d"})
    );
    call(&a, "DELETE", "/testrt/requests", None);
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

const CHAT: &str = "/v1/chat/completions";

fn openai_error(r: &Resp, status: u16, kind: &str) -> String {
    assert_eq!(r.status, status, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    let e = &v["error"];
    assert_eq!(e["type"], kind, "{v}");
    assert_eq!(
        (e["param"].clone(), e["code"].clone()),
        (Value::Null, Value::Null)
    );
    e["message"].as_str().unwrap().to_string()
}

#[test]
fn openai_chat_completion() {
    let a = app();
    let body = json!({"model": "llama3.2:1b",
                      "messages": [{"role": "system", "content": "be brief"},
                                   {"role": "user", "content": "hi there"}]});
    let r = call(&a, "POST", CHAT, Some(body.clone()));
    assert_eq!(r.status, 200);
    assert!(r.head.contains("application/json"), "{}", r.head);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "llama3.2:1b");
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["finish_reason"], "stop");
    // The same answer as /api/chat.
    let mut native = body.clone();
    native["stream"] = json!(false);
    let n = call(&a, "POST", "/api/chat", Some(native)).json();
    assert_eq!(choice["message"]["content"], n["message"]["content"]);
    let u = &v["usage"];
    assert_eq!(u["prompt_tokens"], n["prompt_eval_count"]);
    assert_eq!(u["completion_tokens"], n["eval_count"]);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(ps_names(&a), ["llama3.2:1b"], "answering loads the model");
    // Ids differ between requests.
    let again = call(&a, "POST", CHAT, Some(body.clone())).json();
    assert_ne!(again["id"], v["id"]);

    // max_tokens truncates, as num_predict does.
    let mut short = body.clone();
    short["max_tokens"] = json!(3);
    let v = call(&a, "POST", CHAT, Some(short)).json();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // Content given as parts.
    let parts = json!({"model": "llama3.2:1b", "messages": [{"role": "user",
        "content": [{"type": "text", "text": "hi there"}]}]});
    let v = call(&a, "POST", CHAT, Some(parts)).json();
    assert_eq!(
        v["choices"][0]["message"]["content"],
        n["message"]["content"]
    );

    // Errors, in OpenAI's shape.
    let r = call(
        &a,
        "POST",
        CHAT,
        Some(json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]})),
    );
    assert_eq!(
        openai_error(&r, 404, "not_found_error"),
        "model \"nope\" not found, try pulling it first"
    );
    let r = call(
        &a,
        "POST",
        CHAT,
        Some(json!({"model": "nomic-embed-text", "messages": [{"role": "user", "content": "x"}]})),
    );
    openai_error(&r, 400, "invalid_request_error");
    let r = call(
        &a,
        "POST",
        CHAT,
        Some(json!({"model": "llama3.2:1b", "messages": []})),
    );
    assert_eq!(
        openai_error(&r, 400, "invalid_request_error"),
        "[] is too short - 'messages'"
    );
    let r = call(
        &a,
        "POST",
        CHAT,
        Some(json!({"messages": [{"role": "user", "content": "x"}]})),
    );
    openai_error(&r, 400, "invalid_request_error");
    let r = call(&a, "POST", CHAT, None);
    openai_error(&r, 400, "invalid_request_error");
    let r = call(&a, "POST", CHAT, Some(json!([1])));
    openai_error(&r, 400, "invalid_request_error");
    assert_eq!(call(&a, "GET", CHAT, None).status, 405);
    // Recorded like every request.
    let log = call(&a, "GET", "/testrt/requests", None).json();
    let last = log["requests"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["method"].clone(), last["path"].clone()),
        (json!("GET"), json!(CHAT))
    );
}

#[test]
fn openai_chat_stream_is_sse_ending_in_done() {
    let a = app();
    let body = json!({"model": "llama3.2:1b", "stream": true,
                      "messages": [{"role": "user", "content": "hi there"}]});
    let whole = {
        let mut b = body.clone();
        b["stream"] = json!(false);
        call(&a, "POST", CHAT, Some(b)).json()
    };
    let r = call(&a, "POST", CHAT, Some(body.clone()));
    assert_eq!(r.status, 200);
    assert!(r.head.contains("Transfer-Encoding: chunked"), "{}", r.head);
    let events = r.events();
    let (done, chunks) = events.split_last().unwrap();
    assert_eq!(done, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let (last, tokens) = chunks.split_last().unwrap();
    assert!(tokens.len() > 2);
    let id = &chunks[0]["id"];
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(&c["id"], id);
        assert_eq!(c["model"], "llama3.2:1b");
        assert_eq!(c["system_fingerprint"], "fp_ollama");
        assert_eq!(c["choices"][0]["delta"]["role"], "assistant");
        assert!(c.get("usage").is_none());
    }
    assert!(
        tokens
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let text: String = tokens
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        text,
        whole["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert_eq!(last["choices"][0]["delta"]["content"], "");
    assert_eq!(last["choices"][0]["finish_reason"], "stop");

    // With usage, and cut by max_tokens.
    let mut b = body.clone();
    b["stream_options"] = json!({"include_usage": true});
    b["max_tokens"] = json!(2);
    let events = call(&a, "POST", CHAT, Some(b)).events();
    assert_eq!(events.len(), 2 + 1 + 1 + 1, "{events:?}");
    assert_eq!(events.last().unwrap(), "[DONE]");
    let fin: Value = serde_json::from_str(&events[2]).unwrap();
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    let usage: Value = serde_json::from_str(&events[3]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 2);
    assert_eq!(
        usage["usage"]["prompt_tokens"],
        whole["usage"]["prompt_tokens"]
    );
}

#[test]
fn openai_models() {
    let a = app();
    let r = call(&a, "GET", "/v1/models", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    let ids: Vec<_> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["llama3.2:1b", "nomic-embed-text:latest"]);
    for m in data {
        assert_eq!(m["object"], "model");
        assert_eq!(m["owned_by"], "library");
        assert!(m["created"].as_u64().unwrap() > 1_700_000_000);
    }
    let one = call(&a, "GET", "/v1/models/llama3.2:1b", None).json();
    assert_eq!(one, data[0]);
    let escaped = call(&a, "GET", "/v1/models/llama3.2%3A1b", None).json();
    assert_eq!(escaped["id"], "llama3.2:1b");
    // The id is the name as asked.
    let short = call(&a, "GET", "/v1/models/nomic-embed-text", None).json();
    assert_eq!(short["id"], "nomic-embed-text");
    let r = call(&a, "GET", "/v1/models/nope:7b", None);
    assert_eq!(
        openai_error(&r, 404, "not_found_error"),
        "model 'nope:7b' not found"
    );
    assert_eq!(call(&a, "POST", "/v1/models", None).status, 405);
    assert_eq!(
        call(&a, "DELETE", "/v1/models/llama3.2:1b", None).status,
        405
    );
    let head = call(&a, "HEAD", "/v1/models", None);
    assert_eq!((head.status, head.body.len()), (200, 0));
}

/// Base64 of little-endian f32s → the floats.
fn floats_of_base64(s: &str) -> Vec<f32> {
    base64_decode(s)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn openai_embeddings_float_and_base64() {
    let a = app();
    let native = call(
        &a,
        "POST",
        "/api/embed",
        Some(json!({"model": "nomic-embed-text", "input": ["a b", "c"]})),
    )
    .json();
    let body = json!({"model": "nomic-embed-text", "input": ["a b", "c"]});
    let r = call(&a, "POST", "/v1/embeddings", Some(body.clone()));
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "nomic-embed-text");
    assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"], native["embeddings"][i]);
    }
    // A single string; dimensions.
    let one = call(
        &a,
        "POST",
        "/v1/embeddings",
        Some(json!({"model": "nomic-embed-text", "input": "c", "dimensions": 16})),
    )
    .json();
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 16);

    // base64: the same floats, bit for bit.
    let mut b64 = body.clone();
    b64["encoding_format"] = json!("base64");
    let v = call(&a, "POST", "/v1/embeddings", Some(b64)).json();
    for (i, d) in v["data"].as_array().unwrap().iter().enumerate() {
        let got = floats_of_base64(d["embedding"].as_str().unwrap());
        let want: Vec<f32> = native["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got.len(), EMBED_DIM);
        assert_eq!(got, want);
    }
    let mut float = body.clone();
    float["encoding_format"] = json!("float");
    let v = call(&a, "POST", "/v1/embeddings", Some(float)).json();
    assert_eq!(v["data"][1]["embedding"], native["embeddings"][1]);

    // Errors.
    let post = |b: Value| call(&a, "POST", "/v1/embeddings", Some(b));
    let r = post(json!({"model": "nomic-embed-text", "input": "x", "encoding_format": "hex"}));
    assert!(openai_error(&r, 400, "invalid_request_error").contains("encoding_format"));
    let r = post(json!({"model": "nomic-embed-text"}));
    assert_eq!(
        openai_error(&r, 400, "invalid_request_error"),
        "invalid input"
    );
    let r = post(json!({"model": "nomic-embed-text", "input": []}));
    assert_eq!(
        openai_error(&r, 400, "invalid_request_error"),
        "invalid input"
    );
    let r = post(json!({"model": "nomic-embed-text", "input": [1, 2]}));
    openai_error(&r, 400, "invalid_request_error");
    let r = post(json!({"model": "bge-m3", "input": "x"}));
    openai_error(&r, 404, "not_found_error");
    assert_eq!(call(&a, "GET", "/v1/embeddings", None).status, 405);
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_headers(key: &str, version: &str) -> Vec<(&'static str, String)> {
    vec![
        ("Host", "x".into()),
        ("Upgrade", "websocket".into()),
        ("Connection", "keep-alive, Upgrade".into()),
        ("Sec-WebSocket-Key", key.into()),
        ("Sec-WebSocket-Version", version.into()),
    ]
}

fn upgrade_call(a: &App, path: &str, headers: &[(&'static str, String)]) -> Resp {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    call_with_headers(a, "GET", path, &h, None)
}

#[test]
fn websocket_handshake() {
    assert_eq!(ws::accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    let a = app();
    for path in ws::PATHS {
        let r = upgrade_call(&a, path, &upgrade_headers(KEY, "13"));
        assert_eq!((r.status, r.after), (101, After::WebSocket));
        assert!(r.head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(r.head.contains("\r\nUpgrade: websocket"), "{}", r.head);
        assert!(r.head.contains("\r\nConnection: Upgrade"));
        assert!(
            r.head
                .contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "{}",
            r.head
        );
        assert!(r.body.is_empty());
    }
    let refused = |headers: Vec<(&'static str, String)>| {
        let r = upgrade_call(&a, "/testrt/ws", &headers);
        assert_eq!((r.status, r.after), (400, After::Nothing), "{headers:?}");
    };
    refused(upgrade_headers("", "13"));
    refused(upgrade_headers("c2hvcnQ=", "13"));
    refused(upgrade_headers("not base64 at all!!!!!!=", "13"));
    refused(upgrade_headers(KEY, "8"));
    refused(upgrade_headers(KEY, "13")[..4].to_vec());
    refused(vec![
        ("Sec-WebSocket-Key", KEY.into()),
        ("Sec-WebSocket-Version", "13".into()),
    ]);
    assert_eq!(call(&a, "POST", "/rest/push", None).status, 405);
    // The upgrade request is in the log, with its headers.
    let log = call(&a, "GET", "/testrt/requests", None).json();
    let first = &log["requests"][0];
    assert_eq!(first["path"], "/testrt/ws");
    assert_eq!(first["headers"]["sec-websocket-key"], KEY);
}

#[test]
fn websocket_frames_round_trip_in_every_length_form() {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    // RFC 6455 §5.7: a masked "Hello".
    assert_eq!(
        ws::encode(true, OP_TEXT, b"Hello", Some(mask)),
        [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
        ]
    );
    assert_eq!(
        ws::encode(true, OP_TEXT, b"Hello", None),
        [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f]
    );
    for (len, header) in [
        (0, 2),
        (125, 2),
        (126, 4),
        (200, 4),
        (65_535, 4),
        (65_536, 10),
        (70_000, 10),
    ] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
        let masked = ws::encode(true, OP_BINARY, &payload, Some(mask));
        assert_eq!(masked.len(), header + 4 + len, "{len}");
        let f = ws::read_frame(&mut masked.as_slice(), 1 << 20).unwrap();
        assert_eq!((f.fin, f.opcode, f.payload.len()), (true, OP_BINARY, len));
        assert_eq!(f.payload, payload);
        let plain = ws::encode(true, OP_BINARY, &payload, None);
        assert_eq!(plain.len(), header + len);
        assert_eq!(plain[1] & 0x80, 0, "server frames are unmasked");
        assert_eq!(&plain[header..], payload.as_slice());
        match len {
            126..=65_535 => assert_eq!(plain[1], 126),
            65_536.. => assert_eq!(plain[1], 127),
            _ => assert_eq!(plain[1] as usize, len),
        }
    }
    // Refused: unmasked client frames, oversize, long control frames.
    let plain = ws::encode(true, OP_TEXT, b"x", None);
    assert!(matches!(
        ws::read_frame(&mut plain.as_slice(), 10),
        Err(ws::FrameError::Protocol(_))
    ));
    let big = ws::encode(true, OP_TEXT, &[b'a'; 11], Some(mask));
    assert!(matches!(
        ws::read_frame(&mut big.as_slice(), 10),
        Err(ws::FrameError::TooBig)
    ));
    let ping = ws::encode(true, OP_PING, &[0; 126], Some(mask));
    assert!(matches!(
        ws::read_frame(&mut ping.as_slice(), 1000),
        Err(ws::FrameError::Protocol(_))
    ));
}

/// Decodes the server's (unmasked) frames.
fn server_frames(mut out: &[u8]) -> Vec<ws::Frame> {
    let mut frames = Vec::new();
    while !out.is_empty() {
        assert_eq!(out[1] & 0x80, 0, "server frames are unmasked");
        let (len, at) = match out[1] {
            126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        frames.push(ws::Frame {
            fin: out[0] & 0x80 != 0,
            opcode: out[0] & 0x0f,
            payload: out[at..at + len].to_vec(),
        });
        out = &out[at + len..];
    }
    frames
}

#[test]
fn websocket_echo_session() {
    let m = Some([1, 2, 3, 4]);
    let big: Vec<u8> = (0..70_000).map(|i| (i % 256) as u8).collect();
    let mut input = Vec::new();
    input.extend(ws::encode(true, OP_TEXT, b"hello", m));
    input.extend(ws::encode(true, OP_BINARY, &big, m));
    input.extend(ws::encode(true, OP_PING, b"p", m));
    input.extend(ws::encode(false, OP_TEXT, "fragm".as_bytes(), m));
    input.extend(ws::encode(true, OP_PING, b"", m)); // between fragments
    input.extend(ws::encode(true, OP_CONTINUATION, "ented é".as_bytes(), m));
    input.extend(ws::encode(true, OP_PONG, b"", m));
    input.extend(ws::encode(true, OP_CLOSE, &1000u16.to_be_bytes(), m));
    input.extend(ws::encode(true, OP_TEXT, b"after close: unread", m));
    let mut out = Vec::new();
    let end = ws::echo(&mut input.as_slice(), &mut out, "{\"type\":\"hello\"}").unwrap();
    assert_eq!(end.messages, 3);
    let frames = server_frames(&out);
    let got: Vec<(u8, Vec<u8>)> = frames
        .iter()
        .map(|f| (f.opcode, f.payload.clone()))
        .collect();
    assert_eq!(
        got,
        [
            (OP_TEXT, b"{\"type\":\"hello\"}".to_vec()),
            (OP_TEXT, b"hello".to_vec()),
            (OP_BINARY, big),
            (OP_PONG, b"p".to_vec()),
            (OP_PONG, Vec::new()),
            (OP_TEXT, "fragmented é".as_bytes().to_vec()),
            (OP_CLOSE, 1000u16.to_be_bytes().to_vec()),
        ]
    );
    assert!(frames.iter().all(|f| f.fin));

    // Protocol errors end with a close carrying the RFC's code.
    let close_code = |input: Vec<u8>| {
        let mut out = Vec::new();
        ws::echo(&mut input.as_slice(), &mut out, "{}").unwrap();
        let last = server_frames(&out).pop().unwrap();
        assert_eq!(last.opcode, OP_CLOSE);
        u16::from_be_bytes([last.payload[0], last.payload[1]])
    };
    assert_eq!(close_code(ws::encode(true, OP_TEXT, b"x", None)), 1002);
    assert_eq!(close_code(ws::encode(true, OP_CONTINUATION, b"x", m)), 1002);
    assert_eq!(close_code(ws::encode(true, 0x3, b"x", m)), 1002);
    assert_eq!(
        close_code(ws::encode(true, OP_TEXT, &[0xff, 0xfe], m)),
        1007
    );
    // A peer that just goes away: no close frame back, no error.
    let mut out = Vec::new();
    let end = ws::echo(
        &mut ws::encode(true, OP_TEXT, b"x", m).as_slice(),
        &mut out,
        "{}",
    )
    .unwrap();
    assert_eq!(end.messages, 1);
    assert_eq!(server_frames(&out).len(), 2);
}

/// Reads one unmasked server frame of under 64 KiB from a socket.
fn read_server_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).unwrap();
    assert!(h[1] <= 126, "unmasked, under 64 KiB");
    let len = if h[1] == 126 {
        let mut l = [0u8; 2];
        s.read_exact(&mut l).unwrap();
        u16::from_be_bytes(l) as usize
    } else {
        h[1] as usize
    };
    let mut p = vec![0u8; len];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

#[test]
fn websocket_over_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Arc::new(app());
    let served = app.clone();
    std::thread::spawn(move || super::serve(listener, served));

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The first frame right behind the handshake: it must not be lost.
    let mut req = format!(
        "GET /rest/push?pushRef=abc HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nX-Forwarded-Prefix: /n8n\r\n\r\n"
    )
    .into_bytes();
    req.extend(ws::encode(true, OP_TEXT, b"ping me", Some([9, 8, 7, 6])));
    s.write_all(&req).unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    let (op, hello) = read_server_frame(&mut s);
    assert_eq!(op, OP_TEXT);
    let hello: Value = serde_json::from_slice(&hello).unwrap();
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["path"], "/rest/push");
    assert_eq!(hello["query"], "pushRef=abc");
    assert_eq!(hello["headers"]["x-forwarded-prefix"], "/n8n");
    assert_eq!(hello["headers"]["upgrade"], "websocket");
    assert_eq!(read_server_frame(&mut s), (OP_TEXT, b"ping me".to_vec()));
    s.write_all(&ws::encode(
        true,
        OP_CLOSE,
        &1000u16.to_be_bytes(),
        Some([1, 1, 1, 1]),
    ))
    .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, [0x88, 0x02, 0x03, 0xe8], "a close back, then the end");
}

/// A connection that breaks after `left` bytes (a client that went away).
struct Cut {
    left: usize,
}

impl Write for Cut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_cut_pull_resumes_where_it_stopped_and_the_store_holds_its_blobs() {
    let store = std::env::temp_dir().join(format!("testrt-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&store);
    let a = App::new(Config {
        pull_delay: Duration::ZERO,
        token_delay: Duration::ZERO,
        store: Some(store.clone()),
        ..Config::default()
    });
    // The registry's manifest names the blobs and sizes the pull reports.
    let m = call(&a, "GET", "/v2/library/llama3.1/manifests/70b", None).json();
    let sizes: Vec<u64> = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .collect();
    let total: u64 = sizes.iter().sum::<u64>() + m["config"]["size"].as_u64().unwrap();
    assert_eq!(total, 42_000_000_000, "70B at 0.6 GB per billion");
    assert_eq!(
        call(&a, "GET", "/v2/library/missing-model/manifests/1b", None).status,
        404
    );
    let weights = m["layers"][0]["digest"].as_str().unwrap().replace(':', "-");

    // The first pull is cut after a few lines.
    let req = Request {
        method: "POST".into(),
        path: "/api/pull".into(),
        query: String::new(),
        headers: vec![],
        body: json!({"model": "llama3.1:70b"}).to_string().into_bytes(),
    };
    assert!(a.handle(&req, &mut Cut { left: 700 }).is_err());
    let partial = store.join("blobs").join(format!("{weights}-partial"));
    assert_eq!(
        std::fs::metadata(&partial).unwrap().len(),
        sizes[0],
        "preallocated"
    );

    // The next one starts where it stopped and finishes.
    let r = call(
        &a,
        "POST",
        "/api/pull",
        Some(json!({"model": "llama3.1:70b"})),
    );
    let lines = r.lines();
    assert_eq!(lines.last().unwrap(), &json!({"status": "success"}));
    let first = lines.iter().find(|l| l.get("digest").is_some()).unwrap();
    assert!(first["completed"].as_u64().unwrap() > 0, "{first}");
    let pulls = call(&a, "GET", "/testrt/pulls", None).json();
    assert_eq!(pulls["pulls"][0]["resumed_from"], 0);
    assert_eq!(pulls["pulls"][0]["finished"], false);
    assert!(
        pulls["pulls"][1]["resumed_from"].as_u64().unwrap() > 0,
        "{pulls}"
    );
    assert_eq!(pulls["pulls"][1]["finished"], true);
    assert!(!partial.exists());
    let blob = store.join("blobs").join(&weights);
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), sizes[0]);
    assert!(
        store
            .join("manifests/registry.ollama.ai/library/llama3.1/70b")
            .is_file()
    );

    // A stall on request: the bytes stop at the chosen one while the line
    // repeats (cut here by the client after a few repeats).
    assert_eq!(
        call(
            &a,
            "POST",
            "/testrt/pull",
            Some(json!({"stall_at": 1_000_000}))
        )
        .status,
        200
    );
    let req = Request {
        body: json!({"model": "qwen2.5:0.5b"}).to_string().into_bytes(),
        ..req
    };
    let started = std::time::Instant::now();
    assert!(a.handle(&req, &mut Cut { left: 700 }).is_err());
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it repeated the line"
    );
    let pulls = call(&a, "GET", "/testrt/pulls", None).json();
    assert_eq!(pulls["pulls"][2]["stalled"], true);

    // A delete takes the manifest out of the store, as Ollama's does, so the
    // model is not found there again by the next listing.
    let manifest = store.join("manifests/registry.ollama.ai/library/llama3.1/70b");
    assert_eq!(
        call(
            &a,
            "DELETE",
            "/api/delete",
            Some(json!({"model": "llama3.1:70b"}))
        )
        .status,
        200
    );
    assert!(!manifest.exists());
    let tags = call(&a, "GET", "/api/tags", None).json();
    assert!(
        !tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "llama3.1:70b"),
        "{tags}"
    );
    let _ = std::fs::remove_dir_all(&store);
}
