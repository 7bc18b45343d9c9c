//! The fake Ollama runtime: installed and loaded models, the Ollama API
//! endpoints, the OpenAI-compatible `/v1/*` endpoints (in `openai`), the
//! embedding-service endpoints, the WebSocket echo's handshake and the
//! `/testrt/*` controls.

mod openai;

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::http::{NdjsonStream, Request, write_full, write_json};
use crate::util::{
    DEFAULT_KEEP_ALIVE, EMBED_DIM, KeepAlive, embed, fake_sha256, fnv1a, normalise,
    parse_keep_alive, rfc3339,
};
use crate::ws;

/// How many requests `/testrt/requests` remembers.
pub const REQUEST_LOG_LEN: usize = 100;
/// Simulated generation speed, reported through `eval_duration`: 40 tokens/s.
pub const EVAL_NS_PER_TOKEN: u64 = 25_000_000;
/// At most this many bytes of a partial blob are really written.
pub const PARTIAL_WRITE_CAP: u64 = 4 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub version: String,
    pub models: Vec<String>,
    /// Pause between lines of a streamed pull.
    pub pull_delay: Duration,
    /// Pause between tokens of a streamed generate/chat.
    pub token_delay: Duration,
    /// Ollama's model store (`blobs/`, `manifests/`), when one is mounted:
    /// pulls write their partial and finished blobs there (sparse files of
    /// the real length, as Ollama preallocates them).
    pub store: Option<std::path::PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: "0.9.0-testrt".into(),
            models: vec!["llama3.2:1b".into(), "nomic-embed-text".into()],
            pull_delay: Duration::from_millis(50),
            token_delay: Duration::from_millis(5),
            store: None,
        }
    }
}

/// What the connection loop must do once the response is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    Exit(i32),
    Oom,
    /// The 101 was written: run the WebSocket echo on this connection.
    WebSocket,
}

#[derive(Debug, Clone)]
struct Model {
    size: u64,
    digest: String,
    modified_at: SystemTime,
}

#[derive(Default)]
struct State {
    installed: BTreeMap<String, Model>,
    /// Loaded models → when they expire (`None`: never).
    loaded: BTreeMap<String, Option<SystemTime>>,
    requests: VecDeque<Value>,
    /// Bytes of each blob (by hex digest) downloaded so far: a new pull
    /// resumes there, as Ollama resumes its partial blobs.
    partial: BTreeMap<String, u64>,
    /// `POST /testrt/pull {"stall_at": N}`: the next pull stops growing at N
    /// bytes of its weights (it goes on repeating its last line each second).
    stall_at: Option<u64>,
    /// Every streamed pull: model, resumed_from, stalled, finished.
    pulls: Vec<Value>,
}

pub struct App {
    pub cfg: Config,
    state: Mutex<State>,
    /// Once set, every request is accepted and never answered.
    pub hanging: AtomicBool,
    /// Status of `/`, `/health` and `/api/version`.
    health_status: AtomicU16,
    /// Not 200: every chat and generation fails with it (the runner died)
    /// while `/api/version` still answers.
    generate_status: AtomicU16,
    /// Numbers the OpenAI completion ids (`chatcmpl-N`).
    next_id: AtomicU64,
}

/// `llama3.2` → `llama3.2:latest`; a tag or digest is kept.
pub fn normalise_name(name: &str) -> String {
    let name = name.trim();
    let base = name.rsplit('/').next().unwrap_or(name);
    if base.contains(':') || base.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn is_embedding_model(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["embed", "bge", "minilm", "e5-"]
        .iter()
        .any(|k| n.contains(k))
}

fn family(name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    if is_embedding_model(&n) {
        "nomic-bert"
    } else if n.starts_with("qwen") {
        "qwen2"
    } else if n.starts_with("gemma") {
        "gemma3"
    } else {
        "llama"
    }
}

/// "llama3.2:1b" → "1B"; otherwise a plausible default.
fn parameter_size(name: &str) -> String {
    let tag = name.rsplit(':').next().unwrap_or("");
    let t = tag.to_ascii_lowercase();
    let num = t.split('-').next().unwrap_or("");
    if let Some(n) = num.strip_suffix('b')
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    {
        return format!("{}B", n.to_uppercase());
    }
    if is_embedding_model(name) {
        "137M".into()
    } else {
        "3.2B".into()
    }
}

fn model_size(name: &str) -> u64 {
    let billions = parameter_size(name)
        .strip_suffix('B')
        .and_then(|n| n.parse::<f64>().ok())
        .unwrap_or(0.0);
    if is_embedding_model(name) {
        274_302_450
    } else if billions >= 20.0 {
        // Big models as big as they are at Q4: 0.6 GB per billion.
        (billions * 600_000_000.0) as u64
    } else {
        // 0.5 – 4.5 GB, fixed per name.
        500_000_000 + fnv1a(name.as_bytes()) % 4_000_000_000
    }
}

/// One blob of a model as the registry lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// 64 hex digits.
    pub hex: String,
    pub media_type: &'static str,
    pub size: u64,
}

/// The model's blobs: the weights, template, params and licence layers,
/// then the config (the sum is [`model_size`]).
pub fn layers(name: &str) -> Vec<Layer> {
    let size = model_size(name);
    let kinds = [
        (
            "application/vnd.ollama.image.model",
            size - 12_403 - 96 - 487 - 561,
        ),
        ("application/vnd.ollama.image.template", 12_403),
        ("application/vnd.ollama.image.params", 96),
        ("application/vnd.ollama.image.license", 487),
        ("application/vnd.docker.container.image.v1+json", 561),
    ];
    kinds
        .iter()
        .enumerate()
        .map(|(i, (media_type, size))| Layer {
            hex: fake_sha256(&format!("{name}#layer{i}")),
            media_type,
            size: *size,
        })
        .collect()
}

/// The registry's manifest of the model (`/v2/library/{name}/manifests/{tag}`).
pub fn manifest(name: &str) -> Value {
    let ls = layers(name);
    let (config, blobs) = ls.split_last().expect("a config layer");
    let entry = |l: &Layer| json!({"mediaType": l.media_type, "digest": format!("sha256:{}", l.hex), "size": l.size});
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": entry(config),
        "layers": blobs.iter().map(entry).collect::<Vec<_>>(),
    })
}

fn details(name: &str) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": family(name),
        "families": [family(name)],
        "parameter_size": parameter_size(name),
        "quantization_level": if is_embedding_model(name) { "F16" } else { "Q4_K_M" },
    })
}

fn new_model(name: &str, at: SystemTime) -> Model {
    Model {
        size: model_size(name),
        digest: fake_sha256(name),
        modified_at: at,
    }
}

/// Steps of the weights layer's download (each one a progress line).
pub const WEIGHT_STEPS: u64 = 8;

/// One progress line of a layer.
fn progress_line(l: &Layer, completed: u64) -> Value {
    json!({
        "status": format!("pulling {}", &l.hex[..12]),
        "digest": format!("sha256:{}", l.hex),
        "total": l.size,
        "completed": completed,
    })
}

/// The lines of a streamed pull from scratch, in order (without pauses): what
/// the tests expect of [`App::pull`].
#[cfg(test)]
pub fn pull_events(name: &str) -> Vec<Value> {
    let mut out = vec![json!({"status": "pulling manifest"})];
    for (i, l) in layers(name).iter().enumerate() {
        let steps: u64 = if i == 0 { WEIGHT_STEPS } else { 1 };
        for s in 1..=steps {
            out.push(progress_line(l, l.size * s / steps));
        }
    }
    out.push(json!({"status": "verifying sha256 digest"}));
    out.push(json!({"status": "writing manifest"}));
    out.push(json!({"status": "success"}));
    out
}

/// Names whose pull fails as a missing manifest would.
pub fn pull_fails(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("missing") || n.starts_with("notfound") || n.starts_with("does-not-exist")
}

/// The deterministic answer, split into tokens (words with their spacing).
pub fn answer_tokens(model: &str, prompt: &str) -> Vec<String> {
    let snippet: String = prompt
        .split_whitespace()
        .take(12)
        .collect::<Vec<_>>()
        .join(" ");
    let n = fnv1a(prompt.as_bytes()) % 100;
    let text = format!("This is testrt ({model}) answering \"{snippet}\". The answer is {n}.");
    let words: Vec<&str> = text.split(' ').collect();
    let last = words.len() - 1;
    words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == last {
                (*w).to_string()
            } else {
                format!("{w} ")
            }
        })
        .collect()
}

/// A generation that passed the checks: the answer's tokens and the
/// numbers Ollama reports about it.
struct Answer {
    tokens: Vec<String>,
    /// "stop", or "length" when cut by `num_predict` / `max_tokens`.
    done_reason: &'static str,
    prompt_eval_count: u64,
}

impl Answer {
    /// The answer to `prompt`, cut to `limit` tokens when that is positive
    /// and shorter.
    fn new(model: &str, prompt: &str, limit: Option<i64>) -> Answer {
        let mut tokens = answer_tokens(model, prompt);
        let mut done_reason = "stop";
        if let Some(n) = limit.filter(|n| *n > 0)
            && (n as usize) < tokens.len()
        {
            tokens.truncate(n as usize);
            done_reason = "length";
        }
        Answer {
            tokens,
            done_reason,
            prompt_eval_count: prompt.split_whitespace().count() as u64 + 8,
        }
    }
}

/// What a chat answers: the last user message (else the last message).
fn chat_prompt(msgs: &[Value]) -> String {
    msgs.iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .or(msgs.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Ollama's message for a model that is not installed.
fn not_found(model: &str) -> String {
    format!("model \"{model}\" not found, try pulling it first")
}

/// A request body that must be a JSON object.
fn json_body(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Err("missing request body".into());
    }
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("request body must be a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A GET on a WebSocket path: the 101 (the connection then runs the echo),
/// or 400 when the handshake is not a valid one.
fn upgrade<W: Write>(req: &Request, w: &mut W) -> io::Result<(u16, After)> {
    match ws::handshake(req) {
        Ok(accept) => {
            ws::write_upgrade(w, &accept)?;
            Ok((101, After::WebSocket))
        }
        Err(e) => {
            write_full(w, 400, "text/plain; charset=utf-8", e.as_bytes(), false)?;
            Ok((400, After::Nothing))
        }
    }
}

fn err(msg: impl Into<String>) -> Value {
    json!({"error": msg.into()})
}

fn str_field<'a>(body: &'a Value, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .filter(|s| !s.trim().is_empty())
}

/// The request body as recorded: JSON when it parses, else text, else null.
fn recorded_body(body: &[u8]) -> Value {
    if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    }
}

impl App {
    pub fn new(cfg: Config) -> App {
        let now = SystemTime::now();
        let installed = cfg
            .models
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(|m| {
                let n = normalise_name(m);
                let model = new_model(&n, now - Duration::from_secs(3600));
                (n, model)
            })
            .collect();
        App {
            cfg,
            state: Mutex::new(State {
                installed,
                ..State::default()
            }),
            hanging: AtomicBool::new(false),
            health_status: AtomicU16::new(200),
            generate_status: AtomicU16::new(200),
            next_id: AtomicU64::new(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_installed(&self, name: &str) -> bool {
        self.state().installed.contains_key(&normalise_name(name))
    }

    fn keep(&self, name: &str, ka: KeepAlive) {
        let name = normalise_name(name);
        let mut st = self.state();
        match ka {
            KeepAlive::Unload => {
                st.loaded.remove(&name);
            }
            KeepAlive::For(d) => {
                st.loaded.insert(name, Some(SystemTime::now() + d));
            }
            KeepAlive::Forever => {
                st.loaded.insert(name, None);
            }
        }
    }

    fn record(&self, req: &Request) {
        let entry = json!({
            "at": rfc3339(SystemTime::now()),
            "method": req.method,
            "path": req.path,
            "query": req.query,
            "body": recorded_body(&req.body),
            "headers": req.header_map(),
        });
        let mut st = self.state();
        if st.requests.len() == REQUEST_LOG_LEN {
            st.requests.pop_front();
        }
        st.requests.push_back(entry);
    }

    /// Answers one request. Returns the status written and what to do next.
    pub fn handle<W: Write>(&self, req: &Request, w: &mut W) -> io::Result<(u16, After)> {
        if !(req.method == "GET" && req.path == "/testrt/requests") {
            self.record(req);
        }
        if req.path.starts_with("/api/") || req.path.starts_with("/v1/") {
            self.adopt_store();
        }
        let m = req.method.as_str();
        let get = m == "GET" || m == "HEAD";
        let head = m == "HEAD";
        let status = match (req.path.as_str(), m) {
            ("/", _) if get => {
                let s = self.health_status.load(Ordering::Relaxed);
                write_full(
                    w,
                    s,
                    "text/plain; charset=utf-8",
                    b"Ollama is running",
                    head,
                )?;
                s
            }
            // Also the health paths of the apps it stands in for in the
            // shipped catalog's test (MinIO, n8n).
            ("/health" | "/minio/health/live" | "/healthz", _) if get => {
                let s = self.health_status.load(Ordering::Relaxed);
                let v = json!({"status": if s == 200 { "ok" } else { "unhealthy" }});
                self.json(w, s, &v, head)?
            }
            ("/api/version", _) if get => {
                let s = self.health_status.load(Ordering::Relaxed);
                self.json(w, s, &json!({"version": self.cfg.version}), head)?
            }
            ("/api/tags", _) if get => self.json(w, 200, &self.tags(), head)?,
            ("/api/ps", _) if get => self.json(w, 200, &self.ps(), head)?,
            ("/info", _) if get => {
                let v = json!({
                    "model": "nomic-embed-text",
                    "dimension": EMBED_DIM,
                    "max_input": 8192,
                    "version": self.cfg.version,
                });
                self.json(w, 200, &v, head)?
            }
            ("/v1/models", _) if get => self.json(w, 200, &self.openai_models(), head)?,
            (path, _) if get && openai::model_path(path).is_some() => {
                let name = openai::model_path(path).unwrap_or_default();
                self.openai_model(&name, w, head)?
            }
            (path, "GET") if ws::PATHS.contains(&path) => return upgrade(req, w),
            ("/testrt/requests", _) if get => {
                let v = json!({"requests": self.state().requests.iter().collect::<Vec<_>>()});
                self.json(w, 200, &v, head)?
            }
            ("/testrt/pulls", _) if get => {
                let v = json!({"pulls": self.state().pulls.clone()});
                self.json(w, 200, &v, head)?
            }
            ("/testrt/pull", "POST") => {
                let body = recorded_body(&req.body);
                match body.get("stall_at").and_then(Value::as_u64) {
                    Some(n) => {
                        self.state().stall_at = Some(n);
                        write_json(w, 200, &json!({"stall_at": n}))?;
                        200
                    }
                    None => {
                        write_json(w, 400, &err("stall_at must be a number of bytes"))?;
                        400
                    }
                }
            }
            (path, _) if get && path.starts_with("/v2/library/") => {
                let rest = &path["/v2/library/".len()..];
                match rest.split_once("/manifests/") {
                    Some((model, tag)) if !model.is_empty() && !tag.is_empty() => {
                        let name = format!("{model}:{tag}");
                        if pull_fails(&name) {
                            let v = json!({"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]});
                            self.json(w, 404, &v, head)?
                        } else {
                            self.json(w, 200, &manifest(&name), head)?
                        }
                    }
                    _ => {
                        write_full(w, 404, "text/plain", b"404 page not found", head)?;
                        404
                    }
                }
            }
            ("/testrt/requests", "DELETE") => {
                let n = {
                    let mut st = self.state();
                    let n = st.requests.len();
                    st.requests.clear();
                    n
                };
                write_json(w, 200, &json!({"cleared": n}))?;
                200
            }
            ("/testrt/hang", "POST") => {
                write_json(w, 200, &json!({"hanging": true}))?;
                self.hanging.store(true, Ordering::SeqCst);
                200
            }
            ("/testrt/exit", "POST") => {
                let body = recorded_body(&req.body);
                let code = body.get("code").and_then(Value::as_i64).unwrap_or(1) as i32;
                write_json(w, 200, &json!({"exiting": code}))?;
                return Ok((200, After::Exit(code)));
            }
            ("/testrt/oom", "POST") => {
                write_json(w, 200, &json!({"oom": true}))?;
                return Ok((200, After::Oom));
            }
            ("/testrt/health" | "/testrt/generate", "POST") => {
                let body = recorded_body(&req.body);
                let (cell, key) = if req.path == "/testrt/health" {
                    (&self.health_status, "health_status")
                } else {
                    (&self.generate_status, "generate_status")
                };
                match body.get("status").and_then(Value::as_u64) {
                    Some(s @ 100..=599) => {
                        cell.store(s as u16, Ordering::Relaxed);
                        write_json(w, 200, &json!({ key: s }))?;
                        200
                    }
                    _ => {
                        write_json(w, 400, &err("status must be an HTTP status code"))?;
                        400
                    }
                }
            }
            (path, "POST" | "DELETE") if is_json_route(path, m) => {
                // The OpenAI endpoints answer errors in OpenAI's shape.
                let error: fn(String) -> Value = if path.starts_with("/v1/") {
                    |m| openai::error(400, m)
                } else {
                    |m| err(m)
                };
                let body: Value = match json_body(&req.body) {
                    Ok(v) => v,
                    Err(e) => {
                        write_json(w, 400, &error(e))?;
                        return Ok((400, After::Nothing));
                    }
                };
                match path {
                    "/api/show" => self.show(&body, w)?,
                    "/api/pull" => self.pull(&body, w)?,
                    "/api/delete" => self.delete(&body, w)?,
                    "/api/generate" => self.generate(&body, false, w)?,
                    "/api/chat" => self.generate(&body, true, w)?,
                    "/api/embed" => self.embed(&body, w, false)?,
                    "/api/embeddings" => self.embed(&body, w, true)?,
                    "/v1/chat/completions" => self.openai_chat(&body, w)?,
                    "/v1/embeddings" => self.openai_embeddings(&body, w)?,
                    _ => self.embed_service(&body, w)?,
                }
            }
            (path, _) if is_known_path(path) => {
                write_full(w, 405, "text/plain", b"405 method not allowed", head)?;
                405
            }
            _ => {
                write_full(w, 404, "text/plain", b"404 page not found", head)?;
                404
            }
        };
        Ok((status, After::Nothing))
    }

    fn json<W: Write>(&self, w: &mut W, status: u16, v: &Value, head: bool) -> io::Result<u16> {
        write_full(
            w,
            status,
            "application/json; charset=utf-8",
            v.to_string().as_bytes(),
            head,
        )?;
        Ok(status)
    }

    pub fn tags(&self) -> Value {
        let st = self.state();
        let models: Vec<Value> = st
            .installed
            .iter()
            .map(|(name, m)| {
                json!({
                    "name": name,
                    "model": name,
                    "modified_at": rfc3339(m.modified_at),
                    "size": m.size,
                    "digest": m.digest,
                    "details": details(name),
                })
            })
            .collect();
        json!({ "models": models })
    }

    pub fn ps(&self) -> Value {
        let mut st = self.state();
        expire(&mut st, SystemTime::now());
        let models: Vec<Value> = st
            .loaded
            .iter()
            .map(|(name, exp)| {
                let size = model_size(name);
                let digest = st
                    .installed
                    .get(name)
                    .map(|m| m.digest.clone())
                    .unwrap_or_else(|| fake_sha256(name));
                // Ollama shows a far-future time for "forever".
                let expires =
                    exp.unwrap_or(SystemTime::UNIX_EPOCH + Duration::from_secs(10_978_000_000));
                json!({
                    "name": name,
                    "model": name,
                    "size": size,
                    "digest": digest,
                    "details": details(name),
                    "expires_at": rfc3339(expires),
                    "size_vram": size,
                    "context_length": 4096,
                })
            })
            .collect();
        json!({ "models": models })
    }

    fn show<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let Some(raw) = str_field(body, &["model", "name"]) else {
            write_json(w, 400, &err("model is required"))?;
            return Ok(400);
        };
        let name = normalise_name(raw);
        let Some(m) = self.state().installed.get(&name).cloned() else {
            write_json(w, 404, &err(format!("model '{raw}' not found")))?;
            return Ok(404);
        };
        let emb = is_embedding_model(&name);
        let arch = family(&name);
        let v = json!({
            "license": "testrt test model",
            "modelfile": format!("# Modelfile generated by \"ollama show\"\nFROM {name}\n"),
            "parameters": if emb { "num_ctx 8192" } else { "stop \"<|eot_id|>\"" },
            "template": if emb { "{{ .Prompt }}" } else { "{{ .System }}\n{{ .Prompt }}" },
            "details": details(&name),
            "model_info": {
                "general.architecture": arch,
                "general.parameter_count": m.size * 2,
                "general.file_type": 15,
                format!("{arch}.context_length"): if emb { 2048 } else { 131072 },
                format!("{arch}.embedding_length"): if emb { EMBED_DIM } else { 2048 },
            },
            "capabilities": if emb { json!(["embedding"]) } else { json!(["completion", "tools"]) },
            "modified_at": rfc3339(m.modified_at),
        });
        write_json(w, 200, &v)?;
        Ok(200)
    }

    fn pull<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let Some(raw) = str_field(body, &["model", "name"]) else {
            write_json(w, 400, &err("model is required"))?;
            return Ok(400);
        };
        let name = normalise_name(raw);
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(true);
        let delay = self.cfg.pull_delay;
        let fail = pull_fails(&name);
        if !stream {
            std::thread::sleep(delay * 3);
            if fail {
                write_json(w, 500, &err("pull model manifest: file does not exist"))?;
                return Ok(500);
            }
            std::thread::sleep(delay * 6);
            self.install(&name);
            write_json(w, 200, &json!({"status": "success"}))?;
            return Ok(200);
        }
        let mut s = NdjsonStream::start(w, 200)?;
        s.send(&json!({"status": "pulling manifest"}))?;
        std::thread::sleep(delay);
        if fail {
            s.send(&err("pull model manifest: file does not exist"))?;
            s.finish()?;
            return Ok(200);
        }
        let ls = layers(&name);
        let log = {
            let mut st = self.state();
            let resumed_from = st.partial.get(&ls[0].hex).copied().unwrap_or(0);
            st.pulls.push(json!({"model": name, "resumed_from": resumed_from, "stalled": false, "finished": false}));
            st.pulls.len() - 1
        };
        for (i, l) in ls.iter().enumerate() {
            let steps: u64 = if i == 0 { WEIGHT_STEPS } else { 1 };
            let from = self.state().partial.get(&l.hex).copied().unwrap_or(0);
            for step in 1..=steps {
                let target = l.size * step / steps;
                if target <= from && step < steps {
                    continue;
                }
                let mut done = target.max(from);
                let stall = {
                    let mut st = self.state();
                    match st.stall_at {
                        Some(at) if i == 0 && done >= at => {
                            st.stall_at = None;
                            st.pulls[log]["stalled"] = json!(true);
                            done = at.max(from);
                            true
                        }
                        _ => false,
                    }
                };
                self.save_partial(l, done);
                s.send(&progress_line(l, done))?;
                if stall {
                    // Ollama keeps reporting the same bytes while the
                    // download does not move; a closed connection ends it.
                    for _ in 0..600 {
                        std::thread::sleep(Duration::from_secs(1));
                        s.send(&progress_line(l, done))?;
                    }
                    s.send(&err("download stalled"))?;
                    s.finish()?;
                    return Ok(200);
                }
                std::thread::sleep(delay);
            }
            self.finish_blob(l);
        }
        s.send(&json!({"status": "verifying sha256 digest"}))?;
        std::thread::sleep(delay);
        s.send(&json!({"status": "writing manifest"}))?;
        self.write_manifest(&name);
        self.install(&name);
        self.state().pulls[log]["finished"] = json!(true);
        s.send(&json!({"status": "success"}))?;
        s.finish()?;
        Ok(200)
    }

    /// Models whose manifest is in the store count as installed, as Ollama
    /// lists what its store holds (a model copied there from a bundle).
    fn adopt_store(&self) {
        let Some(store) = &self.cfg.store else { return };
        let lib = store.join("manifests/registry.ollama.ai/library");
        let Ok(models) = std::fs::read_dir(&lib) else {
            return;
        };
        let mut found = Vec::new();
        for m in models.flatten() {
            let Ok(tags) = std::fs::read_dir(m.path()) else {
                continue;
            };
            for t in tags.flatten() {
                if let (Some(m), Some(t)) = (m.file_name().to_str(), t.file_name().to_str()) {
                    found.push(format!("{m}:{t}"));
                }
            }
        }
        let mut st = self.state();
        for name in found {
            let model = new_model(&name, SystemTime::now());
            st.installed.entry(name).or_insert(model);
        }
    }

    /// Remembers (and writes, when a store is mounted) a blob's progress.
    fn save_partial(&self, l: &Layer, done: u64) {
        self.state().partial.insert(l.hex.clone(), done);
        let Some(store) = &self.cfg.store else { return };
        let blobs = store.join("blobs");
        let path = blobs.join(format!("sha256-{}-partial", l.hex));
        let res = std::fs::create_dir_all(&blobs)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .and_then(|f| {
                // Preallocated to the blob's length, as Ollama does; the
                // bytes downloaded so far are really written (capped, so a
                // test's disk is not filled): the partial takes disk space.
                f.set_len(l.size)?;
                let real = done.min(PARTIAL_WRITE_CAP) as usize;
                std::os::unix::fs::FileExt::write_all_at(&f, &vec![0x5a; real], 0)
            })
            .and_then(|_| {
                let part = json!({"N": 0, "Offset": 0, "Size": l.size, "Completed": done});
                std::fs::write(
                    blobs.join(format!("sha256-{}-partial-0", l.hex)),
                    part.to_string(),
                )
            });
        if let Err(e) = res {
            eprintln!("testrt: writing {}: {e}", path.display());
        }
    }

    /// A blob downloaded completely: the partial becomes the blob.
    fn finish_blob(&self, l: &Layer) {
        self.state().partial.remove(&l.hex);
        let Some(store) = &self.cfg.store else { return };
        let blobs = store.join("blobs");
        let partial = blobs.join(format!("sha256-{}-partial", l.hex));
        let _ = std::fs::remove_file(blobs.join(format!("sha256-{}-partial-0", l.hex)));
        let res = std::fs::create_dir_all(&blobs)
            .and_then(|_| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&partial)
            })
            .and_then(|f| f.set_len(l.size))
            .and_then(|_| std::fs::rename(&partial, blobs.join(format!("sha256-{}", l.hex))));
        if let Err(e) = res {
            eprintln!("testrt: finishing blob {}: {e}", l.hex);
        }
    }

    /// `manifests/registry.ollama.ai/library/<name>/<tag>`, as Ollama keeps it.
    fn write_manifest(&self, name: &str) {
        let Some(path) = self.manifest_path(name) else {
            return;
        };
        let res = std::fs::create_dir_all(path.parent().expect("a manifest has a directory"))
            .and_then(|_| std::fs::write(&path, manifest(name).to_string()));
        if let Err(e) = res {
            eprintln!("testrt: writing the manifest of {name}: {e}");
        }
    }

    /// The manifest's path in the mounted store, if there is one.
    fn manifest_path(&self, name: &str) -> Option<std::path::PathBuf> {
        let store = self.cfg.store.as_ref()?;
        let (model, tag) = name.split_once(':').unwrap_or((name, "latest"));
        Some(
            store
                .join("manifests/registry.ollama.ai/library")
                .join(model)
                .join(tag),
        )
    }

    fn install(&self, name: &str) {
        let m = new_model(name, SystemTime::now());
        self.state().installed.insert(name.to_string(), m);
    }

    fn delete<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let Some(raw) = str_field(body, &["model", "name"]) else {
            write_json(w, 400, &err("model is required"))?;
            return Ok(400);
        };
        let name = normalise_name(raw);
        let removed = {
            let mut st = self.state();
            st.loaded.remove(&name);
            st.installed.remove(&name).is_some()
        };
        // As Ollama does: the manifest goes from the store too, or the next
        // listing would find the model there again.
        if removed && let Some(path) = self.manifest_path(&name) {
            let _ = std::fs::remove_file(path);
        }
        if removed {
            write_full(w, 200, "text/plain; charset=utf-8", b"", false)?;
            Ok(200)
        } else {
            write_json(w, 404, &err(format!("model '{raw}' not found")))?;
            Ok(404)
        }
    }

    /// The checks of every chat/generate request, in Ollama's order: a
    /// model is named, installed, and not an embedding model. `what` names
    /// the capability in the error ("chat", "generate").
    fn generation_model<'a>(&self, body: &'a Value, what: &str) -> Result<&'a str, (u16, String)> {
        let Some(raw) = str_field(body, &["model"]) else {
            return Err((400, "model is required".into()));
        };
        if !self.is_installed(raw) {
            return Err((404, not_found(raw)));
        }
        if is_embedding_model(raw) {
            return Err((400, format!("\"{raw}\" does not support {what}")));
        }
        let broken = self.generate_status.load(Ordering::Relaxed);
        if broken != 200 {
            // What Ollama says when its model runner has died.
            return Err((
                broken,
                "llama runner process has terminated: exit status 2".into(),
            ));
        }
        Ok(raw)
    }

    /// Pauses before the token `i` of a streamed answer (not before the first).
    fn pace(&self, i: usize) {
        if i > 0 && !self.cfg.token_delay.is_zero() {
            std::thread::sleep(self.cfg.token_delay);
        }
    }

    /// `/api/generate` (chat = false) and `/api/chat` (chat = true).
    fn generate<W: Write>(&self, body: &Value, chat: bool, w: &mut W) -> io::Result<u16> {
        let raw = match self.generation_model(body, if chat { "chat" } else { "generate" }) {
            Ok(raw) => raw,
            Err((status, e)) => {
                write_json(w, status, &err(e))?;
                return Ok(status);
            }
        };
        let ka = match parse_keep_alive(body.get("keep_alive")) {
            Ok(ka) => ka,
            Err(e) => {
                write_json(w, 400, &err(e))?;
                return Ok(400);
            }
        };
        let prompt = if chat {
            match body.get("messages") {
                None | Some(Value::Null) => String::new(),
                Some(Value::Array(msgs)) => chat_prompt(msgs),
                Some(_) => {
                    write_json(w, 400, &err("messages must be an array"))?;
                    return Ok(400);
                }
            }
        } else {
            body.get("prompt")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let empty = if chat {
            body.get("messages")
                .and_then(Value::as_array)
                .is_none_or(|a| a.is_empty())
        } else {
            prompt.is_empty()
        };
        let now = || rfc3339(SystemTime::now());
        let shell = |content: &str| {
            if chat {
                json!({"model": raw, "created_at": now(),
                       "message": {"role": "assistant", "content": content}})
            } else {
                json!({"model": raw, "created_at": now(), "response": content})
            }
        };

        if empty {
            // Load or unload only, as Ollama does for an empty prompt.
            self.keep(raw, ka);
            let mut v = shell("");
            v["done"] = json!(true);
            v["done_reason"] = json!(if ka == KeepAlive::Unload {
                "unload"
            } else {
                "load"
            });
            write_json(w, 200, &v)?;
            return Ok(200);
        }

        // Answering loads the model (and keeps it for the request's duration).
        self.keep(
            raw,
            if ka == KeepAlive::Unload {
                DEFAULT_KEEP_ALIVE
            } else {
                ka
            },
        );
        let limit = body.pointer("/options/num_predict").and_then(Value::as_i64);
        let a = Answer::new(raw, &prompt, limit);
        let eval_count = a.tokens.len() as u64;
        let load_duration: u64 = 2_000_000;
        let prompt_eval_duration = a.prompt_eval_count * 1_000_000;
        let eval_duration = eval_count * EVAL_NS_PER_TOKEN;
        let stats = |mut v: Value| {
            v["done"] = json!(true);
            v["done_reason"] = json!(a.done_reason);
            if !chat {
                v["context"] = json!([1, 2, 3]);
            }
            v["total_duration"] = json!(load_duration + prompt_eval_duration + eval_duration);
            v["load_duration"] = json!(load_duration);
            v["prompt_eval_count"] = json!(a.prompt_eval_count);
            v["prompt_eval_duration"] = json!(prompt_eval_duration);
            v["eval_count"] = json!(eval_count);
            v["eval_duration"] = json!(eval_duration);
            v
        };
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(true);
        let result = if stream {
            let mut s = NdjsonStream::start(w, 200)?;
            for (i, t) in a.tokens.iter().enumerate() {
                self.pace(i);
                let mut v = shell(t);
                v["done"] = json!(false);
                s.send(&v)?;
            }
            s.send(&stats(shell("")))?;
            s.finish()
        } else {
            write_json(w, 200, &stats(shell(&a.tokens.concat())))
        };
        if ka == KeepAlive::Unload {
            self.keep(raw, KeepAlive::Unload);
        }
        result.map(|_| 200)
    }

    /// `/api/embed` (`legacy` = false) and `/api/embeddings` (legacy = true).
    fn embed<W: Write>(&self, body: &Value, w: &mut W, legacy: bool) -> io::Result<u16> {
        let Some(raw) = str_field(body, &["model"]) else {
            write_json(w, 400, &err("model is required"))?;
            return Ok(400);
        };
        if !self.is_installed(raw) {
            write_json(w, 404, &err(not_found(raw)))?;
            return Ok(404);
        }
        let ka = match parse_keep_alive(body.get("keep_alive")) {
            Ok(ka) => ka,
            Err(e) => {
                write_json(w, 400, &err(e))?;
                return Ok(400);
            }
        };
        self.keep(raw, ka);
        if legacy {
            let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
            let v = if prompt.is_empty() {
                Vec::new()
            } else {
                embed(prompt, EMBED_DIM)
            };
            write_json(w, 200, &json!({ "embedding": v }))?;
            return Ok(200);
        }
        let inputs = match texts(body.get("input")) {
            Ok(t) => t,
            Err(e) => {
                write_json(w, 400, &err(e))?;
                return Ok(400);
            }
        };
        let dim = match dimensions(body) {
            Ok(d) => d,
            Err(e) => {
                write_json(w, 400, &err(e))?;
                return Ok(400);
            }
        };
        let embeddings = vectors(&inputs, dim);
        let tokens = token_count(&inputs);
        let v = json!({
            "model": raw,
            "embeddings": embeddings,
            "total_duration": 3_000_000 + tokens as u64 * 100_000,
            "load_duration": 1_000_000,
            "prompt_eval_count": tokens,
        });
        write_json(w, 200, &v)?;
        Ok(200)
    }

    /// `POST /embed`: a generic embedding service (`{"texts"|"text"|"input"}`).
    fn embed_service<W: Write>(&self, body: &Value, w: &mut W) -> io::Result<u16> {
        let field = ["texts", "text", "input"].iter().find_map(|k| body.get(*k));
        let inputs = match texts(field) {
            Ok(t) => t,
            Err(e) => {
                write_json(w, 400, &err(e))?;
                return Ok(400);
            }
        };
        let vectors: Vec<Vec<f32>> = inputs.iter().map(|t| embed(t, EMBED_DIM)).collect();
        let v = json!({
            "model": "nomic-embed-text",
            "dimension": EMBED_DIM,
            "vectors": vectors,
        });
        write_json(w, 200, &v)?;
        Ok(200)
    }
}

/// A string or an array of strings → the list of texts.
fn texts(v: Option<&Value>) -> Result<Vec<String>, &'static str> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or("invalid input type"))
            .collect(),
        Some(_) => Err("invalid input type"),
    }
}

/// The request's `dimensions` (absent: the full `EMBED_DIM`).
fn dimensions(body: &Value) -> Result<usize, &'static str> {
    match body.get("dimensions") {
        None | Some(Value::Null) => Ok(EMBED_DIM),
        Some(d) => match d.as_u64() {
            Some(d) if (1..=EMBED_DIM as u64).contains(&d) => Ok(d as usize),
            _ => Err("dimensions out of range"),
        },
    }
}

/// The embeddings of `inputs`, cut to `dim` and normalised again when
/// shorter (as Ollama truncates).
fn vectors(inputs: &[String], dim: usize) -> Vec<Vec<f32>> {
    inputs
        .iter()
        .map(|t| {
            let mut v = embed(t, EMBED_DIM);
            if dim < EMBED_DIM {
                v.truncate(dim);
                normalise(&mut v);
            }
            v
        })
        .collect()
}

/// The prompt tokens an embedding request reports (words, roughly).
fn token_count(inputs: &[String]) -> usize {
    inputs.iter().map(|t| t.split_whitespace().count()).sum()
}

fn expire(st: &mut State, now: SystemTime) {
    st.loaded.retain(|_, exp| exp.is_none_or(|t| t > now));
}

fn is_json_route(path: &str, method: &str) -> bool {
    match path {
        "/api/delete" => method == "DELETE",
        "/api/show"
        | "/api/pull"
        | "/api/generate"
        | "/api/chat"
        | "/api/embed"
        | "/api/embeddings"
        | "/embed"
        | "/v1/chat/completions"
        | "/v1/embeddings" => method == "POST",
        _ => false,
    }
}

fn is_known_path(path: &str) -> bool {
    openai::model_path(path).is_some()
        || ws::PATHS.contains(&path)
        || matches!(
            path,
            "/" | "/health"
                | "/info"
                | "/api/version"
                | "/api/tags"
                | "/api/ps"
                | "/api/show"
                | "/api/pull"
                | "/api/delete"
                | "/api/generate"
                | "/api/chat"
                | "/api/embed"
                | "/api/embeddings"
                | "/embed"
                | "/v1/models"
                | "/v1/chat/completions"
                | "/v1/embeddings"
                | "/testrt/requests"
                | "/testrt/hang"
                | "/testrt/exit"
                | "/testrt/oom"
                | "/testrt/health"
                | "/testrt/generate"
        )
}
