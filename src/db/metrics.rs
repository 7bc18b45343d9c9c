//! SQL for the metrics tables: batch insert, gaps, retention, history.

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{PgPool, Row as _};

use crate::metrics::ring::{Downsampler, Gap, History, Row, Values};

/// Inserts rows in one statement (arrays unnested server-side). Re-sending a
/// row already written is harmless (`ts` is unique), so a flush whose reply
/// was lost can simply be retried.
pub async fn insert_rows(pool: &PgPool, rows: &[Row]) -> sqlx::Result<u64> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ts: Vec<DateTime<Utc>> = rows.iter().map(Row::ts).collect();
    let values: Vec<Values> = rows.iter().map(Row::values).collect();
    let f = |get: fn(&Values) -> Option<f32>| values.iter().map(get).collect::<Vec<_>>();
    let i = |get: fn(&Values) -> Option<i64>| values.iter().map(get).collect::<Vec<_>>();
    let done = sqlx::query(
        "INSERT INTO metrics (ts, cpu_percent, ram_percent, ram_used_bytes, ram_total_bytes,
             temperature_c, disk_percent, disk_used_bytes, disk_total_bytes, gpu_percent,
             gpu_memory_used_bytes, gpu_memory_total_bytes, gpu_temperature_c, gpu_power_mw)
         SELECT * FROM UNNEST($1::timestamptz[], $2::real[], $3::real[], $4::bigint[], $5::bigint[],
             $6::real[], $7::real[], $8::bigint[], $9::bigint[], $10::real[],
             $11::bigint[], $12::bigint[], $13::real[], $14::real[])
         ON CONFLICT (ts) DO NOTHING",
    )
    .bind(ts)
    .bind(f(|r| r.cpu))
    .bind(f(|r| r.ram))
    .bind(i(|r| r.ram_used))
    .bind(i(|r| r.ram_total))
    .bind(f(|r| r.temp))
    .bind(f(|r| r.disk))
    .bind(i(|r| r.disk_used))
    .bind(i(|r| r.disk_total))
    .bind(f(|r| r.gpu))
    .bind(i(|r| r.gpu_mem_used))
    .bind(i(|r| r.gpu_mem_total))
    .bind(f(|r| r.gpu_temp))
    .bind(f(|r| r.gpu_power_mw))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

pub async fn insert_gap(pool: &PgPool, gap: &Gap) -> sqlx::Result<()> {
    let ts = |ms| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
    sqlx::query("INSERT INTO metric_gaps (from_ts, to_ts, dropped) VALUES ($1, $2, $3)")
        .bind(ts(gap.from_ms))
        .bind(ts(gap.to_ms))
        .bind(gap.dropped as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// Samples age by when they were taken; deleted past `metrics.retention`
/// (see [`super::retention`]).
pub const AGING: super::retention::Aging = super::retention::Aging {
    table: "metrics",
    key: "id",
    time: "ts",
    noun: "metrics",
};

type Stat = (Option<f32>, Option<f32>, Option<f32>);

/// History from Postgres, bucketed by the server (min/avg/max per bucket).
pub async fn history(
    pool: &PgPool,
    from_ms: i64,
    to_ms: i64,
    points: usize,
) -> sqlx::Result<History> {
    let mut d = Downsampler::new(from_ms, to_ms, points, "database");
    let bucket = crate::metrics::ring::bucket_ms(from_ms, to_ms, points);
    let rows = sqlx::query(
        "SELECT floor((extract(epoch FROM ts) * 1000 - $1) / $2)::bigint AS b,
                min(cpu_percent), avg(cpu_percent)::real, max(cpu_percent),
                min(ram_percent), avg(ram_percent)::real, max(ram_percent),
                min(gpu_percent), avg(gpu_percent)::real, max(gpu_percent),
                min(temperature_c), avg(temperature_c)::real, max(temperature_c),
                min(disk_percent), avg(disk_percent)::real, max(disk_percent)
         FROM metrics
         WHERE ts >= $3 AND ts <= $4
         GROUP BY b ORDER BY b",
    )
    .bind(from_ms as f64)
    .bind(bucket as f64)
    .bind(
        Utc.timestamp_millis_opt(from_ms)
            .single()
            .unwrap_or_default(),
    )
    .bind(Utc.timestamp_millis_opt(to_ms).single().unwrap_or_default())
    .fetch_all(pool)
    .await?;
    let r1 = |x: Option<f32>| x.map(|v| (v * 10.0).round() / 10.0);
    for r in rows {
        let col = |i: usize| r.get::<Option<f32>, _>(i);
        let stats: [Stat; 5] =
            std::array::from_fn(|k| (col(1 + 3 * k), r1(col(2 + 3 * k)), col(3 + 3 * k)));
        d.add_bucket(from_ms + r.get::<i64, _>(0) * bucket, stats);
    }
    Ok(d.finish())
}

/// Rows and gaps in the table (tests and the outage check).
pub async fn count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM metrics")
        .fetch_one(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::Sample;
    use crate::metrics::ring::Ring;

    fn sample(ms: i64, cpu: f64) -> Sample {
        Sample {
            ts: Utc.timestamp_millis_opt(ms).unwrap(),
            cpu_percent: Some(cpu),
            ram_percent: None,
            ram_used_bytes: Some(7),
            ram_total_bytes: None,
            temperature_c: None,
            thermal_zones: vec![],
            disk_total_bytes: None,
            disk_used_bytes: None,
            disk_free_bytes: None,
            disk_percent: None,
            gpu: None,
            errors: vec![],
        }
    }

    #[sqlx::test(migrator = "crate::db::MIGRATOR")]
    async fn rows_round_trip_and_history_keeps_peaks(pool: PgPool) {
        let mut ring = Ring::new(1000);
        let t0 = 1_780_000_000_000i64;
        for i in 0..600 {
            ring.push(&sample(t0 + i * 1000, if i == 300 { 99.0 } else { 10.0 }));
        }
        let rows = ring.pending_batch(1000);
        assert_eq!(insert_rows(&pool, &rows).await.unwrap(), 600);
        // Re-sending is harmless.
        assert_eq!(insert_rows(&pool, &rows[..10]).await.unwrap(), 0);
        assert_eq!(count(&pool).await.unwrap(), 600);

        let h = history(&pool, t0, t0 + 599_000, 60).await.unwrap();
        assert_eq!(h.source, "database");
        assert!(h.t.len() <= 60 && h.t.len() >= 59, "{}", h.t.len());
        let cpu = &h.series[0];
        assert_eq!(cpu.max.iter().flatten().fold(0f32, |a, &b| a.max(b)), 99.0);
        assert!(
            h.series[1].avg.iter().all(Option::is_none),
            "RAM % was never sampled"
        );
        // The same range from memory gives the same buckets.
        let mem = crate::metrics::ring::history_from_ring(&ring, t0, t0 + 599_000, 60);
        assert_eq!(mem.t, h.t);
        assert_eq!(mem.series[0].max, cpu.max);

        let before = Utc.timestamp_millis_opt(t0 + 100_000).unwrap();
        let deleted = crate::db::retention::delete_older_than(&pool, AGING, before, 30, || {})
            .await
            .unwrap();
        assert_eq!(deleted, 100);
        assert_eq!(count(&pool).await.unwrap(), 500);
    }
}
