//! Backups over HTTP (admin): the runs with the last good backup and its
//! age, a backup now, a restore, and the settings the dashboard changes
//! (written to the drop-in `arasuld.yaml.d/72-backups.yaml` and applied by
//! a reload, like `PATCH /api/settings`). The work is `backup::Backups`'s;
//! a run goes on in its own task when the client goes away, so a service
//! stopped for its copy is always started again.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use crate::backup::{BackupConfig, BackupError, DestinationKind, Run, S3Config};
use crate::state::AppState;

/// The drop-in the Backups screen writes.
pub const BACKUPS_DROP_IN: &str = "72-backups.yaml";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(restore))
        .routes(routes!(settings))
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let status = match e {
            BackupError::Busy => StatusCode::CONFLICT,
            BackupError::InsufficientDisk(_) | BackupError::Corrupt(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            BackupError::NotFound(_) => StatusCode::NOT_FOUND,
            BackupError::Destination(_) => StatusCode::SERVICE_UNAVAILABLE,
            BackupError::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // A failed run is the owner's business (its reason is in the run
        // list too), not a hidden 500.
        ApiError::new(status, e.code(), e.to_string())
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupsView {
    /// Newest first.
    pub runs: Vec<Run>,
    pub last_good: Option<Run>,
    /// Seconds since the last good backup started.
    pub last_good_age_s: Option<i64>,
    /// The last good backup is older than `backup.overdue_after`.
    pub overdue: bool,
    /// A backup or restore is running now.
    pub running: bool,
    /// The next scheduled run (None: schedule off).
    pub next_run: Option<DateTime<Utc>>,
    pub destination: String,
    pub settings: BackupConfig,
}

/// The backup runs and restores, the last good backup and its age, and the settings.
#[utoipa::path(get, path = "/api/backups", tag = "backups",
    responses((status = 200, body = BackupsView)))]
pub async fn list(State(state): State<AppState>) -> Json<BackupsView> {
    let config = state.backups.config();
    let mut runs = state.backups.runs();
    runs.reverse();
    let last_good = crate::backup::last_good(&runs).cloned();
    let age = last_good
        .as_ref()
        .map(|r| (Utc::now() - r.started).num_seconds());
    let overdue = crate::backup::is_overdue(&runs, Utc::now(), &config.backup);
    Json(BackupsView {
        runs,
        last_good,
        last_good_age_s: age,
        overdue,
        running: state.backups.is_busy(),
        next_run: crate::backup::next_run(chrono::Local::now(), &config.backup.schedule)
            .map(|t| t.with_timezone(&Utc)),
        destination: crate::backup::dest::describe(&config.backup),
        settings: config.backup.clone(),
    })
}

/// A backup now, to the configured destination; answers when it is written
/// and verified.
#[utoipa::path(post, path = "/api/backups", tag = "backups",
    responses((status = 200, body = Run),
        (status = 409, description = "`backup_running`", body = ErrorBody),
        (status = 422, description = "`insufficient_disk` (with the numbers)", body = ErrorBody),
        (status = 503, description = "`destination_unavailable`: the stick is not plugged in, the S3 keys are missing", body = ErrorBody),
        (status = 500, description = "`backup_failed`", body = ErrorBody)))]
pub async fn create(State(state): State<AppState>) -> Result<Json<Run>, ApiError> {
    let b = state.backups.clone();
    let run = tokio::spawn(async move { b.create("manual").await })
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(run))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A run's id (`20261206T033000Z`).
    pub id: Option<String>,
    /// An archive's file name at the destination, or an absolute path.
    pub file: Option<String>,
}

/// Puts a backup back: the archive is checked completely first (a corrupt
/// one is refused and nothing changes), then a safety backup, the services
/// stopped, the data restored, the services started and checked; a failure
/// rolls back to the safety backup.
#[utoipa::path(post, path = "/api/backups/restore", tag = "backups",
    request_body = RestoreRequest,
    responses((status = 200, body = Run),
        (status = 400, description = "`invalid_request`: name id or file", body = ErrorBody),
        (status = 404, description = "`backup_not_found`", body = ErrorBody),
        (status = 409, description = "`backup_running`", body = ErrorBody),
        (status = 422, description = "`archive_corrupt`: refused, nothing changed", body = ErrorBody),
        (status = 503, description = "`destination_unavailable`: the stick or the S3 bucket holding it cannot be reached", body = ErrorBody),
        (status = 500, description = "`backup_failed`: the restore failed (and was rolled back)", body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RestoreRequest>,
) -> Result<Json<Run>, ApiError> {
    let which = match (req.id, req.file) {
        (Some(x), None) | (None, Some(x)) if !x.trim().is_empty() => x,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_request",
                "name the backup by id or by file (one of them)",
            ));
        }
    };
    let b = state.backups.clone();
    let run = tokio::spawn(async move { b.restore(&which).await })
        .await
        .map_err(ApiError::internal)??;
    // The config files came back too: the daemon takes them up now.
    match super::system::reload(&state).await {
        Ok(changed) => tracing::info!(?changed, "config reloaded after the restore"),
        Err(e) => tracing::warn!("the restored config was not reloaded: {}", e.message),
    }
    Ok(Json(run))
}

/// What the Backups screen changes; absent fields stay as they are.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupSettings {
    /// Daily backups on or off.
    pub daily: Option<bool>,
    /// `HH:MM`, local time.
    pub at: Option<String>,
    pub destination: Option<DestinationKind>,
    pub usb_label: Option<String>,
    pub s3: Option<S3Config>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub include_minio: Option<bool>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct BackupSettingsReport {
    /// The config keys that changed, as the reload reports them.
    pub changed: Vec<String>,
    pub settings: BackupConfig,
}

/// Changes the backup settings: written to the config drop-in
/// `72-backups.yaml` and applied at once. Nothing changes when a value is
/// refused.
#[utoipa::path(put, path = "/api/backups/settings", tag = "backups",
    request_body = BackupSettings,
    responses((status = 200, body = BackupSettingsReport),
        (status = 400, description = "`nothing_to_change`", body = ErrorBody),
        (status = 422, description = "`invalid_config`: the reload refused it (the drop-in is restored)", body = ErrorBody),
        (status = 503, description = "`settings_unavailable`: no config file to write", body = ErrorBody)))]
pub async fn settings(
    State(state): State<AppState>,
    ApiJson(s): ApiJson<BackupSettings>,
) -> Result<Json<BackupSettingsReport>, ApiError> {
    if state.config_path.is_none() {
        return Err(super::setup::unwritable());
    }
    let mut keys: Vec<(&[&str], Value)> = Vec::new();
    if let Some(v) = s.daily {
        keys.push((&["backup", "schedule", "enabled"], Value::Bool(v)));
    }
    if let Some(v) = &s.at {
        keys.push((&["backup", "schedule", "at"], Value::String(v.clone())));
    }
    if let Some(v) = &s.destination {
        keys.push((&["backup", "destination"], yaml(v)));
    }
    if let Some(v) = &s.usb_label {
        keys.push((&["backup", "usb_label"], Value::String(v.clone())));
    }
    if let Some(v) = &s.s3 {
        keys.push((&["backup", "s3"], yaml(v)));
    }
    if let Some(v) = s.keep_daily {
        keys.push((&["backup", "keep_daily"], Value::Number(v.into())));
    }
    if let Some(v) = s.keep_weekly {
        keys.push((&["backup", "keep_weekly"], Value::Number(v.into())));
    }
    if let Some(v) = s.include_minio {
        keys.push((&["backup", "include_minio"], Value::Bool(v)));
    }
    if keys.is_empty() {
        return Err(ApiError::bad_request(
            "nothing_to_change",
            "name at least one of daily, at, destination, usb_label, s3, keep_daily, keep_weekly, include_minio",
        ));
    }
    let changed = super::setup::write_drop_in(&state, BACKUPS_DROP_IN, keys).await?;
    tracing::info!(?changed, "backup settings changed from the dashboard");
    Ok(Json(BackupSettingsReport {
        changed,
        settings: state.config().backup.clone(),
    }))
}

/// A value as YAML, for the drop-in.
fn yaml<T: Serialize>(v: &T) -> Value {
    serde_yaml::to_value(v).unwrap_or(Value::Null)
}
