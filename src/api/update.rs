//! Updates over HTTP (admin): upload a bundle (multipart, streamed to the
//! staging area on disk, never whole in memory, with its own size limit
//! instead of the global body limit), apply it, follow the status (JSON or
//! SSE) and list the history. The work is `update::UpdateManager`'s.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, PageQuery, Paging};
use crate::state::AppState;
use crate::update::manager::new_id;
use crate::update::{Source, UpdateCheck, UpdateError, UpdateStatus};

/// The routes; the upload route alone lifts the global body limit (it
/// enforces `update.max_bundle_bytes` while streaming).
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .layer(DefaultBodyLimit::disable())
        .merge(
            OpenApiRouter::new()
                .routes(routes!(apply))
                .routes(routes!(status))
                .routes(routes!(status_stream))
                .routes(routes!(history)),
        )
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        let msg = e.to_string();
        match e {
            UpdateError::InProgress(_) | UpdateError::NoneStaged => {
                ApiError::new(StatusCode::CONFLICT, e.code(), msg)
            }
            UpdateError::Bundle(b) => {
                let status = StatusCode::from_u16(b.http_status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                if status.is_server_error() {
                    return ApiError::internal(b);
                }
                ApiError::new(status, b.code(), msg)
            }
            UpdateError::TooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "bundle_too_large", msg)
            }
            UpdateError::BadUpload(_) => ApiError::bad_request("invalid_bundle", msg),
            UpdateError::InvalidConfig(_) => ApiError::unprocessable(e.code(), msg),
            UpdateError::Internal(e) => ApiError::internal(format!("{e:#}")),
        }
    }
}

/// The multipart form of the upload.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The `.araupdate` bundle.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// Deletes the partial upload however the handler ends (a client that
/// goes away drops the handler mid-stream).
struct Incoming(PathBuf);

impl Drop for Incoming {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Streams the bundle to disk, then verifies it (signature, versions,
/// every payload member's size and sha256) into staging. The verified
/// bundle waits for `POST /api/update/apply`; a newer upload replaces it.
#[utoipa::path(post, path = "/api/update/upload", tag = "update",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Verified and staged", body = UpdateCheck),
        (status = 400, description = "`invalid_bundle` (also a truncated upload or no `file` field), `payload_mismatch`", body = super::error::ErrorBody),
        (status = 409, description = "`update_in_progress`", body = super::error::ErrorBody),
        (status = 413, description = "`bundle_too_large`", body = super::error::ErrorBody),
        (status = 422, description = "`signature_invalid`, `version_not_newer`, `min_version_not_met`, `no_trusted_key`, `invalid_config` (a bundled arasuld.yaml or services.yaml that would not load)", body = super::error::ErrorBody)))]
pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<UpdateCheck>, ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request(
            "invalid_bundle",
            format!("expected a multipart/form-data body with a field `file`: {e}"),
        )
    })?;
    let mgr = &state.updates;
    let limit = mgr.config().max_bundle_bytes;
    let total: Option<u64> = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if let Some(t) = total
        && t > limit.saturating_add(64 * 1024)
    {
        return Err(UpdateError::TooLarge { limit }.into());
    }
    let ticket = mgr.begin(Source::Upload)?;
    let dir = mgr.incoming_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(ApiError::internal)?;
    let incoming = Incoming(dir.join(format!("{}.araupdate", new_id())));
    let mut got_file = false;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(
                    UpdateError::BadUpload(format!("the upload is incomplete: {e}")).into(),
                );
            }
        };
        if field.name() != Some("file") || got_file {
            continue;
        }
        got_file = true;
        let mut out = tokio::fs::File::create(&incoming.0)
            .await
            .map_err(ApiError::internal)?;
        let mut field = field;
        let mut written: u64 = 0;
        let mut reported: u64 = 0;
        loop {
            let chunk = match field.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    return Err(
                        UpdateError::BadUpload(format!("the upload is incomplete: {e}")).into(),
                    );
                }
            };
            written += chunk.len() as u64;
            if written > limit {
                return Err(UpdateError::TooLarge { limit }.into());
            }
            out.write_all(&chunk).await.map_err(ApiError::internal)?;
            if written - reported >= 1 << 20 {
                reported = written;
                ticket.progress(written, total);
            }
        }
        out.sync_all().await.map_err(ApiError::internal)?;
        ticket.progress(written, Some(written));
    }
    if !got_file {
        return Err(UpdateError::BadUpload("the form has no field `file`".into()).into());
    }
    let check = ticket.finish(&incoming.0).await?;
    Ok(Json(check))
}

/// Starts applying the validated bundle; follow it with the status.
#[utoipa::path(post, path = "/api/update/apply", tag = "update",
    responses(
        (status = 202, description = "Started", body = UpdateStatus),
        (status = 409, description = "`no_update_staged` or `update_in_progress`", body = super::error::ErrorBody)))]
pub async fn apply(State(state): State<AppState>) -> Result<Response, ApiError> {
    let status = state.updates.apply()?;
    Ok((StatusCode::ACCEPTED, Json(status)).into_response())
}

/// Where the updater is: state, step, percent, the latest log lines, and
/// the bundle waiting to be applied.
#[utoipa::path(get, path = "/api/update/status", tag = "update",
    responses((status = 200, body = UpdateStatus)))]
pub async fn status(State(state): State<AppState>) -> Json<UpdateStatus> {
    Json(state.updates.status())
}

/// Server-sent events: `status` with the UpdateStatus as JSON, at once and
/// on every change.
#[utoipa::path(get, path = "/api/update/status/stream", tag = "update",
    responses((status = 200, description = "SSE: events named `status`, data = UpdateStatus as JSON", content_type = "text/event-stream", body = String)))]
pub async fn status_stream(
    State(state): State<AppState>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let rx = state.updates.subscribe();
    let stream = tokio_stream::wrappers::WatchStream::new(rx).map(|mut s| {
        s.timestamp = Utc::now();
        let data = serde_json::to_string(&s).unwrap_or_default();
        Ok(Event::default().event("status").data(data))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UpdateHistoryEntry {
    pub id: String,
    /// Empty for a bundle refused before its manifest could be trusted.
    pub version: String,
    pub from_version: String,
    /// `upload` or `usb`.
    pub source: String,
    /// `done`, `rolled_back`, `failed` or `rejected`.
    pub result: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct UpdateHistory {
    /// Newest first.
    pub updates: Vec<UpdateHistoryEntry>,
    pub timestamp: DateTime<Utc>,
}

/// Every finished update and refused bundle, newest first (`limit` 50 by
/// default, at most 500).
#[utoipa::path(get, path = "/api/update/history", tag = "update", params(PageQuery),
    responses(
        (status = 200, body = UpdateHistory),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "The database is down", body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Paging { limit, offset }: Paging<50, 500>,
) -> Result<Json<UpdateHistory>, ApiError> {
    if !state.db.status().up {
        return Err(ApiError::database_down("retry later"));
    }
    let rows = state.updates.history(limit, offset).await?;
    Ok(Json(UpdateHistory {
        updates: rows
            .into_iter()
            .map(|r| UpdateHistoryEntry {
                id: r.id,
                version: r.version,
                from_version: r.from_version,
                source: r.source,
                result: r.result.unwrap_or_default(),
                started_at: r.started_at,
                finished_at: r.finished_at,
                error: r.error,
            })
            .collect(),
        timestamp: Utc::now(),
    }))
}
