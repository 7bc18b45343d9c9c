//! The in-memory history: a bounded ring of compact rows (one per sample)
//! that serves history queries and doubles as the write-behind buffer for
//! Postgres. Rows past the persisted watermark are "pending"; when the ring
//! is full the oldest row leaves it, and if it was still pending that is a
//! counted gap, never a silent loss.
//!
//! Pure data structure: no I/O, no clock; the sampler and writer drive it.

use std::collections::VecDeque;

use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use super::collect::Sample;

const NONE_U64: u64 = u64::MAX;

/// One sample, reduced to the series that are kept and persisted (~80 bytes,
/// so 24 h at 1 s is about 7 MB). A series not sampled is NaN or
/// `u64::MAX` inside; outside this module it is `None` ([`Row::values`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Row {
    pub seq: u64,
    pub ts_ms: i64,
    cpu: f32,
    ram: f32,
    temp: f32,
    disk: f32,
    gpu: f32,
    gpu_temp: f32,
    gpu_power_mw: f32,
    ram_used: u64,
    ram_total: u64,
    disk_used: u64,
    disk_total: u64,
    gpu_mem_used: u64,
    gpu_mem_total: u64,
}

/// A row's values as the database stores them: `None` where not sampled,
/// byte counts as `i64` (Postgres `bigint`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Values {
    pub cpu: Option<f32>,
    pub ram: Option<f32>,
    pub temp: Option<f32>,
    pub disk: Option<f32>,
    pub gpu: Option<f32>,
    pub gpu_temp: Option<f32>,
    pub gpu_power_mw: Option<f32>,
    pub ram_used: Option<i64>,
    pub ram_total: Option<i64>,
    pub disk_used: Option<i64>,
    pub disk_total: Option<i64>,
    pub gpu_mem_used: Option<i64>,
    pub gpu_mem_total: Option<i64>,
}

fn f(v: Option<f64>) -> f32 {
    v.map(|x| x as f32).unwrap_or(f32::NAN)
}
fn u(v: Option<u64>) -> u64 {
    v.unwrap_or(NONE_U64)
}

impl Row {
    pub fn from_sample(seq: u64, s: &Sample) -> Row {
        let gpu = s.gpu.as_ref();
        Row {
            seq,
            ts_ms: s.ts.timestamp_millis(),
            cpu: f(s.cpu_percent),
            ram: f(s.ram_percent),
            temp: f(s.temperature_c),
            disk: f(s.disk_percent),
            gpu: f(gpu.map(|g| g.utilization_percent)),
            gpu_temp: f(gpu.and_then(|g| g.temperature_c)),
            gpu_power_mw: f(gpu.and_then(|g| g.power_mw)),
            ram_used: u(s.ram_used_bytes),
            ram_total: u(s.ram_total_bytes),
            disk_used: u(s.disk_used_bytes),
            disk_total: u(s.disk_total_bytes),
            gpu_mem_used: u(gpu.and_then(|g| g.memory_used_bytes)),
            gpu_mem_total: u(gpu.and_then(|g| g.memory_total_bytes)),
        }
    }

    pub fn ts(&self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.ts_ms)
            .single()
            .unwrap_or_default()
    }

    /// The value of a history series, None when it was not sampled.
    pub fn series(&self, s: Series) -> Option<f64> {
        let v = match s {
            Series::Cpu => self.cpu,
            Series::Ram => self.ram,
            Series::Gpu => self.gpu,
            Series::Temperature => self.temp,
            Series::Disk => self.disk,
        };
        (!v.is_nan()).then_some(v as f64)
    }

    /// The values, `None` where not sampled.
    pub fn values(&self) -> Values {
        let f = |v: f32| (!v.is_nan()).then_some(v);
        let i = |v: u64| (v != NONE_U64).then_some(v.min(i64::MAX as u64) as i64);
        Values {
            cpu: f(self.cpu),
            ram: f(self.ram),
            temp: f(self.temp),
            disk: f(self.disk),
            gpu: f(self.gpu),
            gpu_temp: f(self.gpu_temp),
            gpu_power_mw: f(self.gpu_power_mw),
            ram_used: i(self.ram_used),
            ram_total: i(self.ram_total),
            disk_used: i(self.disk_used),
            disk_total: i(self.disk_total),
            gpu_mem_used: i(self.gpu_mem_used),
            gpu_mem_total: i(self.gpu_mem_total),
        }
    }
}

/// The series history queries return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    Cpu,
    Ram,
    Gpu,
    Temperature,
    Disk,
}

impl Series {
    pub const ALL: [Series; 5] = [
        Series::Cpu,
        Series::Ram,
        Series::Gpu,
        Series::Temperature,
        Series::Disk,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Series::Cpu => "cpu_percent",
            Series::Ram => "ram_percent",
            Series::Gpu => "gpu_percent",
            Series::Temperature => "temperature_c",
            Series::Disk => "disk_percent",
        }
    }
}

/// Rows dropped before they were persisted: from, to, how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from_ms: i64,
    pub to_ms: i64,
    pub dropped: u64,
}

#[derive(Debug)]
pub struct Ring {
    rows: VecDeque<Row>,
    capacity: usize,
    next_seq: u64,
    /// Rows with `seq <= persisted` are in Postgres.
    persisted: u64,
    dropped_total: u64,
    persisted_total: u64,
    open_gap: Option<Gap>,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        Ring {
            rows: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(1),
            next_seq: 1,
            persisted: 0,
            dropped_total: 0,
            persisted_total: 0,
            open_gap: None,
        }
    }

    pub fn push(&mut self, sample: &Sample) -> Row {
        let row = Row::from_sample(self.next_seq, sample);
        self.next_seq += 1;
        if self.rows.len() == self.capacity
            && let Some(old) = self.rows.pop_front()
            && old.seq > self.persisted
        {
            // Still pending: the buffer bound is reached, so this one is lost.
            self.persisted = old.seq;
            self.dropped_total += 1;
            let g = self.open_gap.get_or_insert(Gap {
                from_ms: old.ts_ms,
                to_ms: old.ts_ms,
                dropped: 0,
            });
            g.to_ms = old.ts_ms;
            g.dropped += 1;
        }
        self.rows.push_back(row);
        row
    }

    /// Samples taken since start.
    pub fn taken(&self) -> u64 {
        self.next_seq - 1
    }
    pub fn persisted_total(&self) -> u64 {
        self.persisted_total
    }
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
    pub fn len(&self) -> usize {
        self.rows.len()
    }
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
    pub fn pending(&self) -> usize {
        self.rows.iter().filter(|r| r.seq > self.persisted).count()
    }

    /// Up to `max` of the oldest pending rows, in order.
    pub fn pending_batch(&self, max: usize) -> Vec<Row> {
        let start = self.rows.partition_point(|r| r.seq <= self.persisted);
        self.rows.range(start..).take(max).copied().collect()
    }

    /// Marks everything up to `seq` as written.
    pub fn mark_persisted(&mut self, seq: u64) {
        if seq > self.persisted {
            let newly = self
                .rows
                .iter()
                .filter(|r| r.seq > self.persisted && r.seq <= seq)
                .count() as u64;
            self.persisted_total += newly;
            self.persisted = seq;
        }
    }

    /// The gap recorded since the last call, to be written as an event.
    pub fn take_gap(&mut self) -> Option<Gap> {
        self.open_gap.take()
    }
    /// Puts a gap back (its write failed), merging with a newer one.
    pub fn restore_gap(&mut self, g: Gap) {
        match &mut self.open_gap {
            Some(newer) => {
                newer.from_ms = g.from_ms;
                newer.dropped += g.dropped;
            }
            None => self.open_gap = Some(g),
        }
    }

    pub fn oldest_ms(&self) -> Option<i64> {
        self.rows.front().map(|r| r.ts_ms)
    }

    pub fn rows_between(&self, from_ms: i64, to_ms: i64) -> impl Iterator<Item = &Row> {
        let start = self.rows.partition_point(|r| r.ts_ms < from_ms);
        self.rows
            .range(start..)
            .take_while(move |r| r.ts_ms <= to_ms)
    }

    /// True when every sample in the last `window_ms` before `now_ms` has
    /// `series` above `threshold`, and the ring reaches back that far.
    pub fn sustained_above(
        &self,
        series: Series,
        threshold: f64,
        window_ms: i64,
        now_ms: i64,
    ) -> bool {
        let from = now_ms - window_ms;
        if self.oldest_ms().is_none_or(|o| o > from) {
            return false;
        }
        let mut any = false;
        for r in self.rows_between(from, now_ms) {
            match r.series(series) {
                Some(v) if v > threshold => any = true,
                _ => return false,
            }
        }
        any
    }
}

/// A downsampled history: shared bucket start times, and per series the
/// min, average and max of each bucket (so peaks survive downsampling).
#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct History {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub bucket_ms: i64,
    /// `memory` when the in-memory ring covered the range, else `database`.
    pub source: String,
    /// Bucket start times (ms since the epoch); empty buckets are left out.
    pub t: Vec<i64>,
    pub series: Vec<SeriesPoints>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, utoipa::ToSchema)]
pub struct SeriesPoints {
    pub name: String,
    pub min: Vec<Option<f32>>,
    pub avg: Vec<Option<f32>>,
    pub max: Vec<Option<f32>>,
}

/// Bucket width for at most `points` buckets over the inclusive range
/// `[from, to]` (so `to` itself lands in the last bucket).
pub fn bucket_ms(from_ms: i64, to_ms: i64, points: usize) -> i64 {
    let span = (to_ms - from_ms).max(0);
    span / points.max(1) as i64 + 1
}

/// Accumulates min/avg/max per bucket for every series.
pub struct Downsampler {
    from_ms: i64,
    bucket: i64,
    current: Option<i64>,
    acc: Vec<(f64, f64, f64, u32)>,
    out: History,
}

impl Downsampler {
    pub fn new(from_ms: i64, to_ms: i64, points: usize, source: &str) -> Downsampler {
        let bucket = bucket_ms(from_ms, to_ms, points);
        let ts = |ms| Utc.timestamp_millis_opt(ms).single().unwrap_or_default();
        Downsampler {
            from_ms,
            bucket,
            current: None,
            acc: vec![(f64::INFINITY, 0.0, f64::NEG_INFINITY, 0); Series::ALL.len()],
            out: History {
                from: ts(from_ms),
                to: ts(to_ms),
                bucket_ms: bucket,
                source: source.into(),
                t: Vec::new(),
                series: Series::ALL
                    .iter()
                    .map(|s| SeriesPoints {
                        name: s.name().into(),
                        ..Default::default()
                    })
                    .collect(),
            },
        }
    }

    /// Rows must come in time order.
    pub fn add(&mut self, ts_ms: i64, values: [Option<f64>; 5]) {
        let b = (ts_ms - self.from_ms).div_euclid(self.bucket);
        if self.current != Some(b) {
            self.flush();
            self.current = Some(b);
        }
        for (i, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                let a = &mut self.acc[i];
                a.0 = a.0.min(v);
                a.1 += v;
                a.2 = a.2.max(v);
                a.3 += 1;
            }
        }
    }

    /// Adds a bucket already reduced elsewhere (the database does the
    /// grouping for ranges older than the ring).
    pub fn add_bucket(
        &mut self,
        bucket_start_ms: i64,
        stats: [(Option<f32>, Option<f32>, Option<f32>); 5],
    ) {
        self.flush();
        self.out.t.push(bucket_start_ms);
        for (i, (mn, av, mx)) in stats.into_iter().enumerate() {
            let s = &mut self.out.series[i];
            s.min.push(mn);
            s.avg.push(av);
            s.max.push(mx);
        }
    }

    fn flush(&mut self) {
        let Some(b) = self.current.take() else {
            return;
        };
        self.out.t.push(self.from_ms + b * self.bucket);
        for (i, a) in self.acc.iter_mut().enumerate() {
            let s = &mut self.out.series[i];
            if a.3 == 0 {
                s.min.push(None);
                s.avg.push(None);
                s.max.push(None);
            } else {
                let round = |x: f64| Some(((x * 10.0).round() / 10.0) as f32);
                s.min.push(round(a.0));
                s.avg.push(round(a.1 / a.3 as f64));
                s.max.push(round(a.2));
            }
            *a = (f64::INFINITY, 0.0, f64::NEG_INFINITY, 0);
        }
    }

    pub fn finish(mut self) -> History {
        self.flush();
        self.out
    }
}

/// Downsamples the ring's rows in `[from_ms, to_ms]` to at most `points` buckets.
pub fn history_from_ring(ring: &Ring, from_ms: i64, to_ms: i64, points: usize) -> History {
    let mut d = Downsampler::new(from_ms, to_ms, points, "memory");
    for r in ring.rows_between(from_ms, to_ms) {
        d.add(r.ts_ms, Series::ALL.map(|s| r.series(s)));
    }
    d.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ts_ms: i64, cpu: f64) -> Sample {
        Sample {
            ts: Utc.timestamp_millis_opt(ts_ms).unwrap(),
            cpu_percent: Some(cpu),
            ram_percent: Some(50.0),
            ram_used_bytes: Some(1),
            ram_total_bytes: Some(2),
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

    #[test]
    fn pending_rows_come_out_in_order_and_are_marked_persisted() {
        let mut ring = Ring::new(10);
        for i in 0..5 {
            ring.push(&sample(i * 1000, i as f64));
        }
        let batch = ring.pending_batch(3);
        assert_eq!(
            batch.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        ring.mark_persisted(3);
        assert_eq!(ring.pending(), 2);
        assert_eq!(ring.pending_batch(100)[0].seq, 4);
        assert_eq!(ring.persisted_total(), 3);
    }

    #[test]
    fn a_full_ring_drops_the_oldest_pending_rows_as_one_counted_gap() {
        let mut ring = Ring::new(3);
        for i in 0..3 {
            ring.push(&sample(i * 1000, 1.0));
        }
        ring.mark_persisted(1);
        ring.push(&sample(3000, 1.0)); // drops seq 1: persisted, no gap
        assert_eq!(ring.take_gap(), None);
        ring.push(&sample(4000, 1.0)); // drops seq 2: pending → gap
        ring.push(&sample(5000, 1.0)); // drops seq 3
        assert_eq!(ring.dropped_total(), 2);
        assert_eq!(
            ring.take_gap(),
            Some(Gap {
                from_ms: 1000,
                to_ms: 2000,
                dropped: 2
            })
        );
        assert_eq!(ring.pending(), 3);
        assert_eq!(ring.pending_batch(10)[0].seq, 4);
        assert_eq!(ring.taken(), 6);
    }

    #[test]
    fn downsampling_keeps_peaks() {
        let mut ring = Ring::new(1000);
        for i in 0..100 {
            let cpu = if i == 42 { 99.0 } else { 10.0 };
            ring.push(&sample(i * 1000, cpu));
        }
        let h = history_from_ring(&ring, 0, 99_000, 10);
        assert_eq!(h.t.len(), 10);
        assert_eq!(h.bucket_ms, 9_901);
        let cpu = &h.series[0];
        assert_eq!(cpu.name, "cpu_percent");
        let peak = cpu.max.iter().flatten().fold(0.0f32, |a, &b| a.max(b));
        assert_eq!(peak, 99.0);
        assert!(cpu.min.iter().flatten().all(|&v| v == 10.0));
        // A series never sampled is null, not zero.
        assert!(h.series[2].avg.iter().all(Option::is_none));
    }

    #[test]
    fn never_more_buckets_than_points() {
        let mut ring = Ring::new(5000);
        for i in 0..5000 {
            ring.push(&sample(i * 997, 1.0));
        }
        for points in [1, 2, 7, 100, 499, 500, 4999] {
            for (from, to) in [(0, 4_984_003), (1, 2), (123, 4_000_000), (0, 0)] {
                let h = history_from_ring(&ring, from, to, points);
                assert!(
                    h.t.len() <= points,
                    "{points} points, {from}..{to}: {}",
                    h.t.len()
                );
            }
        }
    }

    #[test]
    fn sustained_needs_the_whole_window() {
        let mut ring = Ring::new(1000);
        for i in 0..400 {
            ring.push(&sample(i * 1000, 95.0));
        }
        assert!(ring.sustained_above(Series::Cpu, 80.0, 300_000, 399_000));
        // Not enough history yet for a 10 min window.
        assert!(!ring.sustained_above(Series::Cpu, 80.0, 600_000, 399_000));
        ring.push(&sample(400_000, 50.0));
        assert!(!ring.sustained_above(Series::Cpu, 80.0, 300_000, 400_000));
    }
}
