//! The database side of a data backup (`crate::backup`): the snapshot its
//! dump and row counts share, the database's size for the free-space check,
//! and the scratch database a backup is verified in.

use std::collections::BTreeMap;

use sqlx::{PgPool, Postgres, Transaction};

/// Rows per table of `public`, counted in one statement (so in one
/// snapshot), as `table\tcount` lines; also run through `psql` against a
/// scratch restore.
pub const COUNT_ROWS: &str = "SELECT table_name || E'\\t' || \
    (xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM public.%I', table_name), false, true, '')))[1]::text \
    FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1";

/// [`COUNT_ROWS`]'s lines as a map.
pub fn parse_counts(text: &str) -> BTreeMap<String, i64> {
    text.lines()
        .filter_map(|l| {
            let (t, n) = l.split_once('\t')?;
            Some((t.to_string(), n.trim().parse().ok()?))
        })
        .collect()
}

/// A read-only repeatable-read transaction whose snapshot is exported:
/// `pg_dump --snapshot=<id>` sees exactly what [`Snapshot::row_counts`]
/// counted, while the daemon keeps writing. Held until [`Snapshot::close`].
pub struct Snapshot {
    tx: Transaction<'static, Postgres>,
    pub id: String,
}

pub async fn export_snapshot(pool: &PgPool) -> sqlx::Result<Snapshot> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let id: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *tx)
        .await?;
    Ok(Snapshot { tx, id })
}

impl Snapshot {
    pub async fn row_counts(&mut self) -> sqlx::Result<BTreeMap<String, i64>> {
        let lines: Vec<String> = sqlx::query_scalar(COUNT_ROWS)
            .fetch_all(&mut *self.tx)
            .await?;
        Ok(parse_counts(&lines.join("\n")))
    }

    pub async fn close(self) {
        self.tx.rollback().await.ok();
    }
}

/// `pg_database_size` of the pool's database.
pub async fn database_size(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT pg_database_size(current_database())")
        .fetch_one(pool)
        .await
}

/// Creates an empty database `name` (a scratch database; `name` is the
/// caller's own `[a-z0-9_]` identifier).
pub async fn create_database(pool: &PgPool, name: &str) -> sqlx::Result<()> {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(pool)
        .await
        .map(drop)
}

/// Drops database `name`, whoever is connected to it.
pub async fn drop_database(pool: &PgPool, name: &str) -> sqlx::Result<()> {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(pool)
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_from_psql_lines() {
        let c = parse_counts("audit_log\t3\nmetrics\t120\n\n");
        assert_eq!(
            c,
            BTreeMap::from([("audit_log".into(), 3), ("metrics".into(), 120)])
        );
    }
}
