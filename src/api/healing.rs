//! The self-healing audit trail and the loop's health: `GET
//! /api/self-healing/events` (from Postgres) and `/status`, and the reboot
//! route. Reads only; the worker in `healing::worker` writes, and reboots
//! are asked of it through its handle.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiQuery, PageQuery, Paging};
use crate::db::healing::{EventFilter, count_events, list_events};
use crate::docker::ServiceState;
use crate::healing::record::{EventKind, HealingRecord, Severity, last_logged};
use crate::healing::worker::heartbeat_grade;
use crate::state::AppState;
use crate::tasks::WorkerName;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `INFO`, `WARNING` or `CRITICAL` (case-insensitive).
    pub severity: Option<String>,
    /// e.g. `service_restart`, `service_failed`.
    pub event_type: Option<String>,
    /// Only events at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventList {
    /// Newest first.
    pub events: Vec<HealingRecord>,
    /// Events matching the filters, ignoring limit and offset.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    pub timestamp: DateTime<Utc>,
}

/// Every self-healing decision and action, newest first, with filters.
#[utoipa::path(get, path = "/api/self-healing/events", tag = "self-healing", params(EventsQuery, PageQuery),
    responses(
        (status = 200, body = EventList),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "The database is down (events are buffered meanwhile)", body = super::error::ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Paging { limit, offset }: Paging,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventList>, ApiError> {
    let severity = match q.severity {
        None => None,
        Some(s) => Some(Severity::parse(&s.to_ascii_uppercase()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_severity",
                "severity must be INFO, WARNING or CRITICAL",
            )
        })?),
    };
    need_db(&state)?;
    let filter = EventFilter {
        limit,
        offset,
        severity,
        event_type: q.event_type.as_deref().map(EventKind::parse),
        since: q.since,
    };
    let pool = state.db.pool();
    let (events, total) =
        tokio::try_join!(list_events(pool, &filter), count_events(pool, &filter))?;
    Ok(Json(EventList {
        events,
        total,
        limit,
        offset,
        timestamp: Utc::now(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealingStatus {
    /// `healing.enabled`: off, the loop still runs but decides nothing.
    pub enabled: bool,
    /// `healthy` (< 20 s), `degraded` (20–60 s), `unhealthy` (> 60 s) or
    /// `not_running` (no healing worker in this daemon).
    pub loop_status: &'static str,
    /// Age of the loop's heartbeat, in milliseconds.
    pub heartbeat_age_ms: Option<u64>,
    /// Services marked `failed` (no more restarts until started through the API).
    pub failed_services: Vec<String>,
    /// The newest event (from the database, else from `self_healing.log`).
    pub last_event: Option<HealingRecord>,
    pub timestamp: DateTime<Utc>,
}

/// Whether the healing loop is alive, what it gave up on, what it did last.
#[utoipa::path(get, path = "/api/self-healing/status", tag = "self-healing",
    responses((status = 200, body = HealingStatus)))]
pub async fn status(State(state): State<AppState>) -> Json<HealingStatus> {
    let cfg = state.config();
    let worker = state
        .workers
        .statuses()
        .into_iter()
        .find(|w| w.name == WorkerName::SelfHealing.as_str());
    let heartbeat_age_ms = worker.as_ref().map(|w| w.heartbeat_age_ms);
    let loop_status = heartbeat_age_ms.map_or("not_running", |ms| {
        heartbeat_grade(std::time::Duration::from_millis(ms))
    });
    let failed_services = state
        .services
        .services()
        .iter()
        .filter(|s| s.state == ServiceState::Failed)
        .map(|s| s.name.clone())
        .collect();
    let from_db = if state.db.status().up {
        let newest = EventFilter {
            limit: 1,
            ..Default::default()
        };
        list_events(state.db.pool(), &newest)
            .await
            .ok()
            .and_then(|mut v| v.pop())
    } else {
        None
    };
    let last_event = match from_db {
        Some(e) => Some(e),
        None => {
            let dir = cfg.paths.log_dir.clone();
            tokio::task::spawn_blocking(move || last_logged(&dir))
                .await
                .ok()
                .flatten()
        }
    };
    Json(HealingStatus {
        enabled: cfg.healing.enabled,
        loop_status,
        heartbeat_age_ms,
        failed_services,
        last_event,
        timestamp: Utc::now(),
    })
}

fn need_db(state: &AppState) -> Result<(), ApiError> {
    if state.db.status().up {
        Ok(())
    } else {
        Err(ApiError::database_down(
            "self-healing events are buffered until it is",
        ))
    }
}

/// One page of a slice of the trail.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TrailPage {
    /// Newest first.
    pub entries: Vec<HealingRecord>,
    /// All entries of this list, ignoring limit and offset.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    pub timestamp: DateTime<Utc>,
}

async fn trail_page(
    state: &AppState,
    list: crate::db::healing::TrailList,
    Paging { limit, offset }: Paging,
) -> Result<Json<TrailPage>, ApiError> {
    need_db(state)?;
    let (entries, total) =
        crate::db::healing::list_trail(state.db.pool(), list, limit, offset).await?;
    Ok(Json(TrailPage {
        entries,
        total,
        limit,
        offset,
        timestamp: Utc::now(),
    }))
}

/// Every action self-healing carried out (restarts, unloads, cleanups, …)
/// with its result (`ok`, `failed: …`, `skipped: …`) and duration.
#[utoipa::path(get, path = "/api/self-healing/recovery-actions", tag = "self-healing", params(PageQuery),
    responses(
        (status = 200, body = TrailPage),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "The database is down", body = super::error::ErrorBody)))]
pub async fn recovery_actions(
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<TrailPage>, ApiError> {
    trail_page(
        &state,
        crate::db::healing::TrailList::RecoveryActions,
        paging,
    )
    .await
}

/// Services going down, escalated to category C, or marked failed.
#[utoipa::path(get, path = "/api/self-healing/service-failures", tag = "self-healing", params(PageQuery),
    responses(
        (status = 200, body = TrailPage),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "The database is down", body = super::error::ErrorBody)))]
pub async fn service_failures(
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<TrailPage>, ApiError> {
    trail_page(
        &state,
        crate::db::healing::TrailList::ServiceFailures,
        paging,
    )
    .await
}

/// Category D: reboots called for, refused (with the failed check),
/// requested, and the validation after the next start.
#[utoipa::path(get, path = "/api/self-healing/reboot-history", tag = "self-healing", params(PageQuery),
    responses(
        (status = 200, body = TrailPage),
        (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "The database is down", body = super::error::ErrorBody)))]
pub async fn reboot_history(
    State(state): State<AppState>,
    paging: Paging,
) -> Result<Json<TrailPage>, ApiError> {
    trail_page(&state, crate::db::healing::TrailList::Reboots, paging).await
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ServiceUptime {
    pub service: String,
    /// Percent of the window the service was not down (from `service_down`
    /// to `service_recovered` in the trail), two decimals.
    pub uptime_percent_7d: f64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActionRate {
    pub action: String,
    /// Carried out: succeeded + failed (skipped ones are not attempts).
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    /// Not carried out (e.g. no command configured).
    pub skipped: i64,
    /// succeeded / total, 0..1; null when nothing was attempted.
    pub success_rate: Option<f64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HealingMetrics {
    /// Every service of the catalog and every service named in the trail.
    pub services: Vec<ServiceUptime>,
    pub actions: Vec<ActionRate>,
    /// Start of the window: 7 days ago, or the first daemon start if later.
    pub window_start: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// Per-service uptime over the last 7 days and each action's success rate,
/// computed from the recorded trail.
#[utoipa::path(get, path = "/api/self-healing/metrics", tag = "self-healing",
    responses(
        (status = 200, body = HealingMetrics),
        (status = 503, description = "The database is down", body = super::error::ErrorBody)))]
pub async fn metrics(State(state): State<AppState>) -> Result<Json<HealingMetrics>, ApiError> {
    use crate::db::healing::{action_counts, first_start, service_transitions, uptime_percent};
    need_db(&state)?;
    let pool = state.db.pool();
    let now = Utc::now();
    let week_ago = now - chrono::Duration::days(7);
    let first = first_start(pool).await?;
    let from = first.map_or(week_ago, |f| f.max(week_ago)).min(now);
    let (transitions, counts) =
        tokio::try_join!(service_transitions(pool, from), action_counts(pool, from))?;
    let mut names: Vec<String> = state
        .services
        .services()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    for t in &transitions {
        if !names.contains(&t.service) {
            names.push(t.service.clone());
        }
    }
    let services = names
        .into_iter()
        .map(|service| ServiceUptime {
            uptime_percent_7d: uptime_percent(&transitions, &service, from, now),
            service,
        })
        .collect();
    let actions = counts
        .into_iter()
        .map(|(action, succeeded, failed, skipped)| {
            let total = succeeded + failed;
            ActionRate {
                action,
                total,
                succeeded,
                failed,
                skipped,
                success_rate: (total > 0).then(|| succeeded as f64 / total as f64),
            }
        })
        .collect();
    Ok(Json(HealingMetrics {
        services,
        actions,
        window_start: from,
        timestamp: now,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RebootAccepted {
    /// logind accepted the reboot; the box goes down shortly.
    pub accepted: bool,
    /// The `reboot_events` id (the counter of the hourly limit).
    pub id: Option<i64>,
    pub requested_at: DateTime<Utc>,
    pub timestamp: DateTime<Utc>,
}

/// Reboots the box through logind after the five safety checks of SPEC §7
/// (off unless `healing.reboot.enabled`). Active workflows get up to
/// `healing.reboot.drain_timeout` first. 409 names the failed check in
/// `error.code`: `reboot_disabled`, `too_many_reboots`, `update_in_progress`,
/// `database_unavailable`, `telemetry_not_flushed`, `disk_state_not_recorded`.
#[utoipa::path(post, path = "/api/system/reboot", tag = "system",
    responses(
        (status = 202, body = RebootAccepted),
        (status = 409, description = "A safety check failed (its name is the error code)", body = super::error::ErrorBody),
        (status = 503, description = "logind did not accept the reboot (`logind_failed`), or the self-healing worker is not running (`healing_not_running`)", body = super::error::ErrorBody)))]
pub async fn reboot(
    State(state): State<AppState>,
) -> Result<(axum::http::StatusCode, Json<RebootAccepted>), ApiError> {
    // The worker checks, reboots and records the outcome in the trail.
    let outcome = state
        .healing
        .request_reboot("requested through the API")
        .await;
    match outcome {
        Ok(saved) => Ok((
            axum::http::StatusCode::ACCEPTED,
            Json(RebootAccepted {
                accepted: true,
                id: saved.id,
                requested_at: saved.requested_at,
                timestamp: Utc::now(),
            }),
        )),
        Err(r) if r.check == "logind_failed" || r.check == crate::healing::handle::NOT_RUNNING => {
            Err(ApiError::unavailable(r.check, r.message))
        }
        Err(r) => Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            r.check,
            r.message,
        )),
    }
}
