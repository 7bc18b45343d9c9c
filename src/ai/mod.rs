//! The Ollama client: the only code that talks HTTP to the LLM runtime and the
//! embedding service. It finds them through the supervisor's state (the
//! service with role `llm` / `embeddings`, healthy, with a container address)
//! and the catalog's health port. No axum here; the API maps [`AiError`].
//!
//! The embedding service is assumed to speak the Ollama API too
//! (`/api/embed`, `/api/tags`), plus an optional `GET /info`
//! (`{"model","dimension","max_input","version"}`) naming its model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::docker::{Role, ServiceState, ServiceStatus};

pub mod admission;
pub mod pulls;

/// Ollama's port, when the catalog names none.
pub const DEFAULT_PORT: u16 = 11434;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Metadata calls: version, tags, ps, show, delete, info.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(10);
/// Unloading may wait for a running generation to finish.
pub const UNLOAD_TIMEOUT: Duration = Duration::from_secs(30);
/// A whole non-streamed chat or embedding call.
pub const GENERATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest silence between two lines of a streamed chat or pull.
pub const STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest non-streamed answer read (embeddings of 64 long texts fit).
const MAX_BODY: usize = 32 << 20;
/// Longest single line of a streamed answer.
const MAX_LINE: usize = 1 << 20;

/// Which AI service a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Llm,
    Embeddings,
}

impl Backend {
    pub fn role(self) -> Role {
        match self {
            Backend::Llm => Role::Llm,
            Backend::Embeddings => Role::Embeddings,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Llm => "LLM",
            Backend::Embeddings => "embedding",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AiError {
    /// Not in the catalog, not healthy, no address, or refusing connections.
    #[error("the {0} service is not available: {1}")]
    Unavailable(Backend, String),
    /// The runtime answered 404 (model not installed).
    #[error("{0}")]
    NotFound(String),
    /// The runtime answered 400 (e.g. chat with an embedding model).
    #[error("{1}")]
    Rejected(Backend, String),
    #[error("the {0} service did not answer within {1:?}")]
    Timeout(Backend, Duration),
    /// 5xx, or an answer that is not what the Ollama API promises.
    #[error("the {0} service failed: {1}")]
    Upstream(Backend, String),
}

/// Where to reach one AI service.
#[derive(Clone, Debug)]
pub struct Target {
    pub backend: Backend,
    /// The catalog name of the service.
    pub service: String,
    /// `http://address:port`
    pub base: String,
}

/// The service of `backend`'s role, if it is healthy and has an address.
/// `port_of` gives the catalog's port for a service name.
pub fn locate(services: &[ServiceStatus], backend: Backend) -> Result<Target, AiError> {
    let unavailable = |m: String| AiError::Unavailable(backend, m);
    let s = services
        .iter()
        .find(|s| s.role == backend.role())
        .ok_or_else(|| {
            let role = match backend {
                Backend::Llm => "llm",
                Backend::Embeddings => "embeddings",
            };
            unavailable(format!("no service with role {role} in the catalog"))
        })?;
    if s.state != ServiceState::Healthy {
        let state = serde_json::to_value(s.state).unwrap_or(Value::Null);
        let state = state.as_str().unwrap_or("unknown");
        return Err(unavailable(format!("service {:?} is {state}", s.name)));
    }
    let addr = s
        .address
        .as_deref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| unavailable(format!("service {:?} has no address", s.name)))?;
    let port = s.api_port.unwrap_or(DEFAULT_PORT);
    let host = if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    };
    Ok(Target {
        backend,
        service: s.name.clone(),
        base: format!("http://{host}:{port}"),
    })
}

/// Ollama model names as the API accepts them: `llama3.2:1b`,
/// `qwen2.5-coder:7b-instruct-q4_K_M`. No `/` (namespaced names are not
/// supported through the API: they could not be addressed in a path).
pub fn check_model_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid model name {name:?}: 1–200 letters, digits, '.', '_', '-' or ':' (no '/')"
        ))
    }
}

/// Embedding models are told apart by name or family (`/api/tags` has no
/// capabilities).
pub fn is_embedding_model(name: &str, details: &Value) -> bool {
    let n = name.to_ascii_lowercase();
    let family = details
        .get("family")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    ["embed", "bge", "minilm", "e5-"]
        .iter()
        .any(|k| n.contains(k))
        || family.contains("bert")
}

/// An installed model (`/api/tags`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelEntry {
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub modified_at: Option<String>,
    /// format, family, parameter_size, quantization_level.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: Value,
}

/// A model loaded in memory (`/api/ps`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoadedModel {
    pub name: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub size_vram: Option<u64>,
    /// When the runtime will unload it unless used again.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub context_length: Option<u64>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: Value,
}

/// What `/api/show` says about a model.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelDetails {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub details: Value,
    /// Architecture facts (`general.parameter_count`, context length, …).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub model_info: Value,
    /// e.g. `completion`, `tools`, `embedding`.
    #[serde(default)]
    pub capabilities: Vec<String>,
    #[serde(default)]
    pub parameters: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub license: Option<String>,
    #[serde(default)]
    pub modified_at: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    #[schema(pattern = "^(system|user|assistant)$")]
    pub role: String,
    pub content: String,
}

/// One chat call, already validated by the API.
#[derive(Clone, Debug)]
pub struct ChatParams {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f64>,
    pub max_tokens: Option<u32>,
}

/// Speed of the last finished generation.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Generation {
    pub model: String,
    /// Tokens generated (Ollama's `eval_count`).
    pub tokens: u64,
    /// `eval_count / eval_duration`; null when the runtime gave no duration.
    pub tokens_per_second: Option<f64>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug)]
pub struct ChatReply {
    pub message: ChatMessage,
    pub stats: Generation,
    pub done_reason: Option<String>,
}

/// A streamed chat: content chunks, then exactly one `Done` or `Failed`.
#[derive(Clone, Debug)]
pub enum ChatEvent {
    Content(String),
    Done {
        stats: Generation,
        done_reason: Option<String>,
    },
    Failed(String),
}

/// A streamed pull: Ollama's progress lines, then exactly one `Done` or `Failed`.
#[derive(Clone, Debug)]
pub enum PullEvent {
    Progress(Value),
    Done,
    Failed(String),
}

/// What the embedding service says about itself (`GET /info`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EmbeddingInfo {
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub dimension: Option<u64>,
    /// Longest input the service accepts (tokens or characters, as it says).
    #[serde(default)]
    pub max_input: Option<u64>,
    #[serde(default)]
    pub version: Option<String>,
}

/// The shared HTTP client and what the AI status page remembers.
#[derive(Clone)]
pub struct Ai {
    http: reqwest::Client,
    last: Arc<Mutex<Option<Generation>>>,
}

impl Default for Ai {
    fn default() -> Self {
        Self::new()
    }
}

fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| {
            String::from_utf8_lossy(&body[..body.len().min(500)])
                .trim()
                .to_string()
        })
}

fn generation(model: &str, v: &Value) -> Generation {
    let tokens = v.get("eval_count").and_then(Value::as_u64).unwrap_or(0);
    let ns = v.get("eval_duration").and_then(Value::as_u64).unwrap_or(0);
    Generation {
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_string(),
        tokens,
        tokens_per_second: (ns > 0).then(|| tokens as f64 / (ns as f64 / 1e9)),
        at: Utc::now(),
    }
}

pub type Lines = BoxStream<'static, Result<Value, AiError>>;

/// Splits a streamed body into JSON lines; a silence longer than `idle`
/// ends it with a timeout.
fn ndjson(resp: reqwest::Response, backend: Backend, idle: Duration) -> Lines {
    struct St {
        body: BoxStream<'static, Result<Vec<u8>, String>>,
        buf: Vec<u8>,
        ended: bool,
    }
    let st = St {
        body: resp
            .bytes_stream()
            .map(|r| r.map(|b| b.to_vec()).map_err(|e| e.to_string()))
            .boxed(),
        buf: Vec::new(),
        ended: false,
    };
    futures::stream::unfold(st, move |mut st| async move {
        loop {
            if let Some(i) = st.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = st.buf.drain(..=i).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let item = serde_json::from_slice(line).map_err(|e| {
                    AiError::Upstream(backend, format!("not a JSON line in the stream: {e}"))
                });
                return Some((item, st));
            }
            if st.ended {
                let rest = std::mem::take(&mut st.buf);
                let rest = rest.trim_ascii();
                if rest.is_empty() {
                    return None;
                }
                let item = serde_json::from_slice(rest).map_err(|e| {
                    AiError::Upstream(backend, format!("not a JSON line in the stream: {e}"))
                });
                return Some((item, st));
            }
            if st.buf.len() > MAX_LINE {
                st.ended = true;
                st.buf.clear();
                let e = AiError::Upstream(backend, "a streamed line is too long".into());
                return Some((Err(e), st));
            }
            match tokio::time::timeout(idle, st.body.next()).await {
                Err(_) => {
                    st.ended = true;
                    st.buf.clear();
                    return Some((Err(AiError::Timeout(backend, idle)), st));
                }
                Ok(None) => st.ended = true,
                Ok(Some(Ok(chunk))) => st.buf.extend_from_slice(&chunk),
                Ok(Some(Err(e))) => {
                    st.ended = true;
                    st.buf.clear();
                    let e = AiError::Upstream(backend, format!("stream broke off: {e}"));
                    return Some((Err(e), st));
                }
            }
        }
    })
    .boxed()
}

impl Ai {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Only the containers on the service network: never a proxy.
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        Ai {
            http,
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// The last finished chat's speed (since the daemon started).
    pub fn last_generation(&self) -> Option<Generation> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn remember(last: &Mutex<Option<Generation>>, g: &Generation) {
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.clone());
    }

    fn send_error(t: &Target, e: reqwest::Error, timeout: Duration) -> AiError {
        if e.is_timeout() {
            AiError::Timeout(t.backend, timeout)
        } else if e.is_connect() {
            AiError::Unavailable(
                t.backend,
                format!("cannot connect to {:?} at {}", t.service, t.base),
            )
        } else {
            AiError::Upstream(t.backend, e.to_string())
        }
    }

    /// Sends a request; a non-2xx answer becomes the matching error.
    async fn call(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, AiError> {
        let mut req = self.http.request(method, format!("{}{path}", t.base));
        if let Some(b) = body {
            req = req.json(b);
        }
        if let Some(d) = timeout {
            req = req.timeout(d);
        }
        // A streamed call has no total timeout, but its answer must start
        // within the idle bound (a hung runtime never sends headers).
        let shown = timeout.unwrap_or(STREAM_IDLE_TIMEOUT);
        let resp = tokio::time::timeout(shown, req.send())
            .await
            .map_err(|_| AiError::Timeout(t.backend, shown))?
            .map_err(|e| Self::send_error(t, e, shown))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = Self::read(t, resp, shown).await.unwrap_or_default();
        let msg = error_message(&body);
        Err(match status.as_u16() {
            404 => AiError::NotFound(if msg.is_empty() {
                format!("{path}: not found")
            } else {
                msg
            }),
            400 | 422 => AiError::Rejected(t.backend, msg),
            s => AiError::Upstream(t.backend, format!("{path} answered {s}: {msg}")),
        })
    }

    /// The whole body, at most MAX_BODY bytes.
    async fn read(
        t: &Target,
        resp: reqwest::Response,
        timeout: Duration,
    ) -> Result<Vec<u8>, AiError> {
        let mut out = Vec::new();
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Self::send_error(t, e, timeout))?;
            if out.len() + chunk.len() > MAX_BODY {
                return Err(AiError::Upstream(t.backend, "answer too large".into()));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    async fn json<T: DeserializeOwned>(
        &self,
        t: &Target,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<T, AiError> {
        let resp = self.call(t, method, path, body, Some(timeout)).await?;
        let bytes = Self::read(t, resp, timeout).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            AiError::Upstream(t.backend, format!("unexpected answer from {path}: {e}"))
        })
    }

    pub async fn version(&self, t: &Target) -> Result<String, AiError> {
        let v: Value = self
            .json(t, Method::GET, "/api/version", None, QUICK_TIMEOUT)
            .await?;
        Ok(v.get("version")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string())
    }

    /// Installed models.
    pub async fn tags(&self, t: &Target) -> Result<Vec<ModelEntry>, AiError> {
        #[derive(Deserialize)]
        struct Tags {
            #[serde(default)]
            models: Vec<ModelEntry>,
        }
        let v: Tags = self
            .json(t, Method::GET, "/api/tags", None, QUICK_TIMEOUT)
            .await?;
        Ok(v.models)
    }

    /// Models loaded in memory now.
    pub async fn ps(&self, t: &Target) -> Result<Vec<LoadedModel>, AiError> {
        #[derive(Deserialize)]
        struct Ps {
            #[serde(default)]
            models: Vec<LoadedModel>,
        }
        let v: Ps = self
            .json(t, Method::GET, "/api/ps", None, QUICK_TIMEOUT)
            .await?;
        Ok(v.models)
    }

    pub async fn show(&self, t: &Target, model: &str) -> Result<ModelDetails, AiError> {
        let body = json!({ "model": model });
        self.json(t, Method::POST, "/api/show", Some(&body), QUICK_TIMEOUT)
            .await
    }

    pub async fn delete(&self, t: &Target, model: &str) -> Result<(), AiError> {
        let body = json!({ "model": model });
        self.call(
            t,
            Method::DELETE,
            "/api/delete",
            Some(&body),
            Some(QUICK_TIMEOUT),
        )
        .await?;
        Ok(())
    }

    /// Unloads a model at once (`keep_alive: 0`, no prompt).
    pub async fn unload(&self, t: &Target, model: &str) -> Result<(), AiError> {
        let body = json!({ "model": model, "keep_alive": 0, "stream": false });
        let _: Value = self
            .json(
                t,
                Method::POST,
                "/api/generate",
                Some(&body),
                UNLOAD_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Loads a model into memory (an empty prompt, the runtime's default
    /// keep-alive), as Ollama does for a bare `/api/generate`.
    pub async fn load(&self, t: &Target, model: &str) -> Result<(), AiError> {
        let body = json!({ "model": model, "stream": false });
        let _: Value = self
            .json(
                t,
                Method::POST,
                "/api/generate",
                Some(&body),
                UNLOAD_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// Starts a pull. Errors before the first line (runtime down, 4xx/5xx)
    /// come back as Err; after that, the stream ends in Done or Failed.
    pub async fn pull(
        &self,
        t: &Target,
        model: &str,
    ) -> Result<BoxStream<'static, PullEvent>, AiError> {
        Ok(pull_events(self.pull_lines(t, model).await?))
    }

    /// The runtime's pull lines as they come (the queue reads them itself,
    /// to tell a stall from a failure).
    pub async fn pull_lines(&self, t: &Target, model: &str) -> Result<Lines, AiError> {
        let body = json!({ "model": model, "stream": true });
        let resp = self
            .call(t, Method::POST, "/api/pull", Some(&body), None)
            .await?;
        Ok(ndjson(resp, t.backend, STREAM_IDLE_TIMEOUT))
    }

    fn chat_body(p: &ChatParams, stream: bool) -> Value {
        let mut options = serde_json::Map::new();
        if let Some(t) = p.temperature {
            options.insert("temperature".into(), json!(t));
        }
        if let Some(n) = p.max_tokens {
            options.insert("num_predict".into(), json!(n));
        }
        json!({
            "model": p.model,
            "messages": p.messages,
            "stream": stream,
            "options": options,
        })
    }

    pub async fn chat(&self, t: &Target, p: &ChatParams) -> Result<ChatReply, AiError> {
        let body = Self::chat_body(p, false);
        let v: Value = self
            .json(t, Method::POST, "/api/chat", Some(&body), GENERATE_TIMEOUT)
            .await?;
        let message: ChatMessage = v
            .get("message")
            .cloned()
            .and_then(|m| serde_json::from_value(m).ok())
            .ok_or_else(|| AiError::Upstream(t.backend, "the chat answer has no message".into()))?;
        let stats = generation(&p.model, &v);
        Self::remember(&self.last, &stats);
        Ok(ChatReply {
            message,
            stats,
            done_reason: v
                .get("done_reason")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// A streamed chat; errors before the first chunk come back as Err.
    pub async fn chat_stream(
        &self,
        t: &Target,
        p: &ChatParams,
    ) -> Result<BoxStream<'static, ChatEvent>, AiError> {
        let body = Self::chat_body(p, true);
        let resp = self
            .call(t, Method::POST, "/api/chat", Some(&body), None)
            .await?;
        let lines = ndjson(resp, t.backend, STREAM_IDLE_TIMEOUT);
        Ok(chat_events(lines, p.model.clone(), self.last.clone()))
    }

    /// One vector per text, through the embedding service's `/api/embed`.
    pub async fn embed(
        &self,
        t: &Target,
        model: &str,
        texts: &[String],
    ) -> Result<Vec<Vec<f32>>, AiError> {
        #[derive(Deserialize)]
        struct Embed {
            embeddings: Vec<Vec<f32>>,
        }
        let body = json!({ "model": model, "input": texts });
        let v: Embed = self
            .json(t, Method::POST, "/api/embed", Some(&body), GENERATE_TIMEOUT)
            .await?;
        if v.embeddings.len() != texts.len() {
            return Err(AiError::Upstream(
                t.backend,
                format!("{} vectors for {} texts", v.embeddings.len(), texts.len()),
            ));
        }
        Ok(v.embeddings)
    }

    /// `GET /info` of the embedding service; without one (a plain Ollama),
    /// the version and the first installed embedding model.
    pub async fn embedding_info(&self, t: &Target) -> Result<EmbeddingInfo, AiError> {
        match self
            .json(t, Method::GET, "/info", None, QUICK_TIMEOUT)
            .await
        {
            Ok(info) => Ok(info),
            Err(AiError::NotFound(_)) => {
                let version = self.version(t).await.ok().filter(|v| !v.is_empty());
                let model = self
                    .tags(t)
                    .await?
                    .into_iter()
                    .find(|m| is_embedding_model(&m.name, &m.details))
                    .map(|m| m.name);
                Ok(EmbeddingInfo {
                    model,
                    version,
                    ..Default::default()
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The model embeddings are made with.
    pub async fn embedding_model(&self, t: &Target) -> Result<String, AiError> {
        self.embedding_info(t).await?.model.ok_or_else(|| {
            AiError::Unavailable(t.backend, "the embedding service names no model".into())
        })
    }

    /// The first installed model that is not an embedding model.
    pub async fn default_chat_model(&self, t: &Target) -> Result<String, AiError> {
        self.tags(t)
            .await?
            .into_iter()
            .find(|m| !is_embedding_model(&m.name, &m.details))
            .map(|m| m.name)
            .ok_or_else(|| AiError::NotFound("no chat model is installed: pull one first".into()))
    }
}

/// Ollama pull lines → progress events, then exactly one Done or Failed.
pub fn pull_events(lines: Lines) -> BoxStream<'static, PullEvent> {
    enum St {
        Lines(Lines),
        DoneNext,
        End,
    }
    futures::stream::unfold(St::Lines(lines), |st| async move {
        match st {
            St::End => None,
            St::DoneNext => Some((PullEvent::Done, St::End)),
            St::Lines(mut lines) => match lines.next().await {
                Some(Ok(v)) => {
                    if let Some(e) = v.get("error").and_then(Value::as_str) {
                        Some((PullEvent::Failed(e.to_string()), St::End))
                    } else if v.get("status").and_then(Value::as_str) == Some("success") {
                        Some((PullEvent::Progress(v), St::DoneNext))
                    } else {
                        Some((PullEvent::Progress(v), St::Lines(lines)))
                    }
                }
                Some(Err(e)) => Some((PullEvent::Failed(e.to_string()), St::End)),
                None => Some((
                    PullEvent::Failed("the pull ended before it succeeded".into()),
                    St::End,
                )),
            },
        }
    })
    .boxed()
}

/// Ollama chat lines → content chunks, then exactly one Done or Failed.
fn chat_events(
    lines: Lines,
    model: String,
    last: Arc<Mutex<Option<Generation>>>,
) -> BoxStream<'static, ChatEvent> {
    futures::stream::unfold(Some(lines), move |st| {
        let (model, last) = (model.clone(), last.clone());
        async move {
            let mut lines = st?;
            loop {
                return match lines.next().await {
                    Some(Ok(v)) => {
                        if let Some(e) = v.get("error").and_then(Value::as_str) {
                            Some((ChatEvent::Failed(e.to_string()), None))
                        } else if v.get("done").and_then(Value::as_bool) == Some(true) {
                            let stats = generation(&model, &v);
                            Ai::remember(&last, &stats);
                            let done_reason = v
                                .get("done_reason")
                                .and_then(Value::as_str)
                                .map(str::to_string);
                            Some((ChatEvent::Done { stats, done_reason }, None))
                        } else {
                            let content = v
                                .pointer("/message/content")
                                .and_then(Value::as_str)
                                .unwrap_or("");
                            if content.is_empty() {
                                continue;
                            }
                            Some((ChatEvent::Content(content.to_string()), Some(lines)))
                        }
                    }
                    Some(Err(e)) => Some((ChatEvent::Failed(e.to_string()), None)),
                    None => Some((
                        ChatEvent::Failed("the answer ended before it was done".into()),
                        None,
                    )),
                };
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::test_status as status;

    #[test]
    fn the_llm_is_found_by_role_and_needs_health_and_an_address() {
        let mut s = vec![
            status(
                "emb",
                Role::Embeddings,
                ServiceState::Healthy,
                Some("172.18.0.3"),
            ),
            status(
                "brain",
                Role::Llm,
                ServiceState::Healthy,
                Some("172.18.0.2"),
            ),
        ];
        let t = locate(&s, Backend::Llm).unwrap();
        assert_eq!(t.base, "http://172.18.0.2:11434");
        assert_eq!(t.service, "brain");
        s[0].api_port = Some(11435);
        let t = locate(&s, Backend::Embeddings).unwrap();
        assert_eq!(t.base, "http://172.18.0.3:11435");

        s[1].state = ServiceState::Starting;
        let e = locate(&s, Backend::Llm).unwrap_err();
        assert!(e.to_string().contains("\"brain\" is starting"), "{e}");
        s[1].state = ServiceState::Healthy;
        s[1].address = None;
        assert!(matches!(
            locate(&s, Backend::Llm),
            Err(AiError::Unavailable(Backend::Llm, _))
        ));
        assert!(locate(&s[..1], Backend::Llm).is_err());
    }

    #[test]
    fn model_names_with_a_slash_or_odd_bytes_are_refused() {
        for ok in [
            "llama3.2:1b",
            "nomic-embed-text",
            "qwen2.5-coder:7b-instruct-q4_K_M",
        ] {
            check_model_name(ok).unwrap();
        }
        for bad in ["", "a/b", "../x", ":x", "a b", "a%2Fb", &"x".repeat(201)] {
            assert!(check_model_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_per_second_come_from_eval_count_and_duration() {
        let g = generation(
            "m",
            &json!({"eval_count": 20, "eval_duration": 500_000_000u64}),
        );
        assert_eq!(g.tokens, 20);
        assert_eq!(g.tokens_per_second, Some(40.0));
        assert_eq!(generation("m", &json!({})).tokens_per_second, None);
    }

    fn lines(items: Vec<Value>) -> Lines {
        futures::stream::iter(items.into_iter().map(Ok)).boxed()
    }

    #[tokio::test]
    async fn a_pull_ends_in_done_after_success_or_in_failed() {
        let ok: Vec<PullEvent> = pull_events(lines(vec![
            json!({"status": "pulling manifest"}),
            json!({"status": "success"}),
        ]))
        .collect()
        .await;
        assert!(matches!(
            ok.as_slice(),
            [
                PullEvent::Progress(_),
                PullEvent::Progress(_),
                PullEvent::Done
            ]
        ));

        let failed: Vec<PullEvent> = pull_events(lines(vec![
            json!({"status": "pulling manifest"}),
            json!({"error": "file does not exist"}),
            json!({"status": "success"}),
        ]))
        .collect()
        .await;
        assert!(
            matches!(failed.as_slice(), [PullEvent::Progress(_), PullEvent::Failed(m)] if m == "file does not exist")
        );

        let cut: Vec<PullEvent> = pull_events(lines(vec![json!({"status": "pulling"})]))
            .collect()
            .await;
        assert!(matches!(cut.last(), Some(PullEvent::Failed(_))));
    }

    #[tokio::test]
    async fn a_streamed_chat_yields_chunks_then_stats_and_remembers_them() {
        let last = Arc::new(Mutex::new(None));
        let events: Vec<ChatEvent> = chat_events(
            lines(vec![
                json!({"message": {"role": "assistant", "content": "Hi "}, "done": false}),
                json!({"message": {"role": "assistant", "content": "there"}, "done": false}),
                json!({"model": "m:1", "done": true, "done_reason": "stop", "eval_count": 2, "eval_duration": 50_000_000u64}),
            ]),
            "m:1".into(),
            last.clone(),
        )
        .collect()
        .await;
        assert!(matches!(&events[0], ChatEvent::Content(c) if c == "Hi "));
        assert!(matches!(&events[1], ChatEvent::Content(c) if c == "there"));
        assert!(matches!(&events[2], ChatEvent::Done { stats, .. } if stats.tokens == 2));
        assert_eq!(events.len(), 3);
        assert_eq!(
            last.lock().unwrap().as_ref().unwrap().tokens_per_second,
            Some(40.0)
        );
    }
}
