//! SQL for the workflow runs n8n reports: upsert of one execution, the
//! public activity summary, the paged history and per-workflow statistics.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Db;
use super::retention::Aging;
use crate::tasks::{WorkerName, Workers};

/// Runs are kept this long (SPEC §3: events 90 days), by `started_at`.
pub const RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// One execution as stored and served.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkflowExecution {
    pub id: i64,
    pub workflow_id: String,
    /// n8n's execution id; null when the report carried none.
    pub execution_id: Option<String>,
    pub workflow_name: String,
    /// `running`, `success` or `error`.
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
    /// When the first report of this execution arrived.
    pub received_at: DateTime<Utc>,
    /// When the last report of it arrived.
    pub updated_at: DateTime<Utc>,
}

/// A validated report (the API checks lengths, times and status).
#[derive(Clone, Debug)]
pub struct NewWorkflowExecution {
    pub workflow_id: String,
    pub execution_id: Option<String>,
    pub workflow_name: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub error: Option<String>,
}

/// What [`record`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Recorded {
    Created(WorkflowExecution),
    Updated(WorkflowExecution),
    /// A late `running` report for an execution already finished: ignored.
    Unchanged(WorkflowExecution),
}

/// The columns of [`WorkflowExecution`], for `concat!` (sqlx wants static SQL).
macro_rules! columns {
    () => {
        "id, workflow_id, execution_id, workflow_name, status, started_at, finished_at, \
         duration_ms, error, received_at, updated_at"
    };
}

/// Inserts the execution, or updates the one with the same workflow and
/// execution id. A finished execution is never turned back into `running`.
pub async fn record(pool: &PgPool, e: &NewWorkflowExecution) -> sqlx::Result<Recorded> {
    let row: Option<(bool, WorkflowExecution)> = sqlx::query_as::<_, ExecutionInserted>(concat!(
        "INSERT INTO workflow_executions
             (workflow_id, execution_id, workflow_name, status, started_at, finished_at,
              duration_ms, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (workflow_id, execution_id) DO UPDATE SET
             workflow_name = EXCLUDED.workflow_name,
             status = EXCLUDED.status,
             started_at = LEAST(workflow_executions.started_at, EXCLUDED.started_at),
             finished_at = COALESCE(EXCLUDED.finished_at, workflow_executions.finished_at),
             duration_ms = COALESCE(EXCLUDED.duration_ms, workflow_executions.duration_ms),
             error = COALESCE(EXCLUDED.error, workflow_executions.error),
             updated_at = now()
           WHERE NOT (workflow_executions.status <> 'running' AND EXCLUDED.status = 'running')
         RETURNING (xmax = 0) AS inserted, ",
        columns!()
    ))
    .bind(&e.workflow_id)
    .bind(&e.execution_id)
    .bind(&e.workflow_name)
    .bind(&e.status)
    .bind(e.started_at)
    .bind(e.finished_at)
    .bind(e.duration_ms)
    .bind(&e.error)
    .fetch_optional(pool)
    .await?
    .map(|r| (r.inserted, r.execution));
    Ok(match row {
        Some((true, x)) => Recorded::Created(x),
        Some((false, x)) => Recorded::Updated(x),
        None => {
            let x = sqlx::query_as::<_, WorkflowExecution>(concat!(
                "SELECT ",
                columns!(),
                " FROM workflow_executions WHERE workflow_id = $1 AND execution_id = $2"
            ))
            .bind(&e.workflow_id)
            .bind(&e.execution_id)
            .fetch_one(pool)
            .await?;
            Recorded::Unchanged(x)
        }
    })
}

#[derive(sqlx::FromRow)]
struct ExecutionInserted {
    inserted: bool,
    #[sqlx(flatten)]
    execution: WorkflowExecution,
}

/// WorkflowTotals of the last 24 hours (by `started_at`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkflowTotals {
    pub total: i64,
    pub success: i64,
    pub error: i64,
    pub running: i64,
}

pub async fn last_24h(pool: &PgPool) -> sqlx::Result<WorkflowTotals> {
    sqlx::query_as::<_, WorkflowTotals>(
        "SELECT count(*) AS total,
                count(*) FILTER (WHERE status = 'success') AS success,
                count(*) FILTER (WHERE status = 'error') AS error,
                count(*) FILTER (WHERE status = 'running') AS running
           FROM workflow_executions
          WHERE started_at >= now() - interval '24 hours'",
    )
    .fetch_one(pool)
    .await
}

/// Newest first (by start), optionally of one workflow and one status.
pub async fn history(
    pool: &PgPool,
    workflow_id: Option<&str>,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<WorkflowExecution>, i64)> {
    let rows = sqlx::query_as::<_, WorkflowExecution>(concat!(
        "SELECT ",
        columns!(),
        " FROM workflow_executions
          WHERE ($1::text IS NULL OR workflow_id = $1)
            AND ($2::text IS NULL OR status = $2)
          ORDER BY started_at DESC, id DESC
          LIMIT $3 OFFSET $4"
    ))
    .bind(workflow_id)
    .bind(status)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(
        "SELECT count(*) FROM workflow_executions
          WHERE ($1::text IS NULL OR workflow_id = $1)
            AND ($2::text IS NULL OR status = $2)",
    )
    .bind(workflow_id)
    .bind(status)
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// One workflow's numbers over every stored execution.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct WorkflowStats {
    pub workflow_id: String,
    /// The name of its newest execution.
    pub workflow_name: String,
    pub runs: i64,
    pub success: i64,
    pub error: i64,
    pub running: i64,
    /// success / (success + error) in percent; null while none finished.
    pub success_rate: Option<f64>,
    /// Mean `duration_ms` of the executions that report one.
    pub avg_duration_ms: Option<f64>,
    pub last_run: DateTime<Utc>,
    pub last_status: String,
}

pub async fn stats(pool: &PgPool) -> sqlx::Result<Vec<WorkflowStats>> {
    sqlx::query_as::<_, WorkflowStats>(
        "SELECT s.workflow_id, l.workflow_name, s.runs, s.success, s.error, s.running,
                CASE WHEN s.success + s.error > 0
                     THEN 100.0 * s.success / (s.success + s.error) END::float8 AS success_rate,
                s.avg_duration_ms, l.started_at AS last_run, l.status AS last_status
           FROM (SELECT workflow_id,
                        count(*) AS runs,
                        count(*) FILTER (WHERE status = 'success') AS success,
                        count(*) FILTER (WHERE status = 'error') AS error,
                        count(*) FILTER (WHERE status = 'running') AS running,
                        avg(duration_ms)::float8 AS avg_duration_ms
                   FROM workflow_executions GROUP BY workflow_id) s
           JOIN LATERAL (SELECT workflow_name, started_at, status FROM workflow_executions w
                          WHERE w.workflow_id = s.workflow_id
                          ORDER BY started_at DESC, id DESC LIMIT 1) l ON true
          ORDER BY l.started_at DESC, s.workflow_id",
    )
    .fetch_all(pool)
    .await
}

/// Runs age by when they started.
pub const AGING: Aging = Aging {
    table: "workflow_executions",
    key: "id",
    time: "started_at",
    noun: "workflow runs",
};

/// Spawns the `workflows-retention` worker: hourly, deletes runs older
/// than [`RETENTION`] while the database is up.
pub fn spawn_retention(workers: &Workers, db: Db) {
    super::retention::spawn(
        workers,
        WorkerName::WorkflowsRetention,
        db,
        AGING,
        RETENTION,
    );
}
