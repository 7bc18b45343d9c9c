//! SQL for the notification outbox (`notification_outbox`, 0009).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::notify::worker::{Delivery, OutboxEntry};
use crate::notify::{Alert, Severity};

type Row = (
    String,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    String,
    sqlx::types::Json<Vec<Delivery>>,
);

fn from_row(r: Row) -> OutboxEntry {
    let (uid, created_at, severity, kind, cause, title, body, deliveries) = r;
    OutboxEntry {
        uid,
        created_at,
        alert: Alert {
            severity: Severity::parse(&severity).unwrap_or(Severity::Warning),
            kind,
            cause,
            title,
            body,
        },
        deliveries: deliveries.0,
    }
}

/// Writes the entries (new, or their deliveries' latest state) in one
/// transaction.
pub async fn upsert(pool: &PgPool, entries: &[&OutboxEntry]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for e in entries {
        sqlx::query(
            "INSERT INTO notification_outbox
               (uid, created_at, severity, kind, cause, title, body, deliveries, pending, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now())
             ON CONFLICT (uid) DO UPDATE
               SET deliveries = EXCLUDED.deliveries, pending = EXCLUDED.pending, updated_at = now()",
        )
        .bind(&e.uid)
        .bind(e.created_at)
        .bind(e.alert.severity.as_str())
        .bind(&e.alert.kind)
        .bind(&e.alert.cause)
        .bind(&e.alert.title)
        .bind(&e.alert.body)
        .bind(sqlx::types::Json(&e.deliveries))
        .bind(e.is_pending())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Entries with a channel still to try (at a restart: where to go on).
pub async fn pending(pool: &PgPool) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT uid, created_at, severity, kind, cause, title, body, deliveries
           FROM notification_outbox WHERE pending ORDER BY created_at LIMIT 1000",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Entries made since `since`, newest first (what the de-dup remembers
/// across a restart).
pub async fn since(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT uid, created_at, severity, kind, cause, title, body, deliveries
           FROM notification_outbox WHERE created_at >= $1 ORDER BY created_at DESC LIMIT 1000",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// The newest `limit` entries, newest first.
pub async fn recent(pool: &PgPool, limit: i64) -> Result<Vec<OutboxEntry>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT uid, created_at, severity, kind, cause, title, body, deliveries
           FROM notification_outbox ORDER BY created_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Deletes finished entries older than `before`; how many went.
pub async fn prune(pool: &PgPool, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let r = sqlx::query("DELETE FROM notification_outbox WHERE NOT pending AND created_at < $1")
        .bind(before)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
