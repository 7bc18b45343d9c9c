//! Rows that age out: one batched delete for every table kept for a fixed
//! time, and the hourly worker that applies it. Batches keep each statement
//! short, so a first purge of months of rows never holds locks for long.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Db;
use crate::tasks::{WorkerKind, WorkerName, Workers};

/// Rows per DELETE in the retention workers.
pub const BATCH: i64 = 10_000;
/// How often the retention workers look.
const EVERY: Duration = Duration::from_secs(3600);

/// A table whose rows age out: `key` identifies a row and `time` is what
/// its age is measured by. Only constants of `db/` name these (they go into
/// the SQL as written).
#[derive(Clone, Copy, Debug)]
pub struct Aging {
    pub table: &'static str,
    pub key: &'static str,
    pub time: &'static str,
    /// What the log calls the rows.
    pub noun: &'static str,
}

/// Deletes the rows of `rows.table` whose time is before `before`, oldest
/// first, `batch` per statement, until a batch comes back short. `beat`
/// runs after each batch, so a long purge does not look like a hung worker.
pub async fn delete_older_than(
    pool: &PgPool,
    rows: Aging,
    before: DateTime<Utc>,
    batch: i64,
    beat: impl Fn(),
) -> sqlx::Result<u64> {
    let Aging {
        table, key, time, ..
    } = rows;
    let sql = format!(
        "DELETE FROM {table} WHERE {key} IN
           (SELECT {key} FROM {table} WHERE {time} < $1 ORDER BY {time} LIMIT $2)"
    );
    let mut total = 0;
    loop {
        // Safe: the names are `db/` constants, the values bound.
        let n = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()))
            .bind(before)
            .bind(batch)
            .execute(pool)
            .await?
            .rows_affected();
        total += n;
        beat();
        if (n as i64) < batch {
            return Ok(total);
        }
    }
}

/// Spawns the auxiliary worker `name`: hourly, while the database is up,
/// deletes the `rows` older than `keep`. A failure is logged and retried
/// at the next round.
pub fn spawn(workers: &Workers, name: WorkerName, db: Db, rows: Aging, keep: Duration) {
    workers.every(name, WorkerKind::Auxiliary, EVERY, move |ctx| {
        let db = db.clone();
        async move {
            // `up` is only ever set once the migrations have run.
            if !db.status().up {
                return Ok(());
            }
            let before = Utc::now() - chrono::Duration::from_std(keep)?;
            match delete_older_than(db.pool(), rows, before, BATCH, || ctx.beat()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "old {} deleted", rows.noun),
                Err(e) => {
                    tracing::warn!(error = %e, "{} retention failed; retrying next hour", rows.noun)
                }
            }
            Ok(())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNS: Aging = crate::db::workflows::AGING;

    /// 2.5 batches of old rows go (three statements, the last one short)
    /// with a beat after each; the newer rows stay.
    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn old_rows_go_in_batches_and_newer_rows_stay(pool: PgPool) {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::days(90);
        // 25 rows before the cutoff, 7 after it (one a second after).
        let mut at: Vec<DateTime<Utc>> = (1..=25)
            .map(|i| cutoff - chrono::Duration::hours(i))
            .collect();
        at.extend((0..6).map(|i| now - chrono::Duration::hours(i)));
        at.push(cutoff + chrono::Duration::seconds(1));
        for (i, t) in at.iter().enumerate() {
            sqlx::query(
                "INSERT INTO workflow_executions (workflow_id, workflow_name, status, started_at)
                 VALUES ($1, 'retention test', 'success', $2)",
            )
            .bind(format!("wf-{i}"))
            .bind(t)
            .execute(&pool)
            .await
            .unwrap();
        }
        let beats = std::sync::atomic::AtomicU32::new(0);
        let beat = || {
            beats.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        };
        let deleted = delete_older_than(&pool, RUNS, cutoff, 10, beat)
            .await
            .unwrap();
        assert_eq!(deleted, 25);
        assert_eq!(beats.into_inner(), 3);
        let left: Vec<DateTime<Utc>> =
            sqlx::query_scalar("SELECT started_at FROM workflow_executions ORDER BY started_at")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(left.len(), 7);
        assert!(left.iter().all(|t| *t >= cutoff), "{left:?}");

        // Nothing left to delete: one short statement.
        let again = delete_older_than(&pool, RUNS, cutoff, 10, || {})
            .await
            .unwrap();
        assert_eq!(again, 0);
    }
}
