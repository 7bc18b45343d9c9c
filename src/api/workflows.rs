//! Workflow runs reported by n8n: `POST /api/workflows/execution` (admin,
//! 100/min per client in `api::limits`), the public activity summary, and
//! the admin history and per-workflow statistics. Stored in Postgres
//! (`db::workflows`); while the database is down a report is answered 503
//! and nothing is kept, so the caller knows to retry.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiJson, ApiQuery, PageQuery, Paging};
use super::guard::AdminSession;
use crate::db::workflows::{
    self, NewWorkflowExecution, Recorded, WorkflowExecution, WorkflowStats, WorkflowTotals,
};
use crate::state::AppState;

const MAX_ID: usize = 200;
const MAX_NAME: usize = 200;
const MAX_ERROR: usize = 10_000;
/// At most this many executions in `recent` of the activity summary.
const RECENT: i64 = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowRunStatus {
    Running,
    Success,
    Error,
}

impl WorkflowRunStatus {
    fn as_str(self) -> &'static str {
        match self {
            WorkflowRunStatus::Running => "running",
            WorkflowRunStatus::Success => "success",
            WorkflowRunStatus::Error => "error",
        }
    }
}

/// One report of a workflow run.
#[derive(Deserialize, utoipa::ToSchema)]
pub struct WorkflowReport {
    /// n8n's workflow id (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    pub workflow_id: String,
    /// n8n's execution id: a later report with the same workflow and
    /// execution id updates the run (running → success). Without it every
    /// report is a run of its own.
    #[schema(min_length = 1, max_length = 200)]
    pub execution_id: Option<String>,
    /// 1 to 200 characters.
    #[schema(min_length = 1, max_length = 200)]
    pub workflow_name: String,
    pub status: WorkflowRunStatus,
    /// RFC 3339; the time of the report when absent.
    pub started_at: Option<DateTime<Utc>>,
    /// RFC 3339, not before `started_at`; not with `running`.
    pub finished_at: Option<DateTime<Utc>>,
    /// Not negative; computed from the two times when absent.
    #[schema(minimum = 0)]
    pub duration_ms: Option<i64>,
    /// What went wrong (at most 10000 characters).
    #[schema(max_length = 10000)]
    pub error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowRecorded {
    pub execution: WorkflowExecution,
    /// `created`, `updated`, or `unchanged` (a late `running` report for a
    /// run already finished).
    pub result: &'static str,
    pub timestamp: DateTime<Utc>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_execution", message)
}

fn validate(r: WorkflowReport, now: DateTime<Utc>) -> Result<NewWorkflowExecution, ApiError> {
    let len_ok = |s: &str, max: usize| !s.trim().is_empty() && s.chars().count() <= max;
    // Postgres text cannot hold NUL.
    let has_nul = [
        Some(&r.workflow_id),
        r.execution_id.as_ref(),
        Some(&r.workflow_name),
        r.error.as_ref(),
    ]
    .into_iter()
    .flatten()
    .any(|s| s.contains('\0'));
    if has_nul {
        return Err(invalid("text fields must not contain NUL characters"));
    }
    if !len_ok(&r.workflow_id, MAX_ID) {
        return Err(invalid(format!(
            "workflow_id must be 1 to {MAX_ID} characters"
        )));
    }
    if let Some(e) = &r.execution_id
        && !len_ok(e, MAX_ID)
    {
        return Err(invalid(format!(
            "execution_id must be 1 to {MAX_ID} characters"
        )));
    }
    if !len_ok(&r.workflow_name, MAX_NAME) {
        return Err(invalid(format!(
            "workflow_name must be 1 to {MAX_NAME} characters"
        )));
    }
    if r.error
        .as_ref()
        .is_some_and(|e| e.chars().count() > MAX_ERROR)
    {
        return Err(invalid(format!(
            "error must be at most {MAX_ERROR} characters"
        )));
    }
    if r.duration_ms.is_some_and(|d| d < 0) {
        return Err(invalid("duration_ms must not be negative"));
    }
    let started_at = r.started_at.unwrap_or(now);
    if let Some(f) = r.finished_at {
        if r.status == WorkflowRunStatus::Running {
            return Err(invalid("a running execution has no finished_at"));
        }
        if f < started_at {
            return Err(invalid("finished_at is before started_at"));
        }
    }
    let duration_ms = r
        .duration_ms
        .or_else(|| r.finished_at.map(|f| (f - started_at).num_milliseconds()));
    Ok(NewWorkflowExecution {
        workflow_id: r.workflow_id,
        execution_id: r.execution_id,
        workflow_name: r.workflow_name,
        status: r.status.as_str().to_string(),
        started_at,
        finished_at: r.finished_at,
        duration_ms,
        error: r.error,
    })
}

fn db_down() -> ApiError {
    ApiError::database_down("nothing was stored, retry later")
}

/// n8n reports a workflow run (or an update of one).
#[utoipa::path(post, path = "/api/workflows/execution", tag = "workflows",
    request_body = WorkflowReport,
    responses(
        (status = 201, description = "A new run was stored", body = WorkflowRecorded),
        (status = 200, description = "An earlier report of the same run was updated (or left as it was)", body = WorkflowRecorded),
        (status = 400, body = super::error::ErrorBody),
        (status = 413, body = super::error::ErrorBody),
        (status = 415, body = super::error::ErrorBody),
        (status = 422, description = "Invalid field (status, lengths, times)", body = super::error::ErrorBody),
        (status = 429, body = super::error::ErrorBody),
        (status = 503, description = "Database down: nothing stored", body = super::error::ErrorBody)))]
pub async fn execution(
    State(state): State<AppState>,
    ApiJson(report): ApiJson<WorkflowReport>,
) -> Result<(StatusCode, Json<WorkflowRecorded>), ApiError> {
    let now = Utc::now();
    let new = validate(report, now)?;
    if !state.db.status().up {
        return Err(db_down());
    }
    let recorded = workflows::record(state.db.pool(), &new).await?;
    let (status, result, execution) = match recorded {
        Recorded::Created(x) => (StatusCode::CREATED, "created", x),
        Recorded::Updated(x) => (StatusCode::OK, "updated", x),
        Recorded::Unchanged(x) => (StatusCode::OK, "unchanged", x),
    };
    Ok((
        status,
        Json(WorkflowRecorded {
            execution,
            result,
            timestamp: Utc::now(),
        }),
    ))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowActivity {
    /// Runs started in the last 24 hours, by status.
    pub last_24h: WorkflowTotals,
    /// Runs still `running` (started in the last 24 hours).
    pub active: i64,
    /// The newest runs (at most 10), newest first.
    pub recent: Vec<WorkflowExecution>,
    pub timestamp: DateTime<Utc>,
}

/// What the workflows did lately (public status display). Without a login
/// a run says only whether it failed, not n8n's error text.
#[utoipa::path(get, path = "/api/workflows/activity", tag = "workflows",
    responses((status = 200, body = WorkflowActivity),
        (status = 503, description = "Database down", body = super::error::ErrorBody)))]
pub async fn activity(
    State(state): State<AppState>,
    admin: Option<AdminSession>,
) -> Result<Json<WorkflowActivity>, ApiError> {
    if !state.db.status().up {
        return Err(db_down());
    }
    let pool = state.db.pool();
    let (last_24h, (recent, _)) = tokio::try_join!(
        workflows::last_24h(pool),
        workflows::history(pool, None, None, RECENT, 0)
    )?;
    let mut recent = recent;
    if admin.is_none() {
        for run in &mut recent {
            run.error = None;
            run.execution_id = None;
        }
    }
    Ok(Json(WorkflowActivity {
        active: last_24h.running,
        last_24h,
        recent,
        timestamp: Utc::now(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WorkflowHistoryQuery {
    /// Only this workflow.
    pub workflow_id: Option<String>,
    /// Only `running`, `success` or `error`.
    pub status: Option<WorkflowRunStatus>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowHistory {
    /// Newest first (by start).
    pub executions: Vec<WorkflowExecution>,
    /// Runs matching the filters, ignoring limit and offset.
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
    pub timestamp: DateTime<Utc>,
}

/// Every stored run, newest first, paged (`limit` 50 by default).
#[utoipa::path(get, path = "/api/workflows/history", tag = "workflows", params(WorkflowHistoryQuery, PageQuery),
    responses((status = 200, body = WorkflowHistory), (status = 400, body = super::error::ErrorBody),
        (status = 503, description = "Database down", body = super::error::ErrorBody)))]
pub async fn history(
    State(state): State<AppState>,
    Paging { limit, offset }: Paging<50>,
    ApiQuery(q): ApiQuery<WorkflowHistoryQuery>,
) -> Result<Json<WorkflowHistory>, ApiError> {
    if q.workflow_id.as_ref().is_some_and(|w| w.contains('\0')) {
        return Err(ApiError::bad_request(
            "invalid_workflow_id",
            "workflow_id must not contain NUL characters",
        ));
    }
    if !state.db.status().up {
        return Err(db_down());
    }
    let (executions, total) = workflows::history(
        state.db.pool(),
        q.workflow_id.as_deref(),
        q.status.map(WorkflowRunStatus::as_str),
        limit,
        offset,
    )
    .await?;
    Ok(Json(WorkflowHistory {
        executions,
        total,
        limit,
        offset,
        timestamp: Utc::now(),
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct WorkflowStatsList {
    /// One entry per workflow, the most recently run first.
    pub workflows: Vec<WorkflowStats>,
    pub timestamp: DateTime<Utc>,
}

/// Per workflow: runs, success rate, mean duration, last run.
#[utoipa::path(get, path = "/api/workflows/stats", tag = "workflows",
    responses((status = 200, body = WorkflowStatsList),
        (status = 503, description = "Database down", body = super::error::ErrorBody)))]
pub async fn stats(State(state): State<AppState>) -> Result<Json<WorkflowStatsList>, ApiError> {
    if !state.db.status().up {
        return Err(db_down());
    }
    let workflows = workflows::stats(state.db.pool()).await?;
    Ok(Json(WorkflowStatsList {
        workflows,
        timestamp: Utc::now(),
    }))
}
