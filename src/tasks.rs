//! Named background workers. Every task the daemon runs is spawned here with a
//! name and a kept handle; a worker that errors or panics is restarted with
//! exponential backoff, and its state is visible through [`Workers::statuses`].
//!
//! Core workers also beat a heartbeat: the systemd watchdog is fed only while
//! every core worker is alive (see [`Workers::check_core_alive`]).
//!
//! A leaf: it imports nothing of the crate, so every module can spawn here
//! without a cycle (each module's `spawn` knows its own deps).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// When to restart a worker that failed.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// A run that lasted this long resets the backoff to `initial`.
    pub reset_after: Duration,
}

impl RestartPolicy {
    /// Delay before restart number `failures` (1-based) of a run of failures.
    pub fn delay(&self, failures: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failures.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// Every worker the daemon runs, by the name the worker table, the logs and
/// `/metrics` (`arasul_worker_*{worker="..."}`) show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkerName {
    DbConnector,
    MetricsSampler,
    MetricsWriter,
    MetricsRetention,
    Reachability,
    Supervisor,
    UpdateApplier,
    SelfHealing,
    Notifications,
    WorkflowsRetention,
    AuthPersister,
    ApiKeys,
    Mdns,
    SystemdWatchdog,
    UsbUpdates,
    ModelPulls,
    Backups,
    /// A worker outside the daemon's own set (tests add a hung one, say).
    Other(&'static str),
}

impl WorkerName {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerName::DbConnector => "db-connector",
            WorkerName::MetricsSampler => "metrics-sampler",
            WorkerName::MetricsWriter => "metrics-writer",
            WorkerName::MetricsRetention => "metrics-retention",
            WorkerName::Reachability => "reachability",
            WorkerName::Supervisor => "supervisor",
            WorkerName::UpdateApplier => "update-applier",
            WorkerName::SelfHealing => "self-healing",
            WorkerName::Notifications => "notifications",
            WorkerName::WorkflowsRetention => "workflows-retention",
            WorkerName::AuthPersister => "auth-persister",
            WorkerName::ApiKeys => "api-keys",
            WorkerName::Mdns => "mdns",
            WorkerName::SystemdWatchdog => "systemd-watchdog",
            WorkerName::UsbUpdates => "usb-updates",
            WorkerName::ModelPulls => "model-pulls",
            WorkerName::Backups => "backups",
            WorkerName::Other(name) => name,
        }
    }
}

impl std::fmt::Display for WorkerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Core workers keep the daemon alive (their hang stops the watchdog);
/// auxiliary ones are restarted like any other but do not gate the watchdog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerKind {
    Core,
    Auxiliary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    Running,
    BackingOff,
    /// Returned on its own without error; not restarted.
    Finished,
    Stopped,
}

/// What the API shows of one worker.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WorkerStatus {
    pub name: String,
    pub kind: WorkerKind,
    pub state: WorkerState,
    pub errors: u64,
    pub restarts: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    /// Milliseconds since the worker last showed it was making progress.
    pub heartbeat_age_ms: u64,
}

struct Entry {
    name: WorkerName,
    kind: WorkerKind,
    status: Mutex<WorkerStatus>,
    heartbeat: Heartbeat,
    abort: Mutex<Option<tokio::task::AbortHandle>>,
}

/// A worker's proof of life: the time of its last beat, lock-free.
#[derive(Clone)]
pub struct Heartbeat {
    base: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new(base: Instant) -> Self {
        let hb = Heartbeat {
            base,
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        hb.beat();
        hb
    }
    pub fn beat(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
    pub fn age(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Handed to each run of a worker.
#[derive(Clone)]
pub struct WorkerCtx {
    pub name: WorkerName,
    pub cancel: CancellationToken,
    heartbeat: Heartbeat,
}

impl WorkerCtx {
    /// Call at least once per loop iteration (core workers must, within `stale_after`).
    pub fn beat(&self) {
        self.heartbeat.beat();
    }
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
    /// Sleeps, returning false if shutdown began instead.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    /// Like [`sleep`](Self::sleep), beating at least once a second, for
    /// core workers whose period is longer than `stale_after`.
    pub async fn sleep_beating(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            self.beat();
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            if !self.sleep(left.min(Duration::from_secs(1))).await {
                return false;
            }
        }
    }
}

/// The set of all workers of one daemon.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    tracker: TaskTracker,
    cancel: CancellationToken,
    policy: RestartPolicy,
    base: Instant,
    entries: Mutex<Vec<Arc<Entry>>>,
}

impl Workers {
    pub fn new(policy: RestartPolicy) -> Self {
        Workers {
            inner: Arc::new(Inner {
                tracker: TaskTracker::new(),
                cancel: CancellationToken::new(),
                policy,
                base: Instant::now(),
                entries: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Cancelled when shutdown begins; workers select on it.
    pub fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// Starts a worker. `run` is called again for every restart.
    pub fn spawn<F, Fut>(&self, name: WorkerName, kind: WorkerKind, mut run: F)
    where
        F: FnMut(WorkerCtx) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let entry = Arc::new(Entry {
            name,
            kind,
            status: Mutex::new(WorkerStatus {
                name: name.as_str().to_string(),
                kind,
                state: WorkerState::Running,
                errors: 0,
                restarts: 0,
                last_error: None,
                last_error_at: None,
                started_at: None,
                heartbeat_age_ms: 0,
            }),
            heartbeat: Heartbeat::new(self.inner.base),
            abort: Mutex::new(None),
        });
        self.inner.entries.lock().unwrap().push(entry.clone());
        let inner = self.inner.clone();
        let span = tracing::info_span!("worker", name = %name);
        self.inner.tracker.spawn(
            async move {
                let policy = inner.policy;
                let mut failures = 0u32;
                loop {
                    let ctx = WorkerCtx {
                        name: entry.name,
                        cancel: inner.cancel.child_token(),
                        heartbeat: entry.heartbeat.clone(),
                    };
                    entry.heartbeat.beat();
                    entry.set(|s| {
                        s.state = WorkerState::Running;
                        s.started_at = Some(Utc::now());
                    });
                    let started = Instant::now();
                    // Its own task, so a panic is caught as a JoinError and
                    // the handle can abort a worker that ignores cancellation.
                    let fut = std::panic::AssertUnwindSafe(run(ctx)).catch_unwind();
                    let handle = inner.tracker.spawn(fut);
                    *entry.abort.lock().unwrap() = Some(handle.abort_handle());
                    let outcome = match handle.await {
                        Ok(Ok(Ok(()))) => Ok(()),
                        Ok(Ok(Err(e))) => Err(format!("{e:#}")),
                        Ok(Err(panic)) => Err(format!("panicked: {}", panic_message(&panic))),
                        Err(e) if e.is_cancelled() => Err("aborted".to_string()),
                        Err(e) => Err(format!("join error: {e}")),
                    };
                    if inner.cancel.is_cancelled() {
                        entry.set(|s| s.state = WorkerState::Stopped);
                        tracing::info!("worker stopped");
                        return;
                    }
                    match outcome {
                        Ok(()) => {
                            entry.set(|s| s.state = WorkerState::Finished);
                            tracing::info!("worker finished");
                            return;
                        }
                        Err(msg) => {
                            if started.elapsed() >= policy.reset_after {
                                failures = 0;
                            }
                            failures += 1;
                            let delay = policy.delay(failures);
                            tracing::warn!(error = %msg, retry_in = ?delay, "worker failed");
                            entry.set(|s| {
                                s.state = WorkerState::BackingOff;
                                s.errors += 1;
                                s.last_error = Some(msg);
                                s.last_error_at = Some(Utc::now());
                            });
                            tokio::select! {
                                _ = inner.cancel.cancelled() => {
                                    entry.set(|s| s.state = WorkerState::Stopped);
                                    tracing::info!("worker stopped");
                                    return;
                                }
                                _ = tokio::time::sleep(delay) => {}
                            }
                            entry.set(|s| s.restarts += 1);
                        }
                    }
                }
            }
            .instrument_with(span),
        );
    }

    /// Starts a periodic worker: beats, awaits `round`, then sleeps
    /// `period` (beating) until the next round or shutdown. Each run of the
    /// worker starts from a fresh clone of `round`, so state it keeps across
    /// rounds is reset by a restart, as a loop's locals would be. An error
    /// from a round fails the run (restarted with backoff like any other).
    pub fn every<F, Fut>(&self, name: WorkerName, kind: WorkerKind, period: Duration, round: F)
    where
        F: FnMut(WorkerCtx) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn(name, kind, move |ctx| {
            let mut round = round.clone();
            async move {
                loop {
                    ctx.beat();
                    round(ctx.clone()).await?;
                    if !ctx.sleep_beating(period).await {
                        return Ok(());
                    }
                }
            }
        });
    }

    pub fn statuses(&self) -> Vec<WorkerStatus> {
        self.inner
            .entries
            .lock()
            .unwrap()
            .iter()
            .map(|e| {
                let mut s = e.status.lock().unwrap().clone();
                s.heartbeat_age_ms = e.heartbeat.age().as_millis() as u64;
                s
            })
            .collect()
    }

    /// Ok while every core worker is running with a fresh heartbeat, or is
    /// backing off before a restart (the runner itself is alive). Err names
    /// the first worker that is hung or gone.
    pub fn check_core_alive(&self, stale_after: Duration) -> Result<(), String> {
        for e in self.inner.entries.lock().unwrap().iter() {
            if e.kind != WorkerKind::Core {
                continue;
            }
            let state = e.status.lock().unwrap().state;
            match state {
                WorkerState::BackingOff => {}
                WorkerState::Running => {
                    let age = e.heartbeat.age();
                    if age > stale_after {
                        return Err(format!("{} has not made progress for {age:?}", e.name));
                    }
                }
                WorkerState::Finished | WorkerState::Stopped => {
                    return Err(format!("{} is not running", e.name));
                }
            }
        }
        Ok(())
    }

    /// Cancels every worker and waits up to `timeout`; those still running
    /// are aborted and named in the result.
    pub async fn shutdown(&self, timeout: Duration) -> Vec<String> {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(timeout, self.inner.tracker.wait())
            .await
            .is_ok()
        {
            return Vec::new();
        }
        let mut stuck = Vec::new();
        for e in self.inner.entries.lock().unwrap().iter() {
            if e.status.lock().unwrap().state != WorkerState::Stopped {
                if let Some(h) = e.abort.lock().unwrap().as_ref() {
                    h.abort();
                }
                stuck.push(e.name.as_str().to_string());
            }
        }
        // Aborted tasks finish at their next poll; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.tracker.wait()).await;
        stuck
    }
}

impl Entry {
    fn set(&self, f: impl FnOnce(&mut WorkerStatus)) {
        f(&mut self.status.lock().unwrap());
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Small helper so the runner future carries its span without pulling in
/// `tracing::Instrument` at every call site.
trait InstrumentWith: Future + Sized {
    fn instrument_with(self, span: tracing::Span) -> tracing::instrument::Instrumented<Self> {
        tracing::Instrument::instrument(self, span)
    }
}
impl<F: Future> InstrumentWith for F {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(8),
            reset_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn delay_doubles_and_caps() {
        let p = policy();
        let d: Vec<u64> = (1..=7).map(|n| p.delay(n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 8, 8, 8]);
        assert_eq!(p.delay(200), Duration::from_secs(8));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_worker_is_restarted_with_growing_delays() {
        let workers = Workers::new(policy());
        let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let s = starts.clone();
        let t0 = Instant::now();
        workers.spawn(WorkerName::Other("flaky"), WorkerKind::Core, move |_ctx| {
            s.lock().unwrap().push(Instant::now());
            async { anyhow::bail!("boom") }
        });
        tokio::time::sleep(Duration::from_secs(40)).await;
        let gaps: Vec<u64> = starts
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0).as_secs())
            .collect();
        // Starts at 0, then +1, +2, +4, +8, +8, +8 …
        assert_eq!(&gaps[..7], &[0, 1, 3, 7, 15, 23, 31]);
        let st = &workers.statuses()[0];
        assert_eq!(st.state, WorkerState::BackingOff);
        assert_eq!(st.last_error.as_deref(), Some("boom"));
        assert!(st.errors >= 7);
        assert!(workers.shutdown(Duration::from_secs(1)).await.is_empty());
        assert_eq!(workers.statuses()[0].state, WorkerState::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn panicking_worker_is_restarted_and_the_panic_recorded() {
        let workers = Workers::new(policy());
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        workers.spawn(
            WorkerName::Other("panicky"),
            WorkerKind::Auxiliary,
            move |ctx| {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        panic!("bad state {n}");
                    }
                    ctx.cancel.cancelled().await;
                    Ok(())
                }
            },
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let st = &workers.statuses()[0];
        assert_eq!(st.state, WorkerState::Running);
        assert_eq!(st.errors, 2);
        assert_eq!(st.restarts, 2);
        assert_eq!(st.last_error.as_deref(), Some("panicked: bad state 1"));
    }

    #[tokio::test(start_paused = true)]
    async fn long_healthy_run_resets_the_backoff() {
        let workers = Workers::new(policy());
        let starts = Arc::new(Mutex::new(Vec::<Instant>::new()));
        let s = starts.clone();
        let t0 = Instant::now();
        workers.spawn(
            WorkerName::Other("sometimes"),
            WorkerKind::Core,
            move |_| {
                let mut v = s.lock().unwrap();
                v.push(Instant::now());
                let n = v.len();
                async move {
                    // Runs 1-4 fail at once; run 5 fails after 100 s of health.
                    if n == 5 {
                        tokio::time::sleep(Duration::from_secs(100)).await;
                    }
                    anyhow::bail!("fail {n}")
                }
            },
        );
        tokio::time::sleep(Duration::from_secs(130)).await;
        let at: Vec<u64> = starts
            .lock()
            .unwrap()
            .iter()
            .map(|t| t.duration_since(t0).as_secs())
            .collect();
        // 0,1,3,7,15 then fails at 115 and restarts after the initial 1 s.
        assert_eq!(&at[..6], &[0, 1, 3, 7, 15, 116]);
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_worker_runs_each_period_and_a_restart_starts_it_afresh() {
        let workers = Workers::new(policy());
        let rounds = Arc::new(Mutex::new(Vec::<(u64, u32)>::new()));
        let r = rounds.clone();
        let t0 = Instant::now();
        let mut n = 0u32;
        let period = Duration::from_secs(10);
        let name = WorkerName::Other("periodic");
        workers.every(name, WorkerKind::Core, period, move |_ctx| {
            n += 1;
            r.lock().unwrap().push((t0.elapsed().as_secs(), n));
            let fail = n == 3;
            async move {
                anyhow::ensure!(!fail, "third round");
                Ok(())
            }
        });
        tokio::time::sleep(Duration::from_secs(35)).await;
        // Rounds at 0, 10, 20 (fails); restarted 1 s later with its count
        // back at 1, then every 10 s again.
        let at = rounds.lock().unwrap().clone();
        assert_eq!(at, vec![(0, 1), (10, 2), (20, 3), (21, 1), (31, 2)]);
        let st = &workers.statuses()[0];
        assert_eq!(
            (st.name.as_str(), st.errors, st.restarts),
            ("periodic", 1, 1)
        );
        assert_eq!(st.state, WorkerState::Running);
        // Asleep between rounds, it still beats: a core one stays alive.
        assert!(st.heartbeat_age_ms <= 1000, "{}", st.heartbeat_age_ms);
        assert_eq!(workers.check_core_alive(Duration::from_secs(5)), Ok(()));
        assert!(workers.shutdown(Duration::from_secs(1)).await.is_empty());
        assert_eq!(workers.statuses()[0].state, WorkerState::Stopped);
        assert_eq!(rounds.lock().unwrap().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn hung_core_worker_is_reported_and_a_beating_one_is_not() {
        let workers = Workers::new(policy());
        workers.spawn(
            WorkerName::Other("beating"),
            WorkerKind::Core,
            |ctx| async move {
                while ctx.sleep(Duration::from_secs(1)).await {
                    ctx.beat();
                }
                Ok(())
            },
        );
        workers.spawn(
            WorkerName::Other("aux-hung"),
            WorkerKind::Auxiliary,
            |_| async {
                std::future::pending::<()>().await;
                Ok(())
            },
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(workers.check_core_alive(Duration::from_secs(5)), Ok(()));

        workers.spawn(WorkerName::Other("hung"), WorkerKind::Core, |_| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(workers.check_core_alive(Duration::from_secs(5)), Ok(()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let err = workers
            .check_core_alive(Duration::from_secs(5))
            .unwrap_err();
        assert!(err.starts_with("hung "), "{err}");

        // Shutdown aborts the workers that ignore cancellation and names them.
        let stuck = workers.shutdown(Duration::from_secs(2)).await;
        assert_eq!(stuck, vec!["aux-hung".to_string(), "hung".to_string()]);
    }
}
