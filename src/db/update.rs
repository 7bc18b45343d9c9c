//! SQL of the updater: the mirror of each run (`update_runs`), its events,
//! and the history listing.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One row of `update_runs`.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct RunRow {
    pub id: String,
    pub version: String,
    pub from_version: String,
    pub source: String,
    pub state: String,
    /// done | rolled_back | failed | rejected; None while running.
    pub result: Option<String>,
    pub step: String,
    pub bundle_sha256: Option<String>,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Inserts or replaces the run's row (after a restore of the backup the row
/// may be gone: it is written again whole).
pub async fn upsert_run(pool: &PgPool, r: &RunRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO update_runs (id, version, from_version, source, state, result, step,
                                  bundle_sha256, started_at, updated_at, finished_at, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         ON CONFLICT (id) DO UPDATE SET
             state = EXCLUDED.state, result = EXCLUDED.result, step = EXCLUDED.step,
             updated_at = EXCLUDED.updated_at, finished_at = EXCLUDED.finished_at,
             error = EXCLUDED.error",
    )
    .bind(&r.id)
    .bind(&r.version)
    .bind(&r.from_version)
    .bind(&r.source)
    .bind(&r.state)
    .bind(&r.result)
    .bind(&r.step)
    .bind(&r.bundle_sha256)
    .bind(r.started_at)
    .bind(r.updated_at)
    .bind(r.finished_at)
    .bind(&r.error)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn insert_event(
    pool: &PgPool,
    run_id: &str,
    at: DateTime<Utc>,
    severity: &str,
    state: &str,
    message: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO update_events (run_id, at, severity, state, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(run_id)
    .bind(at)
    .bind(severity)
    .bind(state)
    .bind(message)
    .execute(pool)
    .await?;
    Ok(())
}

/// Finished runs (and refused bundles), newest first.
pub async fn history(pool: &PgPool, limit: i64, offset: i64) -> sqlx::Result<Vec<RunRow>> {
    sqlx::query_as::<_, RunRow>(
        "SELECT id, version, from_version, source, state, result, step, bundle_sha256,
                started_at, updated_at, finished_at, error
           FROM update_runs
          WHERE result IS NOT NULL
          ORDER BY started_at DESC, id DESC
          LIMIT $1 OFFSET $2",
    )
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await
}

/// (severity, state, message) of a run's events, in order.
pub async fn events(pool: &PgPool, run_id: &str) -> sqlx::Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT severity, state, message FROM update_events WHERE run_id = $1 ORDER BY id",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await
}

/// Runs one migration of an update bundle. Transactional: the whole file in
/// one transaction (all or nothing). Otherwise (e.g. `CREATE INDEX
/// CONCURRENTLY`, which refuses to run in a transaction block) statement by
/// statement, each on its own; the file is split at `;` ending a line, so
/// such a migration must not hold dollar-quoted bodies. No statement
/// timeout applies to either.
pub async fn run_migration(pool: &PgPool, sql: &str, transactional: bool) -> sqlx::Result<()> {
    if transactional {
        let mut tx = pool.begin().await?;
        sqlx::query("SET LOCAL statement_timeout = 0")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        return Ok(());
    }
    let mut conn = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let result = async {
        for stmt in split_statements(sql) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
    .await;
    let reset = sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await;
    if reset.is_err() {
        // Never hand a connection without its timeout back to the pool.
        conn.detach();
    }
    result
}

/// Statements of a non-transactional migration: split where a line ends in
/// `;` (outside `--` comments); blank and comment-only pieces are dropped.
pub fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in sql.lines() {
        cur.push_str(line);
        cur.push('\n');
        let code = line.split("--").next().unwrap_or("").trim_end();
        if code.ends_with(';') {
            out.push(std::mem::take(&mut cur));
        }
    }
    out.push(cur);
    out.into_iter()
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        })
        .collect()
}

/// The newest CRITICAL self-healing event at or after `since`, if any
/// (verification of an update fails on one).
pub async fn critical_healing_event_since(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> sqlx::Result<Option<(String, String)>> {
    sqlx::query_as(
        "SELECT event_type, description FROM self_healing_events
          WHERE severity = 'CRITICAL' AND at >= $1
          ORDER BY at DESC LIMIT 1",
    )
    .bind(since)
    .fetch_optional(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_transactional_migrations_split_at_line_ending_semicolons() {
        let sql = "-- add an index\nCREATE INDEX CONCURRENTLY a ON t (x);\n\nSELECT 1; -- trailing\nUPDATE t\n   SET x = 'a;b';\n-- only a comment\n";
        let parts = split_statements(sql);
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts[0].contains("CONCURRENTLY"));
        assert!(parts[1].contains("SELECT 1"));
        assert!(parts[2].contains("'a;b'"));
    }
}
