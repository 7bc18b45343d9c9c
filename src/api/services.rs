//! The supervised containers: list, one, start/stop/restart, live logs (SSE).
//! Everything goes through the supervisor's handle; no Docker here.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiQuery};
use super::guard::AdminSession;
use crate::docker::{ServiceStatus, SupervisorError};
use crate::state::AppState;

const MAX_TAIL: usize = 10_000;

impl From<SupervisorError> for ApiError {
    fn from(e: SupervisorError) -> Self {
        let msg = e.to_string();
        match e {
            SupervisorError::UnknownService(_) => ApiError::not_found(msg),
            SupervisorError::DockerUnavailable(_) | SupervisorError::Gone => {
                ApiError::unavailable("docker_unavailable", msg)
            }
            SupervisorError::NeedsRestart(_) => {
                ApiError::new(StatusCode::CONFLICT, "needs_restart", msg)
            }
            SupervisorError::ImageMissing(_) => {
                ApiError::new(StatusCode::CONFLICT, "image_missing", msg)
            }
            SupervisorError::Docker(_) => {
                ApiError::new(StatusCode::BAD_GATEWAY, "docker_error", msg)
            }
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceList {
    pub services: Vec<ServiceStatus>,
    pub timestamp: DateTime<Utc>,
}

/// Every service of the catalog with its state. Without a login (the
/// route is public unless `http.require_auth_for_status`), each service
/// carries its state only: no error text, image id, container id or address.
#[utoipa::path(get, path = "/api/services", tag = "services",
    responses((status = 200, body = ServiceList)))]
pub async fn list(State(state): State<AppState>, admin: Option<AdminSession>) -> Json<ServiceList> {
    let mut services = state.services.services().as_ref().clone();
    if admin.is_none() {
        services.iter_mut().for_each(public_view);
    }
    Json(ServiceList {
        services,
        timestamp: Utc::now(),
    })
}

/// What anyone on the LAN may know of a service: its state and counters.
fn public_view(s: &mut ServiceStatus) {
    s.image_id = None;
    s.container_id = None;
    s.address = None;
    s.api_port = None;
    s.web_port = None;
    s.last_error = None;
    if let Some(p) = s.pull.as_mut() {
        p.last_error = None;
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceReport {
    pub service: ServiceStatus,
    pub timestamp: DateTime<Utc>,
}

fn report(state: &AppState, name: &str) -> Result<Json<ServiceReport>, ApiError> {
    let service = state
        .services
        .service(name)
        .ok_or_else(|| ApiError::not_found(format!("no service named {name:?}")))?;
    Ok(Json(ServiceReport {
        service,
        timestamp: Utc::now(),
    }))
}

/// One service: state, restarts, last exit code, OOM flag, image, container.
#[utoipa::path(get, path = "/api/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name from the catalog")),
    responses((status = 200, body = ServiceReport), (status = 404, body = super::error::ErrorBody)))]
pub async fn one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceReport>, ApiError> {
    report(&state, &name)
}

/// Starts the service (and forgets an earlier stop on purpose).
#[utoipa::path(post, path = "/api/services/{name}/start", tag = "services",
    params(("name" = String, Path)),
    responses((status = 200, body = ServiceReport), (status = 404, body = super::error::ErrorBody),
        (status = 409, description = "Image missing", body = super::error::ErrorBody),
        (status = 503, description = "Docker unreachable", body = super::error::ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceReport>, ApiError> {
    state.services.start(&name).await?;
    report(&state, &name)
}

/// Stops the service on purpose: nothing restarts it until it is started again.
#[utoipa::path(post, path = "/api/services/{name}/stop", tag = "services",
    params(("name" = String, Path)),
    responses((status = 200, body = ServiceReport), (status = 404, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceReport>, ApiError> {
    state.services.stop(&name).await?;
    report(&state, &name)
}

/// Restarts the service's container.
#[utoipa::path(post, path = "/api/services/{name}/restart", tag = "services",
    params(("name" = String, Path)),
    responses((status = 200, body = ServiceReport), (status = 404, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn restart(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceReport>, ApiError> {
    state.services.restart(&name).await?;
    report(&state, &name)
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Lines from the end (default 100, at most 10000).
    pub tail: Option<usize>,
    /// Keep the stream open and send new lines as they come.
    pub follow: Option<bool>,
}

/// The container's log as Server-Sent Events, one `data:` per line.
#[utoipa::path(get, path = "/api/services/{name}/logs", tag = "services",
    params(("name" = String, Path), LogsQuery),
    responses((status = 200, description = "text/event-stream, one event per log line", content_type = "text/event-stream", body = String),
        (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn logs(
    State(state): State<AppState>,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<LogsQuery>,
    slot: super::serve::StreamSlot,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let tail = q.tail.unwrap_or(100);
    if tail > MAX_TAIL {
        return Err(ApiError::bad_request(
            "invalid_tail",
            format!("tail must be at most {MAX_TAIL}"),
        ));
    }
    let lines = state
        .services
        .logs(&name, tail, q.follow.unwrap_or(false))
        .await?;
    let events = lines.map(|l| {
        Ok(match l {
            Ok(line) => Event::default().data(line),
            Err(e) => Event::default().event("error").data(e),
        })
    });
    Ok(Sse::new(slot.hold(events)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
