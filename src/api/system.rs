//! Liveness, worker table, database pool and config reload.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::oneshot;

use super::error::ApiError;
use crate::db::PoolStats;
use crate::state::{AppState, Control};
use crate::tasks::WorkerStatus;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers. Dependencies are reported elsewhere.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub timestamp: DateTime<Utc>,
}

/// Liveness: answers without touching the database.
#[utoipa::path(get, path = "/api/health", tag = "system",
    responses((status = 200, description = "The daemon is alive", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerStatus>,
    pub timestamp: DateTime<Utc>,
}

/// Every background worker with its state, error count and last error.
#[utoipa::path(get, path = "/api/system/workers", tag = "system",
    responses((status = 200, body = WorkerList)))]
pub async fn workers(State(state): State<AppState>) -> Json<WorkerList> {
    Json(WorkerList {
        workers: state.workers.statuses(),
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PoolReport {
    #[serde(flatten)]
    pub pool: PoolStats,
    pub timestamp: DateTime<Utc>,
}

/// Connection pool usage and whether the database is reachable and migrated.
#[utoipa::path(get, path = "/api/database/pool", tag = "system",
    responses((status = 200, body = PoolReport)))]
pub async fn database_pool(State(state): State<AppState>) -> Json<PoolReport> {
    Json(PoolReport {
        pool: state.db.pool_stats(),
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    /// `key: old -> new` for each changed key (secrets masked).
    pub changed: Vec<String>,
    pub timestamp: DateTime<Utc>,
}

/// Re-reads the config file, as SIGHUP does. An invalid file changes nothing.
#[utoipa::path(post, path = "/api/system/reload-config", tag = "system",
    responses(
        (status = 200, body = ReloadReport),
        (status = 422, description = "The file has errors; the running config is kept", body = super::error::ErrorBody),
        (status = 503, body = super::error::ErrorBody)))]
pub async fn reload_config(State(state): State<AppState>) -> Result<Json<ReloadReport>, ApiError> {
    Ok(Json(ReloadReport {
        changed: reload(&state).await?,
        timestamp: Utc::now(),
    }))
}

/// Asks the main loop to re-read the config: the changed keys, or 422
/// `invalid_config` with the errors (the running config is kept).
pub async fn reload(state: &AppState) -> Result<Vec<String>, ApiError> {
    let (tx, rx) = oneshot::channel();
    let gone = || ApiError::unavailable("shutting_down", "the daemon is shutting down");
    state
        .control
        .send(Control::Reload(Some(tx)))
        .await
        .map_err(|_| gone())?;
    rx.await
        .map_err(|_| gone())?
        .map_err(|errors| ApiError::unprocessable("invalid_config", errors.join("; ")))
}
