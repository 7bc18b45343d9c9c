//! Metrics: pure collectors (`collect`), the in-memory history (`ring`), and
//! the hub the workers feed: the latest sample (watch), the live stream
//! (broadcast of pre-serialised JSON), the ring, and the write-behind to
//! Postgres that survives database outages.

pub mod collect;
pub mod counters;
pub mod prometheus;
pub mod reach;
pub mod ring;
pub mod status;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::{broadcast, watch};

use crate::config::{Config, MetricsConfig};
use crate::db::Db;
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};
use collect::{GpuBackendChoice, PlatformInfo, Probe, ProbeRoots, Sample};
use reach::Reachability;
use ring::Ring;

/// Rows per INSERT when flushing a long backlog.
const FLUSH_BATCH: usize = 5_000;

/// Shared by the sampler, the writer, and the API.
#[derive(Clone)]
pub struct MetricsHub {
    inner: Arc<HubInner>,
}

struct HubInner {
    latest: watch::Sender<Option<Arc<Sample>>>,
    stream: broadcast::Sender<Arc<str>>,
    ring: Mutex<Ring>,
    reach: watch::Sender<Reachability>,
    platform: PlatformInfo,
    gpu_backend: &'static str,
    /// Every n-th sample goes to the live stream.
    stream_every: u64,
    stream_clients: AtomicUsize,
}

impl MetricsHub {
    pub fn new(cfg: &MetricsConfig, platform: PlatformInfo, gpu_backend: &'static str) -> Self {
        let interval = cfg.interval.as_millis().max(1);
        let capacity = (cfg.ring.as_millis() / interval).max(1) as usize;
        let stream_every = (cfg.stream_interval.as_millis() / interval).max(1) as u64;
        MetricsHub {
            inner: Arc::new(HubInner {
                latest: watch::channel(None).0,
                stream: broadcast::channel(16).0,
                ring: Mutex::new(Ring::new(capacity)),
                reach: watch::channel(Reachability::default()).0,
                platform,
                gpu_backend,
                stream_every,
                stream_clients: AtomicUsize::new(0),
            }),
        }
    }

    /// Takes one sample into the latest value, the ring and (every n-th) the stream.
    pub fn publish(&self, sample: Sample) {
        let sample = Arc::new(sample);
        let row = self.inner.ring.lock().unwrap().push(&sample);
        if (row.seq - 1).is_multiple_of(self.inner.stream_every)
            && let Ok(json) = serde_json::to_string(sample.as_ref())
        {
            // No receivers is fine; a slow receiver lags, never blocks us.
            let _ = self.inner.stream.send(Arc::from(json));
        }
        self.inner.latest.send_replace(Some(sample));
    }

    pub fn latest(&self) -> Option<Arc<Sample>> {
        self.inner.latest.borrow().clone()
    }
    pub fn subscribe_stream(&self) -> broadcast::Receiver<Arc<str>> {
        self.inner.stream.subscribe()
    }
    pub fn with_ring<T>(&self, f: impl FnOnce(&Ring) -> T) -> T {
        f(&self.inner.ring.lock().unwrap())
    }
    pub fn platform(&self) -> &PlatformInfo {
        &self.inner.platform
    }
    pub fn gpu_backend(&self) -> &'static str {
        self.inner.gpu_backend
    }
    pub fn reachability(&self) -> Reachability {
        self.inner.reach.borrow().clone()
    }
    pub fn set_reachability(&self, r: Reachability) {
        self.inner.reach.send_replace(r);
    }

    /// Counts a live-stream client for as long as the guard lives.
    pub fn stream_client(&self) -> StreamClientGuard {
        self.inner.stream_clients.fetch_add(1, Ordering::Relaxed);
        StreamClientGuard(self.clone())
    }
    pub fn stream_clients(&self) -> usize {
        self.inner.stream_clients.load(Ordering::Relaxed)
    }

    /// Writes every pending row (in order) and any recorded gap. Returns
    /// the number of rows written; on error the rows stay pending.
    pub async fn flush(&self, db: &Db) -> anyhow::Result<u64> {
        let pool = db.pool();
        let gap = self.inner.ring.lock().unwrap().take_gap();
        if let Some(g) = gap {
            if let Err(e) = crate::db::metrics::insert_gap(pool, &g).await {
                self.inner.ring.lock().unwrap().restore_gap(g);
                return Err(e.into());
            }
            tracing::warn!(
                dropped = g.dropped,
                "metrics buffer overflowed while the database was down; gap recorded"
            );
        }
        let mut written = 0;
        loop {
            let batch = self.inner.ring.lock().unwrap().pending_batch(FLUSH_BATCH);
            let Some(last) = batch.last().map(|r| r.seq) else {
                return Ok(written);
            };
            crate::db::metrics::insert_rows(pool, &batch).await?;
            self.inner.ring.lock().unwrap().mark_persisted(last);
            written += batch.len() as u64;
        }
    }
}

pub struct StreamClientGuard(MetricsHub);
impl Drop for StreamClientGuard {
    fn drop(&mut self) {
        self.0.inner.stream_clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The probe (GPU backend chosen once, here), the hub, and the sampler
/// (core), writer, retention and reachability workers. The hub is what the
/// API, healing and the live stream read.
pub fn spawn(workers: &Workers, config: &Config, db: &Db) -> MetricsHub {
    let m = &config.metrics;
    let choice = match m.gpu_backend.as_str() {
        "nvml" => GpuBackendChoice::Nvml,
        "tegra" => GpuBackendChoice::Tegra,
        "none" => GpuBackendChoice::None,
        _ => GpuBackendChoice::Auto,
    };
    let p = &config.paths;
    let probe = Probe::new(
        ProbeRoots {
            proc_root: p.proc_root.clone(),
            sys_root: p.sys_root.clone(),
            etc_root: p.etc_root.clone(),
            data_path: p.data_path.clone(),
        },
        choice,
    );
    let hub = MetricsHub::new(m, probe.platform(), probe.gpu_backend());
    let probe = Arc::new(Mutex::new(probe));
    let (h, interval) = (hub.clone(), m.interval);
    workers.spawn(WorkerName::MetricsSampler, WorkerKind::Core, move |ctx| {
        run_sampler(ctx, h.clone(), probe.clone(), interval)
    });
    let (h, d, every) = (hub.clone(), db.clone(), m.persist_every);
    workers.spawn(
        WorkerName::MetricsWriter,
        WorkerKind::Auxiliary,
        move |ctx| run_writer(ctx, h.clone(), d.clone(), every),
    );
    crate::db::retention::spawn(
        workers,
        WorkerName::MetricsRetention,
        db.clone(),
        crate::db::metrics::AGING,
        m.retention,
    );
    let hook = match m.webhook_check.as_str() {
        "auto" => match &config.http.tls {
            Some(tls) => reach::front_door_webhook(tls.listen, true),
            None => reach::front_door_webhook(config.http.listen, false),
        },
        url => url.to_owned(),
    };
    reach::spawn(workers, hub.clone(), m.internet_check.clone(), hook);
    hub
}

/// The sampler worker: one full sample every `interval`.
async fn run_sampler(
    ctx: WorkerCtx,
    hub: MetricsHub,
    probe: Arc<Mutex<Probe>>,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.cancel.cancelled() => return Ok(()),
        }
        ctx.beat();
        let probe = probe.clone();
        let sample =
            tokio::task::spawn_blocking(move || probe.lock().unwrap().sample(Utc::now())).await?;
        hub.publish(sample);
    }
}

/// The writer worker: flushes every `persist_every`, at once when the
/// database comes back, and a last time at shutdown.
async fn run_writer(
    ctx: WorkerCtx,
    hub: MetricsHub,
    db: Db,
    every: Duration,
) -> anyhow::Result<()> {
    let mut db_status = db.subscribe();
    let mut failing = false;
    loop {
        tokio::select! {
            slept = ctx.sleep_beating(every) => if !slept { break },
            Ok(()) = db_status.changed() => {
                if !db_status.borrow_and_update().up {
                    continue; // it went down: wait for it to return
                }
            }
        }
        match hub.flush(&db).await {
            Ok(n) => {
                if failing {
                    tracing::info!(rows = n, "metrics backlog written");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    let pending = hub.with_ring(|r| r.pending());
                    tracing::warn!(error = %e, pending, "metrics not written; keeping them in memory");
                }
                failing = true;
            }
        }
    }
    // A last flush, so a clean stop loses nothing (skipped while the
    // database is down: it would only hold up the shutdown).
    if db.status().up {
        match tokio::time::timeout(Duration::from_secs(3), hub.flush(&db)).await {
            Ok(Ok(n)) => tracing::info!(rows = n, "final metrics flush"),
            Ok(Err(e)) => tracing::warn!(error = %e, "final metrics flush failed"),
            Err(_) => tracing::warn!("final metrics flush timed out"),
        }
    }
    let (taken, persisted, dropped) =
        hub.with_ring(|r| (r.taken(), r.persisted_total(), r.dropped_total()));
    tracing::info!(
        taken,
        persisted,
        dropped,
        "metrics writer stopped: samples_taken={taken} persisted={persisted} dropped={dropped}"
    );
    Ok(())
}
