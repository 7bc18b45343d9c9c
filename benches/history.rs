//! A 24 h history at 1 s (86 400 samples in the ring) downsampled to 500
//! points per series: what `GET /api/metrics/history?range=24h` costs when
//! served from memory.

use arasuld::metrics::collect::Sample;
use arasuld::metrics::ring::{Ring, history_from_ring};
use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};

fn full_day() -> (Ring, i64, i64) {
    let mut ring = Ring::new(86_400);
    let t0 = 1_780_000_000_000i64;
    for i in 0..86_400i64 {
        let wave = ((i as f64) / 600.0).sin();
        let s = Sample {
            ts: Utc.timestamp_millis_opt(t0 + i * 1000).unwrap(),
            cpu_percent: Some(50.0 + 40.0 * wave),
            ram_percent: Some(60.0 + 5.0 * wave),
            ram_used_bytes: Some(40 << 30),
            ram_total_bytes: Some(64 << 30),
            temperature_c: Some(55.0 + 10.0 * wave),
            thermal_zones: vec![],
            disk_total_bytes: Some(1 << 40),
            disk_used_bytes: Some(1 << 39),
            disk_free_bytes: Some(1 << 39),
            disk_percent: Some(50.0),
            gpu: None,
            errors: vec![],
        };
        ring.push(&s);
    }
    (ring, t0, t0 + 86_399_000)
}

fn bench(c: &mut Criterion) {
    let (ring, from, to) = full_day();
    c.bench_function("history_24h_at_1s_to_500_points", |b| {
        b.iter(|| history_from_ring(&ring, from, to, 500))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
