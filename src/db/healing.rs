//! SQL for the self-healing audit trail: batch insert (in the order the
//! worker recorded), the filtered listing of `GET /api/self-healing/events`,
//! and the newest event.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::healing::record::{EventKind, HealingRecord, Severity};

/// Inserts `records` in one statement, in order (ids ascend with the slice).
pub async fn insert_events(pool: &PgPool, records: &[HealingRecord]) -> sqlx::Result<u64> {
    if records.is_empty() {
        return Ok(0);
    }
    fn col<'a, T>(records: &'a [HealingRecord], f: fn(&'a HealingRecord) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
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
    .bind(col(records, |r| r.at))
    .bind(col(records, |r| r.event_type.clone()))
    .bind(col(records, |r| r.severity))
    .bind(col(records, |r| r.category))
    .bind(col(records, |r| r.service.as_deref()))
    .bind(col(records, |r| r.description.as_str()))
    .bind(col(records, |r| r.action.as_deref()))
    .bind(col(records, |r| r.result.as_str()))
    .bind(col(records, |r| r.duration_ms))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// The filters of the events listing; `None` means "any".
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub limit: i64,
    pub offset: i64,
    pub severity: Option<Severity>,
    pub event_type: Option<EventKind>,
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
    .bind(f.severity)
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
    .bind(f.severity)
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

/// The lists under `/api/self-healing/…`, each a fixed slice of the trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrailList {
    /// Every record with an action carried out (or skipped).
    RecoveryActions,
    /// Services going down, escalated or given up on.
    ServiceFailures,
    /// Category D: reboot decisions, refusals, reboots and their validation.
    Reboots,
}

impl TrailList {
    fn condition(self) -> &'static str {
        match self {
            TrailList::RecoveryActions => "action IS NOT NULL",
            TrailList::ServiceFailures => {
                "event_type IN ('service_down', 'service_escalated', 'service_failed', \
                 'service_failures')"
            }
            TrailList::Reboots => {
                "(category = 'D' OR event_type IN ('reboot', 'reboot_requested', \
                 'reboot_refused', 'post_reboot_validation'))"
            }
        }
    }
}

/// One page of `list`, newest first, and how many there are in all.
pub async fn list_trail(
    pool: &PgPool,
    list: TrailList,
    limit: i64,
    offset: i64,
) -> sqlx::Result<(Vec<HealingRecord>, i64)> {
    let cond = list.condition();
    let rows = sqlx::query_as::<_, HealingRecord>(sqlx::AssertSqlSafe(format!(
        "SELECT id, at, event_type, severity, category, service, description, action, result,
                duration_ms
           FROM self_healing_events WHERE {cond}
          ORDER BY at DESC, id DESC LIMIT $1 OFFSET $2"
    )))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM self_healing_events WHERE {cond}"
    )))
    .fetch_one(pool)
    .await?;
    Ok((rows, total))
}

/// A service going down (`true`) or coming back (`false`) at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub service: String,
    pub at: DateTime<Utc>,
    pub down: bool,
}

/// Every down/recovered transition since `since`, oldest first, preceded
/// per service by the last one before `since` (dated `since`), so each
/// service's state at the window's start is known.
pub async fn service_transitions(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<Transition>> {
    let rows: Vec<(String, DateTime<Utc>, EventKind, i32, i64)> = sqlx::query_as(
        "SELECT * FROM (
             SELECT DISTINCT ON (service) service, $1::timestamptz AS at, event_type,
                    0 AS part, id
               FROM self_healing_events
              WHERE service IS NOT NULL AND at < $1
                AND event_type IN ('service_down', 'service_recovered')
              ORDER BY service, at DESC, id DESC
         ) AS before
         UNION ALL
         SELECT service, at, event_type, 1 AS part, id
           FROM self_healing_events
          WHERE service IS NOT NULL AND at >= $1
            AND event_type IN ('service_down', 'service_recovered')
         ORDER BY at, part, id",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(service, at, t, _, _)| Transition {
            service,
            at,
            down: t == EventKind::ServiceDown,
        })
        .collect())
}

/// Per action since `since`: (action, succeeded, failed, skipped).
pub async fn action_counts(
    pool: &PgPool,
    since: DateTime<Utc>,
) -> sqlx::Result<Vec<(String, i64, i64, i64)>> {
    sqlx::query_as(
        "SELECT action,
                count(*) FILTER (WHERE result = 'ok'),
                count(*) FILTER (WHERE result LIKE 'failed%'),
                count(*) FILTER (WHERE result LIKE 'skipped%')
           FROM self_healing_events
          WHERE action IS NOT NULL AND at >= $1
          GROUP BY action ORDER BY action",
    )
    .bind(since)
    .fetch_all(pool)
    .await
}

/// When the first daemon start on record happened (the trail cannot say
/// anything about the time before).
pub async fn first_start(pool: &PgPool) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar("SELECT min(started_at) FROM daemon_starts")
        .fetch_one(pool)
        .await
}

/// Percent of `[from, to]` that `service` was not down, from its transitions
/// (oldest first). Down until a recovery, or until `to` if none came.
pub fn uptime_percent(
    transitions: &[Transition],
    service: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> f64 {
    let span = (to - from).num_milliseconds();
    if span <= 0 {
        return 100.0;
    }
    let mut down_since: Option<DateTime<Utc>> = None;
    let mut down_ms = 0i64;
    for t in transitions.iter().filter(|t| t.service == service) {
        let at = t.at.clamp(from, to);
        match (t.down, down_since) {
            (true, None) => down_since = Some(at),
            (false, Some(d)) => {
                down_ms += (at - d).num_milliseconds();
                down_since = None;
            }
            _ => {}
        }
    }
    if let Some(d) = down_since {
        down_ms += (to - d).num_milliseconds();
    }
    let up = 100.0 * (1.0 - down_ms as f64 / span as f64);
    (up * 100.0).round() / 100.0
}

/// Reboots requested within the last `window` (wall clock, all boots).
pub async fn reboots_since(pool: &PgPool, since: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM reboot_events WHERE requested_at >= $1")
        .bind(since)
        .fetch_one(pool)
        .await
}

/// Records a reboot about to be requested; returns its id.
pub async fn insert_reboot(
    pool: &PgPool,
    at: DateTime<Utc>,
    reason: &str,
    state: &serde_json::Value,
) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO reboot_events (requested_at, reason, state) VALUES ($1, $2, $3) RETURNING id",
    )
    .bind(at)
    .bind(reason)
    .bind(state.to_string())
    .fetch_one(pool)
    .await
}

/// The post-reboot validation of reboot `id`.
pub async fn validate_reboot(pool: &PgPool, id: i64, validation: &str) -> sqlx::Result<()> {
    sqlx::query("UPDATE reboot_events SET validated_at = now(), validation = $2 WHERE id = $1")
        .bind(id)
        .bind(validation)
        .execute(pool)
        .await
        .map(|_| ())
}

/// Workflows n8n reported as still running (started in the last day; an
/// older `running` row is a report n8n never finished, not a live run).
pub async fn running_workflows(pool: &PgPool) -> sqlx::Result<i64> {
    Ok(crate::db::workflows::last_24h(pool).await?.running)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::healing::record::Category;
    use chrono::TimeZone;

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn typed_records_round_trip_through_the_text_columns(pool: PgPool) {
        // Whole seconds: Postgres keeps microseconds, chrono nanoseconds.
        let at = Utc.timestamp_opt(1_780_000_000, 0).unwrap();
        let mut records = Vec::new();
        for (i, kind) in EventKind::KNOWN.iter().enumerate() {
            let severity = [Severity::Info, Severity::Warning, Severity::Critical][i % 3];
            let category = [
                None,
                Some(Category::A),
                Some(Category::B),
                Some(Category::C),
                Some(Category::D),
            ][i % 5];
            let mut r = HealingRecord::recorded(kind.clone(), severity, category, format!("{i}"));
            r.at = at + chrono::Duration::seconds(i as i64);
            records.push(r);
        }
        insert_events(&pool, &records).await.unwrap();
        let back = all_events(&pool).await.unwrap();
        assert_eq!(back.len(), records.len());
        for (r, b) in records.iter().zip(&back) {
            assert!(b.id.is_some());
            assert_eq!(
                &HealingRecord {
                    id: None,
                    ..b.clone()
                },
                r
            );
        }
        // The columns hold exactly the names the JSON has.
        let (t, s): (String, String) = sqlx::query_as(
            "SELECT event_type, severity FROM self_healing_events WHERE description = '0'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (t.as_str(), s.as_str()),
            (records[0].event_type.as_str(), "INFO")
        );
        // The filters bind the enums.
        let critical = EventFilter {
            limit: 1000,
            severity: Some(Severity::Critical),
            event_type: Some(EventKind::ServiceDown),
            ..Default::default()
        };
        let want = records
            .iter()
            .filter(|r| r.severity == Severity::Critical && r.event_type == EventKind::ServiceDown)
            .count() as i64;
        assert_eq!(count_events(&pool, &critical).await.unwrap(), want);
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn rows_this_build_cannot_name_are_still_listed(pool: PgPool) {
        // Another version (the trail survives updates and rollbacks) or a
        // hand wrote a kind and a category this build does not know.
        sqlx::query(
            "INSERT INTO self_healing_events (at, event_type, severity, category, description, result)
             VALUES (now(), 'disk_critical', 'CRITICAL', 'E', 'disk 99 % full', 'recorded')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let f = EventFilter {
            limit: 10,
            event_type: Some(EventKind::parse("disk_critical")),
            ..Default::default()
        };
        let rows = list_events(&pool, &f).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event_type, EventKind::Other("disk_critical".into()));
        assert_eq!(rows[0].severity, Severity::Critical);
        assert_eq!(rows[0].category, None);
        let json = serde_json::to_value(&rows[0]).unwrap();
        assert_eq!(json["event_type"], "disk_critical");
        let (list, total) = list_trail(&pool, TrailList::Reboots, 10, 0).await.unwrap();
        assert_eq!((list.len(), total), (0, 0));
    }

    #[test]
    fn uptime_counts_down_time_inside_the_window_only() {
        let t = |h: i64| Utc.timestamp_opt(1_700_000_000 + h * 3600, 0).unwrap();
        let tr = |service: &str, h: i64, down: bool| Transition {
            service: service.into(),
            at: t(h),
            down,
        };
        let from = t(0);
        let to = t(100);
        let list = vec![
            // Down at the window's start (the transition before it, dated from).
            tr("a", 0, true),
            tr("a", 5, false),
            tr("b", 10, true),
            tr("a", 20, true),
            tr("b", 20, false),
            tr("a", 25, false),
            // A second "down" while down changes nothing.
            tr("c", 90, true),
            tr("c", 95, true),
        ];
        assert_eq!(uptime_percent(&list, "a", from, to), 90.0);
        assert_eq!(uptime_percent(&list, "b", from, to), 90.0);
        // Still down at the end.
        assert_eq!(uptime_percent(&list, "c", from, to), 90.0);
        assert_eq!(uptime_percent(&list, "none", from, to), 100.0);
        assert_eq!(uptime_percent(&list, "a", to, to), 100.0);
    }
}
