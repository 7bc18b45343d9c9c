//! The AI services: status, model management through the LLM runtime's
//! Ollama API, and the chat / embeddings passthrough. Every call to the
//! runtime goes through `crate::ai`; this file validates input, maps errors
//! and turns streams into Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use crate::ai::pulls::{PullState, QueueEvent};
use crate::ai::{
    AiError, Backend, ChatEvent, ChatMessage, ChatParams, EmbeddingInfo, Generation, LoadedModel,
    ModelDetails, ModelEntry, PullEvent, Target,
};
use crate::docker::{Role, ServiceState};
use crate::state::AppState;

/// Largest `max_tokens` a chat may ask for.
pub const MAX_TOKENS: u32 = 2048;
/// At most this many messages per chat.
pub const MAX_MESSAGES: usize = 100;
/// Sum of the messages' content, in bytes.
pub const MAX_CHAT_BYTES: usize = 64 * 1024;
/// At most this many texts per embeddings call.
pub const MAX_TEXTS: usize = 64;
/// Longest text to embed, in bytes.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// The AI routes for the admin (status, model management). They and the
/// two below share one Ollama client, which `api::router` installs (one per
/// router, so "last tokens/s" belongs to the serving router).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(models))
        .routes(routes!(model, delete_model))
        .routes(routes!(pull))
        .routes(routes!(unload))
        .routes(routes!(embedding_info))
}

/// `POST /api/llm/chat`: an admin, or an API key with the `llm` scope.
pub fn llm_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat))
}

/// `POST /api/embeddings`: an admin, or an API key with `embeddings`.
pub fn embeddings_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(embeddings))
}

impl From<AiError> for ApiError {
    fn from(e: AiError) -> Self {
        let msg = e.to_string();
        let llm = |b: &Backend| *b == Backend::Llm;
        match &e {
            AiError::Unavailable(b, _) => ApiError::unavailable(
                if llm(b) {
                    "llm_unavailable"
                } else {
                    "embeddings_unavailable"
                },
                msg,
            ),
            AiError::NotFound(_) => ApiError::new(StatusCode::NOT_FOUND, "model_not_found", msg),
            AiError::Rejected(b, _) => ApiError::bad_request(
                if llm(b) {
                    "llm_rejected"
                } else {
                    "embeddings_rejected"
                },
                msg,
            ),
            AiError::Timeout(b, _) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                if llm(b) {
                    "llm_timeout"
                } else {
                    "embeddings_timeout"
                },
                msg,
            ),
            AiError::Upstream(b, _) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                if llm(b) {
                    "llm_error"
                } else {
                    "embeddings_error"
                },
                msg,
            ),
        }
    }
}

fn target(state: &AppState, backend: Backend) -> Result<Target, AiError> {
    crate::ai::locate(&state.services.services(), backend)
}

fn model_name(name: &str) -> Result<(), ApiError> {
    crate::ai::check_model_name(name).map_err(|m| ApiError::bad_request("invalid_model", m))
}

fn sse<S>(events: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn error_event(code: &str, message: &str) -> Event {
    Event::default()
        .event("error")
        .data(json!({"code": code, "message": message}).to_string())
}

// ---------------------------------------------------------------- status

#[derive(Serialize, utoipa::ToSchema)]
pub struct AiServiceState {
    pub name: String,
    pub state: ServiceState,
    pub address: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AiStatus {
    /// The service with role `llm`; null when the catalog has none.
    pub llm: Option<AiServiceState>,
    /// The service with role `embeddings`; null when the catalog has none.
    pub embeddings: Option<AiServiceState>,
    /// Models in memory now (`/api/ps`); null when the LLM could not be asked.
    pub loaded_models: Option<Vec<LoadedModel>>,
    /// Why `loaded_models` is null.
    pub llm_error: Option<String>,
    /// GPU utilisation of the latest metrics sample; null without a GPU.
    pub gpu_utilization_percent: Option<f64>,
    /// Tokens/s of the last chat arasuld relayed; null before the first.
    pub last_tokens_per_second: Option<f64>,
    pub last_generation: Option<Generation>,
    pub timestamp: DateTime<Utc>,
}

/// LLM and embeddings service state, loaded models, GPU load, last tokens/s.
#[utoipa::path(get, path = "/api/services/ai", tag = "ai",
    responses((status = 200, body = AiStatus)))]
pub async fn status(State(state): State<AppState>) -> Json<AiStatus> {
    let ai = state.ai.clone();
    let services = state.services.services();
    let find = |role: Role| {
        services
            .iter()
            .find(|s| s.role == role)
            .map(|s| AiServiceState {
                name: s.name.clone(),
                state: s.state,
                address: s.address.clone(),
            })
    };
    let (loaded_models, llm_error) = match target(&state, Backend::Llm) {
        Ok(t) => match ai.ps(&t).await {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e.to_string())),
        },
        Err(e) => (None, Some(e.to_string())),
    };
    let last_generation = ai.last_generation();
    Json(AiStatus {
        llm: find(Role::Llm),
        embeddings: find(Role::Embeddings),
        loaded_models,
        llm_error,
        gpu_utilization_percent: state
            .metrics
            .latest()
            .and_then(|s| s.gpu.as_ref().map(|g| g.utilization_percent)),
        last_tokens_per_second: last_generation.as_ref().and_then(|g| g.tokens_per_second),
        last_generation,
        timestamp: Utc::now(),
    })
}

// ---------------------------------------------------------------- models

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelList {
    pub models: Vec<ModelEntry>,
    pub timestamp: DateTime<Utc>,
}

/// Models installed in the LLM runtime (`/api/tags`).
#[utoipa::path(get, path = "/api/services/llm/models", tag = "ai",
    responses((status = 200, body = ModelList),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody),
        (status = 502, body = ErrorBody), (status = 504, body = ErrorBody)))]
pub async fn models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let ai = state.ai.clone();
    let t = target(&state, Backend::Llm)?;
    Ok(Json(ModelList {
        models: ai.tags(&t).await?,
        timestamp: Utc::now(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelReport {
    pub name: String,
    pub model: ModelDetails,
    pub timestamp: DateTime<Utc>,
}

/// One installed model (`/api/show`).
#[utoipa::path(get, path = "/api/services/llm/models/{name}", tag = "ai",
    params(("name" = String, Path, description = "Model name, e.g. `llama3.2:1b` (no `/`)")),
    responses((status = 200, body = ModelReport),
        (status = 400, description = "`invalid_model`", body = ErrorBody),
        (status = 404, description = "`model_not_found`", body = ErrorBody),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody)))]
pub async fn model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelReport>, ApiError> {
    let ai = state.ai.clone();
    model_name(&name)?;
    let t = target(&state, Backend::Llm)?;
    Ok(Json(ModelReport {
        model: ai.show(&t, &name).await?,
        name,
        timestamp: Utc::now(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelDeleted {
    pub deleted: String,
    pub timestamp: DateTime<Utc>,
}

/// Removes an installed model from the LLM runtime.
#[utoipa::path(delete, path = "/api/services/llm/models/{name}", tag = "ai",
    params(("name" = String, Path, description = "Model name (no `/`)")),
    responses((status = 200, body = ModelDeleted),
        (status = 400, description = "`invalid_model`", body = ErrorBody),
        (status = 404, description = "`model_not_found`", body = ErrorBody),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody)))]
pub async fn delete_model(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ModelDeleted>, ApiError> {
    let ai = state.ai.clone();
    model_name(&name)?;
    let t = target(&state, Backend::Llm)?;
    ai.delete(&t, &name).await?;
    Ok(Json(ModelDeleted {
        deleted: name,
        timestamp: Utc::now(),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// e.g. `llama3.2:1b` (no `/`)
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
    pub model: String,
}

/// Pulls a model. The answer is `text/event-stream`: each progress line of
/// the runtime as a `data:` JSON event (`status`, `digest`, `total`,
/// `completed`), then one `done` event (`{"model","status":"success"}`) or one
/// `error` event (`{"code","message"}`).
#[utoipa::path(post, path = "/api/services/llm/models/pull", tag = "ai",
    request_body = PullRequest,
    responses((status = 200, description = "Progress as Server-Sent Events", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_model`", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody)))]
pub async fn pull(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    slot: super::serve::StreamSlot,
    ApiJson(req): ApiJson<PullRequest>,
) -> Result<Response, ApiError> {
    model_name(&req.model)?;
    target(&state, Backend::Llm)?;
    // Followed from before it is queued, so no line is missed.
    let events = state.models.queue.subscribe();
    let (pull, _) = super::models::admit_and_enqueue(&state, &headers, &req.model, None).await?;
    let model = req.model;
    Ok(sse(slot.hold(follow(events, pull.id).map(move |e| {
        Ok(match e {
            PullEvent::Progress(v) => Event::default().data(v.to_string()),
            PullEvent::Done => Event::default()
                .event("done")
                .data(json!({"model": model, "status": "success"}).to_string()),
            PullEvent::Failed(m) => error_event("pull_failed", &m),
        })
    }))))
}

/// The queue's events for pull `id`: its lines, then Done or Failed.
fn follow(
    rx: tokio::sync::broadcast::Receiver<QueueEvent>,
    id: u64,
) -> impl Stream<Item = PullEvent> + Send + 'static {
    use tokio::sync::broadcast::error::RecvError;
    futures::stream::unfold(Some(rx), move |rx| async move {
        let mut rx = rx?;
        loop {
            match rx.recv().await {
                Ok(QueueEvent::Line(i, v)) if i == id => {
                    return Some((PullEvent::Progress(v), Some(rx)));
                }
                Ok(QueueEvent::Finished(p)) if p.id == id => {
                    let end = match p.state {
                        PullState::Done => PullEvent::Done,
                        _ => PullEvent::Failed(p.error.unwrap_or_else(|| {
                            format!("the download was {:?}", p.state).to_lowercase()
                        })),
                    };
                    return Some((end, None));
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    return Some((PullEvent::Failed("the daemon is stopping".into()), None));
                }
            }
        }
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnloadRequest {
    /// The model to unload; all loaded models when absent.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
    pub model: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Unloaded {
    pub unloaded: Vec<String>,
    pub timestamp: DateTime<Utc>,
}

/// Unloads a model from memory at once (`keep_alive: 0`), or every loaded
/// model when the body (optional) names none.
#[utoipa::path(post, path = "/api/services/llm/unload", tag = "ai",
    request_body(content = Option<UnloadRequest>, description = "Optional"),
    responses((status = 200, body = Unloaded),
        (status = 400, body = ErrorBody), (status = 404, description = "`model_not_found`", body = ErrorBody),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody)))]
pub async fn unload(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Unloaded>, ApiError> {
    let ai = state.ai.clone();
    let req: UnloadRequest = if body.iter().all(u8::is_ascii_whitespace) {
        UnloadRequest { model: None }
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::unprocessable("invalid_body", e.to_string()))?
    };
    if let Some(m) = &req.model {
        model_name(m)?;
    }
    let t = target(&state, Backend::Llm)?;
    let names = match req.model {
        Some(m) => vec![m],
        None => ai.ps(&t).await?.into_iter().map(|m| m.name).collect(),
    };
    for n in &names {
        ai.unload(&t, n).await?;
    }
    Ok(Json(Unloaded {
        unloaded: names,
        timestamp: Utc::now(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingReport {
    pub service: AiServiceState,
    pub info: EmbeddingInfo,
    pub timestamp: DateTime<Utc>,
}

/// The embedding service: its state, model, vector dimension, input limit.
#[utoipa::path(get, path = "/api/services/embedding/info", tag = "ai",
    responses((status = 200, body = EmbeddingReport),
        (status = 503, description = "`embeddings_unavailable`", body = ErrorBody)))]
pub async fn embedding_info(
    State(state): State<AppState>,
) -> Result<Json<EmbeddingReport>, ApiError> {
    let ai = state.ai.clone();
    let t = target(&state, Backend::Embeddings)?;
    let info = ai.embedding_info(&t).await?;
    let s = state
        .services
        .service(&t.service)
        .ok_or_else(|| ApiError::not_found(format!("no service named {:?}", t.service)))?;
    Ok(Json(EmbeddingReport {
        service: AiServiceState {
            name: s.name,
            state: s.state,
            address: s.address,
        },
        info,
        timestamp: Utc::now(),
    }))
}

// ---------------------------------------------------------------- passthrough

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatRequest {
    /// At most 100 messages, at most 64 KiB of content in all.
    #[schema(min_items = 1, max_items = 100)]
    pub messages: Vec<ChatMessage>,
    /// Default: the first installed model that is not an embedding model.
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
    pub model: Option<String>,
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f64>,
    #[schema(minimum = 1, maximum = 2048)]
    pub max_tokens: Option<u32>,
    /// Answer as Server-Sent Events.
    #[serde(default)]
    pub stream: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChatResponse {
    pub message: ChatMessage,
    pub model: String,
    /// Tokens generated.
    pub tokens: u64,
    pub tokens_per_second: Option<f64>,
    /// `stop`, or `length` when `max_tokens` cut it short.
    pub done_reason: Option<String>,
    pub timestamp: DateTime<Utc>,
}

fn check_chat(req: &ChatRequest) -> Result<(), ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_messages",
            "messages must not be empty",
        ));
    }
    if req.messages.len() > MAX_MESSAGES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_messages",
            format!("at most {MAX_MESSAGES} messages per chat"),
        ));
    }
    if let Some(m) = req
        .messages
        .iter()
        .find(|m| !matches!(m.role.as_str(), "system" | "user" | "assistant"))
    {
        return Err(ApiError::bad_request(
            "invalid_messages",
            format!("role must be system, user or assistant, got {:?}", m.role),
        ));
    }
    let total: usize = req.messages.iter().map(|m| m.content.len()).sum();
    if total > MAX_CHAT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            format!("the messages' content is {total} bytes; at most {MAX_CHAT_BYTES}"),
        ));
    }
    if let Some(n) = req.max_tokens
        && !(1..=MAX_TOKENS).contains(&n)
    {
        return Err(ApiError::bad_request(
            "invalid_max_tokens",
            format!("max_tokens must be between 1 and {MAX_TOKENS}, got {n}"),
        ));
    }
    if let Some(t) = req.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_request(
            "invalid_temperature",
            format!("temperature must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(m) = &req.model {
        model_name(m)?;
    }
    Ok(())
}

/// Chat with the LLM. With `"stream": true` the answer is
/// `text/event-stream`: `data: {"content"}` chunks, then one `done` event
/// (`{"model","tokens","tokens_per_second","done_reason"}`) or one `error`
/// event (`{"code","message"}`). Rate limit: the LLM class (10/s).
#[utoipa::path(post, path = "/api/llm/chat", tag = "ai",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer; SSE when `stream` is true",
            content((ChatResponse = "application/json"), (String = "text/event-stream"))),
        (status = 400, description = "`invalid_messages`, `invalid_max_tokens`, `invalid_temperature`, `invalid_model`, `llm_rejected`", body = ErrorBody),
        (status = 404, description = "`model_not_found`", body = ErrorBody),
        (status = 413, description = "`too_many_messages`, `input_too_large`", body = ErrorBody),
        (status = 422, description = "`insufficient_memory`: the model is not loaded and would not fit (the numbers in words)", body = ErrorBody),
        (status = 503, description = "`llm_unavailable`", body = ErrorBody),
        (status = 504, description = "`llm_timeout`", body = ErrorBody)))]
pub async fn chat(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let ai = state.ai.clone();
    check_chat(&req)?;
    let t = target(&state, Backend::Llm)?;
    let model = match req.model {
        Some(m) => m,
        None => ai.default_chat_model(&t).await?,
    };
    // A model that must be loaded first has to fit the memory.
    state
        .models
        .admit_load(&t, &model)
        .await
        .map_err(|r| super::models::refused(&r, super::models::lang(&headers)))?;
    let params = ChatParams {
        model,
        messages: req.messages,
        temperature: req.temperature,
        max_tokens: req.max_tokens,
    };
    if !req.stream {
        let reply = ai.chat(&t, &params).await?;
        return Ok(Json(ChatResponse {
            message: reply.message,
            model: reply.stats.model,
            tokens: reply.stats.tokens,
            tokens_per_second: reply.stats.tokens_per_second,
            done_reason: reply.done_reason,
            timestamp: Utc::now(),
        })
        .into_response());
    }
    let events = ai.chat_stream(&t, &params).await?;
    Ok(sse(events.map(|e| {
        Ok(match e {
            ChatEvent::Content(c) => Event::default().data(json!({ "content": c }).to_string()),
            ChatEvent::Done { stats, done_reason } => Event::default().event("done").data(
                json!({
                    "model": stats.model,
                    "tokens": stats.tokens,
                    "tokens_per_second": stats.tokens_per_second,
                    "done_reason": done_reason,
                })
                .to_string(),
            ),
            ChatEvent::Failed(m) => error_event("llm_error", &m),
        })
    })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Texts {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// One text, or up to 64; each at most 8 KiB.
    pub text: Texts,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EmbeddingsResponse {
    /// One vector per text, in order.
    pub vectors: Vec<Vec<f32>>,
    pub model: String,
    pub dimension: usize,
    pub timestamp: DateTime<Utc>,
}

/// Embeds text through the embedding service (its Ollama-compatible
/// `/api/embed`, with the model its `/info` names). Rate limit: the LLM class.
#[utoipa::path(post, path = "/api/embeddings", tag = "ai",
    request_body = EmbeddingsRequest,
    responses((status = 200, body = EmbeddingsResponse),
        (status = 400, description = "`invalid_text`", body = ErrorBody),
        (status = 413, description = "`too_many_texts`, `text_too_large`", body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 503, description = "`embeddings_unavailable`", body = ErrorBody)))]
pub async fn embeddings(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<EmbeddingsRequest>,
) -> Result<Json<EmbeddingsResponse>, ApiError> {
    let ai = state.ai.clone();
    let texts = match req.text {
        Texts::One(t) => vec![t],
        Texts::Many(v) => v,
    };
    if texts.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_text",
            "text must not be an empty list",
        ));
    }
    if texts.len() > MAX_TEXTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_texts",
            format!("at most {MAX_TEXTS} texts per call, got {}", texts.len()),
        ));
    }
    if let Some(i) = texts.iter().position(|t| t.len() > MAX_TEXT_BYTES) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_large",
            format!(
                "text {i} is {} bytes; at most {MAX_TEXT_BYTES}",
                texts[i].len()
            ),
        ));
    }
    let t = target(&state, Backend::Embeddings)?;
    let model = ai.embedding_model(&t).await?;
    let vectors = ai.embed(&t, &model, &texts).await?;
    Ok(Json(EmbeddingsResponse {
        dimension: vectors.first().map_or(0, Vec::len),
        vectors,
        model,
        timestamp: Utc::now(),
    }))
}
