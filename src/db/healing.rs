//! SQL for the self-healing audit trail: batch insert (in the order the
//! worker recorded), the filtered listing of `GET /api/self-healing/events`,
//! and the newest event.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::healing::worker::HealingRecord;

/// Inserts `records` in one statement, in order (ids ascend with the slice).
pub async fn insert_events(pool: &PgPool, records: &[HealingRecord]) -> sqlx::Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&HealingRecord) -> String| records.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&HealingRecord) -> Option<String>| records.iter().map(f).collect::<Vec<_>>();
    let at: Vec<DateTime<Utc>> = records.iter().map(|r| r.at).collect();
    let duration: Vec<Option<i64>> = records.iter().map(|r| r.duration_ms).collect();
    let done = sqlx::query(
        "INSERT INTO self_healing_events
             (at, event_type, severity, category, service, description, action, result, duration_ms)
         SELECT at, event_type, severity, category, service, description, action, result,
                duration_ms
           FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::text[], $8::text[], $9::bigint[])
             WITH ORDINALITY AS t(at, event_type, severity, category, service, description,
                                  action, result, duration_ms, n)
         ORDER BY n",
    )
    .bind(at)
    .bind(col(|r| r.event_type.clone()))
    .bind(col(|r| r.severity.clone()))
    .bind(opt(|r| r.category.clone()))
    .bind(opt(|r| r.service.clone()))
    .bind(col(|r| r.description.clone()))
    .bind(opt(|r| r.action.clone()))
    .bind(col(|r| r.result.clone()))
    .bind(duration)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The filters of the events listing; `None` means "any".
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub limit: i64,
    pub offset: i64,
    pub severity: Option<String>,
    pub event_type: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// Newest first.
pub async fn list_events(pool: &PgPool, f: &EventFilter) -> sqlx::Result<Vec<HealingRecord>> {
    sqlx::query_as::<_, HealingRecord>(
        "SELECT id, at, event_type, severity, category, service, description, action, result,
                duration_ms
           FROM self_healing_events
          WHERE ($1::text IS NULL OR severity = $1)
            AND ($2::text IS NULL OR event_type = $2)
            AND ($3::timestamptz IS NULL OR at >= $3)
          ORDER BY at DESC, id DESC
          LIMIT $4 OFFSET $5",
    )
    .bind(&f.severity)
    .bind(&f.event_type)
    .bind(f.since)
    .bind(f.limit)
    .bind(f.offset)
    .fetch_all(pool)
    .await
}

/// How many events match the filter (ignoring limit and offset).
pub async fn count_events(pool: &PgPool, f: &EventFilter) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM self_healing_events
          WHERE ($1::text IS NULL OR severity = $1)
            AND ($2::text IS NULL OR event_type = $2)
            AND ($3::timestamptz IS NULL OR at >= $3)",
    )
    .bind(&f.severity)
    .bind(&f.event_type)
    .bind(f.since)
    .fetch_one(pool)
    .await
}

/// Every event in the order it was written (tests; oldest first).
pub async fn all_events(pool: &PgPool) -> sqlx::Result<Vec<HealingRecord>> {
    sqlx::query_as::<_, HealingRecord>(
        "SELECT id, at, event_type, severity, category, service, description, action, result,
                duration_ms
           FROM self_healing_events ORDER BY id",
    )
    .fetch_all(pool)
    .await
}

/// `VACUUM ANALYZE` of the whole database. It cannot run in a transaction,
/// so it goes over the simple-query protocol on one connection, with the
/// pool's statement timeout lifted for it (and restored after).
pub async fn vacuum_analyze(pool: &PgPool, timeout: std::time::Duration) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    let ms = timeout.as_millis().max(1);
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET statement_timeout = {ms}")))
        .execute(&mut *conn)
        .await?;
    let r = sqlx::raw_sql("VACUUM ANALYZE").execute(&mut *conn).await;
    let reset = sqlx::raw_sql("RESET statement_timeout")
        .execute(&mut *conn)
        .await;
    if reset.is_err() {
        // Never hand a connection with a changed timeout back to the pool.
        conn.detach();
    }
    r.map(|_| ())
}
