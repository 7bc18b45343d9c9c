//! What the daemon did since it started, counted where it happens and read
//! by `GET /metrics`: HTTP requests at the edge (lock-free, sharded per
//! thread, no allocation), and the outcomes of the rarer work (self-healing
//! actions, update runs, model pulls, backups, notifications) in small
//! labelled maps. Process-wide statics, as a Prometheus client's default
//! registry is: the subsystems bump them without a handle being wired
//! through, and a scrape reads a snapshot. Counters start at zero with the
//! process; Prometheus' `rate()` and `increase()` take the reset in stride.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Where an HTTP request went, coarsely: one label value per class, so the
/// series stay few whatever paths clients make up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpRoute {
    /// `GET /api/health`: the probes, apart from the API proper.
    Health,
    /// `POST /api/auth/login`.
    Login,
    /// `/api/llm/*`, `/api/embeddings`, `/ollama/*`.
    Llm,
    /// `/api/metrics/*`, `/metrics`.
    Metrics,
    /// `/api/workflows/execution`, `/webhook/*`, `/webhook-test/*`.
    Webhook,
    /// Any other `/api/*`.
    Api,
    /// The front door's web apps (`/n8n/*`, `/minio/*`).
    Apps,
    /// The dashboard's pages and files.
    Web,
}

impl HttpRoute {
    pub const ALL: [HttpRoute; 8] = [
        HttpRoute::Health,
        HttpRoute::Login,
        HttpRoute::Llm,
        HttpRoute::Metrics,
        HttpRoute::Webhook,
        HttpRoute::Api,
        HttpRoute::Apps,
        HttpRoute::Web,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpRoute::Health => "health",
            HttpRoute::Login => "login",
            HttpRoute::Llm => "llm",
            HttpRoute::Metrics => "metrics",
            HttpRoute::Webhook => "webhook",
            HttpRoute::Api => "api",
            HttpRoute::Apps => "apps",
            HttpRoute::Web => "web",
        }
    }
}

const ROUTES: usize = HttpRoute::ALL.len();

/// Status codes counted under their own label; any other is counted as its
/// class (`4xx`), which `code=~"4.."` matches all the same.
pub const HTTP_CODES: [u16; 26] = [
    101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 408, 409,
    413, 415, 422, 429, 500, 502, 503,
];
/// Label of each slot: [`HTTP_CODES`], then `1xx` … `5xx`.
const CODE_LABELS: [&str; CODES] = [
    "101", "200", "201", "202", "204", "206", "301", "302", "303", "304", "307", "308", "400",
    "401", "403", "404", "405", "408", "409", "413", "415", "422", "429", "500", "502", "503",
    "1xx", "2xx", "3xx", "4xx", "5xx",
];
const CODES: usize = HTTP_CODES.len() + 5;

fn code_slot(code: u16) -> usize {
    match HTTP_CODES.binary_search(&code) {
        Ok(i) => i,
        Err(_) => HTTP_CODES.len() + (code / 100).clamp(1, 5) as usize - 1,
    }
}

/// Upper bounds of the latency histogram, seconds: Prometheus' defaults
/// with 1 ms and 2.5 ms in front, where `/api/health` answers.
pub const HTTP_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// The same bounds in nanoseconds, for the comparison per request.
const BUCKET_NS: [u64; 13] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
/// The bounds, then `+Inf`.
const BUCKETS: usize = HTTP_BUCKETS.len() + 1;

/// One thread's counters, on cache lines of its own: requests by route and
/// code, and the latency histogram by route (bucket counts not yet
/// cumulative; the sum in nanoseconds).
#[repr(align(128))]
struct HttpShard {
    requests: [[AtomicU64; CODES]; ROUTES],
    buckets: [[AtomicU64; BUCKETS]; ROUTES],
    sum_ns: [AtomicU64; ROUTES],
}

impl HttpShard {
    const fn new() -> Self {
        HttpShard {
            requests: [const { [const { AtomicU64::new(0) }; CODES] }; ROUTES],
            buckets: [const { [const { AtomicU64::new(0) }; BUCKETS] }; ROUTES],
            sum_ns: [const { AtomicU64::new(0) }; ROUTES],
        }
    }
}

/// Shards of [`HttpStats`]: each thread that serves requests writes to one
/// (threads take them in turn), so busy workers do not fight over a cache line.
const SHARDS: usize = 16;

/// Requests served at the HTTP edge. Recording is three relaxed atomic
/// additions to the calling thread's shard: no lock, no allocation.
pub struct HttpStats {
    shards: [HttpShard; SHARDS],
    next_shard: AtomicUsize,
}

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl Default for HttpStats {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpStats {
    pub const fn new() -> Self {
        HttpStats {
            shards: [const { HttpShard::new() }; SHARDS],
            next_shard: AtomicUsize::new(0),
        }
    }

    fn shard(&self) -> &HttpShard {
        let i = SHARD.with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = self.next_shard.fetch_add(1, Ordering::Relaxed) % SHARDS;
                s.set(i);
            }
            i
        });
        &self.shards[i]
    }

    /// One request answered with `code` after `took`.
    pub fn observe(&self, route: HttpRoute, code: u16, took: Duration) {
        let r = route as usize;
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKET_NS
            .iter()
            .position(|&b| ns <= b)
            .unwrap_or(BUCKETS - 1);
        let s = self.shard();
        s.requests[r][code_slot(code)].fetch_add(1, Ordering::Relaxed);
        s.buckets[r][bucket].fetch_add(1, Ordering::Relaxed);
        s.sum_ns[r].fetch_add(ns, Ordering::Relaxed);
    }

    /// The shards added up: for each route, the requests by code (codes
    /// never seen left out) and the histogram.
    pub fn snapshot(&self) -> Vec<HttpRouteStats> {
        HttpRoute::ALL
            .iter()
            .map(|&route| {
                let r = route as usize;
                let total = |f: &dyn Fn(&HttpShard) -> &AtomicU64| -> u64 {
                    self.shards
                        .iter()
                        .map(|s| f(s).load(Ordering::Relaxed))
                        .fold(0u64, u64::wrapping_add)
                };
                let requests = (0..CODES)
                    .map(|c| (CODE_LABELS[c], total(&|s| &s.requests[r][c])))
                    .filter(|&(_, n)| n > 0)
                    .collect();
                let mut cumulative = Vec::with_capacity(BUCKETS);
                let mut so_far = 0u64;
                for b in 0..BUCKETS {
                    so_far = so_far.wrapping_add(total(&|s| &s.buckets[r][b]));
                    cumulative.push(so_far);
                }
                HttpRouteStats {
                    route,
                    requests,
                    cumulative_buckets: cumulative,
                    sum_seconds: total(&|s| &s.sum_ns[r]) as f64 / 1e9,
                }
            })
            .collect()
    }
}

/// One route's requests as a scrape sees them.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpRouteStats {
    pub route: HttpRoute,
    /// (code label, requests), codes never seen left out.
    pub requests: Vec<(&'static str, u64)>,
    /// Requests at or under each of [`HTTP_BUCKETS`], then all of them
    /// (`+Inf`, also the histogram's count).
    pub cumulative_buckets: Vec<u64>,
    pub sum_seconds: f64,
}

/// A counter with labels, for work that happens now and then (a lock per
/// bump is nothing beside the work counted). Label sets in `known` are
/// shown at zero before their first bump, so an alert on `increase()` sees
/// the first one.
pub struct LabelledCounter<const N: usize> {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: [&'static str; N],
    known: &'static [[&'static str; N]],
    counts: Mutex<BTreeMap<[&'static str; N], u64>>,
}

impl<const N: usize> LabelledCounter<N> {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
        known: &'static [[&'static str; N]],
    ) -> Self {
        LabelledCounter {
            name,
            help,
            labels,
            known,
            counts: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn inc(&self, values: [&'static str; N]) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry(values).or_default() += 1;
    }

    /// Every label set counted or known, in label order.
    pub fn snapshot(&self) -> CounterFamily {
        let mut rows = self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for k in self.known {
            rows.entry(*k).or_default();
        }
        CounterFamily {
            name: self.name,
            help: self.help,
            labels: self.labels.to_vec(),
            rows: rows.into_iter().map(|(k, v)| (k.to_vec(), v)).collect(),
        }
    }
}

/// A labelled counter as a scrape sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct CounterFamily {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: Vec<&'static str>,
    /// Label values (in the order of `labels`) and the count.
    pub rows: Vec<(Vec<&'static str>, u64)>,
}

/// Every `(a, b)` of two lists, at compile time.
const fn cross<const A: usize, const B: usize, const AB: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [[&'static str; 2]; AB] {
    assert!(A * B == AB);
    let mut out = [["", ""]; AB];
    let mut i = 0;
    while i < AB {
        out[i] = [a[i / B], b[i % B]];
        i += 1;
    }
    out
}

const HEALING_KNOWN: [[&str; 2]; 12] = cross(["A", "B", "C", "D"], ["ok", "failed", "skipped"]);

/// Self-healing actions carried out, by the ladder rung of the event they
/// answered (`none` for an action recorded alone) and how they went.
pub static HEALING_ACTIONS: LabelledCounter<2> = LabelledCounter::new(
    "arasul_healing_actions_total",
    "Self-healing actions carried out, by ladder category (A services, B overload, C critical, D reboot) and outcome.",
    ["category", "outcome"],
    &HEALING_KNOWN,
);

/// Update runs that reached a final state.
pub static UPDATE_RUNS: LabelledCounter<1> = LabelledCounter::new(
    "arasul_update_runs_total",
    "Update runs finished, by result (done, rolled_back, failed).",
    ["result"],
    &[["done"], ["rolled_back"], ["failed"]],
);

/// Model downloads that ended.
pub static MODEL_PULLS: LabelledCounter<1> = LabelledCounter::new(
    "arasul_model_pulls_total",
    "Model downloads ended, by result (done, failed, cancelled).",
    ["result"],
    &[["done"], ["failed"], ["cancelled"]],
);

/// Backups and restores that ran (a refusal because one is running is not a run).
pub static BACKUP_RUNS: LabelledCounter<2> = LabelledCounter::new(
    "arasul_backup_runs_total",
    "Backup and restore runs, by kind and result (good, unverified, failed).",
    ["kind", "result"],
    &[
        ["backup", "good"],
        ["backup", "unverified"],
        ["backup", "failed"],
        ["restore", "good"],
        ["restore", "failed"],
    ],
);

/// Tries to deliver a notification on one channel.
pub static NOTIFICATIONS: LabelledCounter<1> = LabelledCounter::new(
    "arasul_notification_deliveries_total",
    "Tries to deliver a notification on a channel, by result (delivered, retry: failed and tried again later, given_up).",
    ["result"],
    &[["delivered"], ["retry"], ["given_up"]],
);

/// Requests at the HTTP edge.
pub static HTTP: HttpStats = HttpStats::new();

/// Every labelled counter, as `GET /metrics` shows them.
pub fn families() -> Vec<CounterFamily> {
    vec![
        HEALING_ACTIONS.snapshot(),
        UPDATE_RUNS.snapshot(),
        MODEL_PULLS.snapshot(),
        BACKUP_RUNS.snapshot(),
        NOTIFICATIONS.snapshot(),
    ]
}

/// A self-healing record with an action: its rung (`none` when recorded
/// alone) and its outcome (see [`healing_outcome`]).
pub fn healing_action(category: Option<&'static str>, result: &str) {
    if let Some(outcome) = healing_outcome(result) {
        HEALING_ACTIONS.inc([category.unwrap_or("none"), outcome]);
    }
}

/// `ok`, `failed` or `skipped` from a record's `result` (`ok`, `failed: …`,
/// `skipped: …`); None for `recorded`, a decision without an action.
fn healing_outcome(result: &str) -> Option<&'static str> {
    if result == "ok" {
        Some("ok")
    } else if result.starts_with("failed") {
        Some("failed")
    } else if result.starts_with("skipped") {
        Some("skipped")
    } else {
        None
    }
}

/// A model download that ended (done, failed or cancelled).
pub fn model_pull(state: crate::ai::pulls::PullState) {
    if let Some(result) = pull_result(state) {
        MODEL_PULLS.inc([result]);
    }
}

fn pull_result(state: crate::ai::pulls::PullState) -> Option<&'static str> {
    use crate::ai::pulls::PullState as S;
    match state {
        S::Done => Some("done"),
        S::Failed => Some("failed"),
        S::Cancelled => Some("cancelled"),
        S::Queued | S::Running | S::Retrying => None,
    }
}

/// A backup or restore that ran (`kind`: `backup`, `restore`).
pub fn backup_run(kind: &'static str, r: &Result<crate::backup::Run, crate::backup::BackupError>) {
    if let Some(result) = backup_result(r) {
        BACKUP_RUNS.inc([kind, result]);
    }
}

/// A refusal because another run is going on is not a run.
fn backup_result(
    r: &Result<crate::backup::Run, crate::backup::BackupError>,
) -> Option<&'static str> {
    use crate::backup::{BackupError, RunStatus};
    match r {
        Err(BackupError::Busy) => None,
        Err(_) => Some("failed"),
        Ok(run) => match run.status {
            RunStatus::Good => Some("good"),
            RunStatus::Unverified => Some("unverified"),
            RunStatus::Failed => Some("failed"),
            RunStatus::Running => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_own_label_or_their_class() {
        assert_eq!(CODE_LABELS[code_slot(200)], "200");
        assert_eq!(CODE_LABELS[code_slot(503)], "503");
        assert_eq!(CODE_LABELS[code_slot(418)], "4xx");
        assert_eq!(CODE_LABELS[code_slot(599)], "5xx");
        assert_eq!(CODE_LABELS[code_slot(102)], "1xx");
        for (i, c) in HTTP_CODES.iter().enumerate() {
            assert_eq!(CODE_LABELS[i], c.to_string());
        }
        assert!(HTTP_CODES.is_sorted(), "code_slot searches them");
        for (b, ns) in HTTP_BUCKETS.iter().zip(BUCKET_NS) {
            assert_eq!((b * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn requests_add_up_across_threads_in_cumulative_buckets() {
        let stats = HttpStats::new();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..100 {
                        stats.observe(HttpRoute::Health, 200, Duration::from_micros(300));
                    }
                    stats.observe(HttpRoute::Api, 404, Duration::from_millis(30));
                    stats.observe(HttpRoute::Api, 200, Duration::from_secs(20));
                });
            }
        });
        let snap = stats.snapshot();
        let health = &snap[HttpRoute::Health as usize];
        assert_eq!(health.requests, [("200", 400)]);
        assert_eq!(health.cumulative_buckets[0], 400, "≤ 1 ms");
        assert_eq!(*health.cumulative_buckets.last().unwrap(), 400);
        assert!((health.sum_seconds - 0.12).abs() < 1e-9);
        let api = &snap[HttpRoute::Api as usize];
        assert_eq!(api.requests, [("200", 4), ("404", 4)]);
        // 30 ms falls in le=0.05; 20 s only in +Inf.
        assert_eq!(api.cumulative_buckets[4], 0);
        assert_eq!(api.cumulative_buckets[5], 4);
        assert_eq!(api.cumulative_buckets[BUCKETS - 2], 4);
        assert_eq!(api.cumulative_buckets[BUCKETS - 1], 8);
        assert!(snap[HttpRoute::Web as usize].requests.is_empty());
    }

    #[test]
    fn known_label_sets_show_at_zero_and_bumps_count() {
        static C: LabelledCounter<2> =
            LabelledCounter::new("x_total", "x", ["a", "b"], &[["k", "1"], ["k", "2"]]);
        C.inc(["k", "2"]);
        C.inc(["k", "2"]);
        C.inc(["z", "1"]);
        let f = C.snapshot();
        assert_eq!(
            f.rows,
            [
                (vec!["k", "1"], 0),
                (vec!["k", "2"], 2),
                (vec!["z", "1"], 1)
            ]
        );
        assert_eq!(HEALING_KNOWN[0], ["A", "ok"]);
        assert_eq!(HEALING_KNOWN[11], ["D", "skipped"]);
    }

    #[test]
    fn outcomes_are_named_from_what_each_subsystem_keeps() {
        assert_eq!(healing_outcome("ok"), Some("ok"));
        assert_eq!(healing_outcome("failed: not confirmed"), Some("failed"));
        assert_eq!(
            healing_outcome("skipped: nothing configured"),
            Some("skipped")
        );
        assert_eq!(healing_outcome("recorded"), None);

        use crate::ai::pulls::PullState;
        assert_eq!(pull_result(PullState::Done), Some("done"));
        assert_eq!(pull_result(PullState::Cancelled), Some("cancelled"));
        assert_eq!(pull_result(PullState::Retrying), None);

        use crate::backup::{BackupError, Run, RunStatus};
        let run = |status| Run {
            id: "20261206T033000Z".into(),
            kind: "backup".into(),
            trigger: "manual".into(),
            started: chrono::Utc::now(),
            finished: None,
            destination: "local:/x".into(),
            file: None,
            location: None,
            size: None,
            status,
            error: None,
            skipped: vec![],
        };
        assert_eq!(backup_result(&Ok(run(RunStatus::Good))), Some("good"));
        assert_eq!(
            backup_result(&Ok(run(RunStatus::Unverified))),
            Some("unverified")
        );
        assert_eq!(
            backup_result(&Err(BackupError::Destination("no stick".into()))),
            Some("failed")
        );
        assert_eq!(backup_result(&Err(BackupError::Busy)), None);
        // Every result counted is one the family shows from the start.
        for (k, r) in [
            ("backup", "good"),
            ("backup", "unverified"),
            ("restore", "failed"),
        ] {
            assert!(BACKUP_RUNS.known.contains(&[k, r]));
        }
    }
}
