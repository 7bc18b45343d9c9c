//! One queue of model downloads, worked by the `model-pulls` worker.
//!
//! - A pull is admitted first ([`super::admission`]): a model that cannot fit
//!   on the disk or in memory is refused with the numbers, nothing started.
//! - One pull runs at a time. Its progress (bytes, rate over the last
//!   10 s, ETA) is in [`Pull`]; the runtime's own lines are broadcast to
//!   whoever follows it (the SSE route).
//! - A pull whose bytes stop growing for `models.stall_timeout` is cut and
//!   started again: Ollama keeps the partial blobs and resumes them. After
//!   `models.retries` such tries it fails. So does a pull whose layers,
//!   once the runtime names their sizes, would not fit the disk.
//! - The queue is a file (`<state_dir>/models/pulls.json`, written
//!   atomically): a daemon restart resumes the pull that was running and
//!   keeps the ones waiting.
//! - Partial downloads (`blobs/sha256-…-partial`) are listed with their size
//!   and can be removed while no pull runs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::admission::{self, Footprint, Lang, Refusal, Room, Shortfall};
use super::{Ai, AiError, Backend};
use crate::docker::SupervisorHandle;
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// `models:` in arasuld.yaml.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Where model manifests (their sizes) are read before a pull; empty:
    /// only the curated list's sizes (an offline box).
    pub registry: String,
    /// A pull whose bytes do not grow this long is cut and resumed.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// Resumptions (after a stall or a broken stream) before it fails.
    pub retries: u32,
    /// Kept free on the model store's disk (`2g`, `500m`, bytes).
    pub disk_margin: String,
    /// Memory kept for the system and the other services (`1g`).
    pub memory_reserve: String,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            registry: "https://registry.ollama.ai".into(),
            stall_timeout: Duration::from_secs(60),
            retries: 5,
            disk_margin: "2g".into(),
            memory_reserve: "1g".into(),
        }
    }
}

impl ModelsConfig {
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut errs = Vec::new();
        for (key, v) in [
            ("models.disk_margin", &self.disk_margin),
            ("models.memory_reserve", &self.memory_reserve),
        ] {
            if let Err(e) = crate::docker::catalog::parse_bytes(v).and_then(|n| {
                if n < 0 {
                    Err("must not be negative".into())
                } else {
                    Ok(n)
                }
            }) {
                errs.push((key.to_string(), e));
            }
        }
        let r = &self.registry;
        if !(r.is_empty() || r.starts_with("http://") || r.starts_with("https://")) {
            errs.push((
                "models.registry".into(),
                "must be an http:// or https:// URL, or empty".into(),
            ));
        }
        if self.stall_timeout < Duration::from_secs(1) {
            errs.push(("models.stall_timeout".into(), "must be at least 1s".into()));
        }
        errs
    }

    fn bytes(v: &str) -> u64 {
        crate::docker::catalog::parse_bytes(v).map_or(0, |n| n.max(0) as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullState {
    Queued,
    Running,
    /// Stalled or cut; waits before it resumes.
    Retrying,
    Done,
    Failed,
    Cancelled,
}

impl PullState {
    pub fn is_active(self) -> bool {
        matches!(
            self,
            PullState::Queued | PullState::Running | PullState::Retrying
        )
    }
}

/// One model download.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pull {
    pub id: u64,
    pub model: String,
    /// `llm` or `embeddings`: the runtime it goes to.
    pub service: String,
    pub state: PullState,
    /// The runtime's last status line (`pulling 6a0746a1ec1a`, `verifying
    /// sha256 digest`) or why it waits.
    pub status: Option<String>,
    /// Bytes of the layers the runtime has named so far.
    pub total: u64,
    pub completed: u64,
    /// Bytes per second over the last 10 s.
    pub rate: Option<f64>,
    pub eta_seconds: Option<u64>,
    /// Tries so far (the first one included).
    pub attempts: u32,
    /// Times it stalled and was resumed.
    pub stalls: u32,
    /// Why it failed (`insufficient_disk`, `insufficient_memory`,
    /// `pull_failed`, `stalled`).
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What followers of the queue see.
#[derive(Clone, Debug)]
pub enum QueueEvent {
    /// A line of the runtime for pull `id` (with `rate`/`eta_seconds` added).
    Line(u64, Value),
    /// The pull ended (done, failed or cancelled).
    Finished(Pull),
}

/// How many finished pulls the queue remembers.
const KEEP_FINISHED: usize = 20;

#[derive(Default, Serialize, Deserialize)]
struct Saved {
    next_id: u64,
    pulls: Vec<Pull>,
}

struct Inner {
    file: Option<PathBuf>,
    saved: Mutex<Saved>,
    wake: Notify,
    events: broadcast::Sender<QueueEvent>,
    cancels: Mutex<HashMap<u64, CancellationToken>>,
}

/// The queue, shared by the API and the worker.
#[derive(Clone)]
pub struct PullQueue {
    inner: Arc<Inner>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum CancelError {
    NotFound,
    /// It had already ended (its state).
    Finished(PullState),
}

impl PullQueue {
    /// The queue kept in `file` (None: in memory only). A pull that was
    /// running when the daemon stopped is queued again, first.
    pub fn open(file: Option<PathBuf>) -> PullQueue {
        let mut saved: Saved = file
            .as_deref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| match serde_json::from_slice(&b) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("model pull queue unreadable, starting empty: {e}");
                    None
                }
            })
            .unwrap_or_default();
        for p in &mut saved.pulls {
            if matches!(p.state, PullState::Running | PullState::Retrying) {
                p.state = PullState::Queued;
                p.status = Some("resuming after a restart".into());
                p.rate = None;
                p.eta_seconds = None;
            }
        }
        PullQueue {
            inner: Arc::new(Inner {
                file,
                saved: Mutex::new(saved),
                wake: Notify::new(),
                events: broadcast::channel(1024).0,
                cancels: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// `<state_dir>/models/pulls.json`
    pub fn file_in(state_dir: &Path) -> PathBuf {
        state_dir.join("models").join("pulls.json")
    }

    fn saved(&self) -> std::sync::MutexGuard<'_, Saved> {
        self.inner.saved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Newest first.
    pub fn list(&self) -> Vec<Pull> {
        let mut v = self.saved().pulls.clone();
        v.reverse();
        v
    }

    pub fn get(&self, id: u64) -> Option<Pull> {
        self.saved().pulls.iter().find(|p| p.id == id).cloned()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<QueueEvent> {
        self.inner.events.subscribe()
    }

    /// Adds a pull, or returns the one already waiting or running for the
    /// same model and runtime (`false`: not new).
    pub fn enqueue(&self, model: &str, backend: Backend) -> (Pull, bool) {
        let service = service_name(backend);
        let model = admission::full_name(model);
        let (pull, new) = {
            let mut s = self.saved();
            if let Some(p) = s
                .pulls
                .iter()
                .find(|p| p.state.is_active() && p.model == model && p.service == service)
            {
                return (p.clone(), false);
            }
            s.next_id += 1;
            let p = Pull {
                id: s.next_id,
                model,
                service: service.into(),
                state: PullState::Queued,
                status: None,
                total: 0,
                completed: 0,
                rate: None,
                eta_seconds: None,
                attempts: 0,
                stalls: 0,
                error_code: None,
                error: None,
                requested_at: Utc::now(),
                started_at: None,
                finished_at: None,
            };
            s.pulls.push(p.clone());
            (p, true)
        };
        self.persist();
        self.inner.wake.notify_one();
        (pull, new)
    }

    /// Cancels a waiting or running pull (the runtime keeps what it has
    /// downloaded as partial blobs).
    pub fn cancel(&self, id: u64) -> Result<Pull, CancelError> {
        let p = {
            let mut s = self.saved();
            let p = s
                .pulls
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or(CancelError::NotFound)?;
            if !p.state.is_active() {
                return Err(CancelError::Finished(p.state));
            }
            p.state = PullState::Cancelled;
            p.status = Some("cancelled".into());
            p.rate = None;
            p.eta_seconds = None;
            p.finished_at = Some(Utc::now());
            p.clone()
        };
        if let Some(t) = self.cancel_slot(id) {
            t.cancel();
        }
        self.finish_cleanup();
        self.persist();
        crate::metrics::counters::model_pull(p.state);
        let _ = self.inner.events.send(QueueEvent::Finished(p.clone()));
        Ok(p)
    }

    /// Whether a pull is running or about to resume for `backend`.
    pub fn busy(&self, backend: Backend) -> bool {
        let service = service_name(backend);
        self.saved().pulls.iter().any(|p| {
            p.service == service && matches!(p.state, PullState::Running | PullState::Retrying)
        })
    }

    fn cancel_slot(&self, id: u64) -> Option<CancellationToken> {
        self.inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut Pull)) -> Option<Pull> {
        let mut s = self.saved();
        let p = s.pulls.iter_mut().find(|p| p.id == id)?;
        // A cancel from the API wins over the worker's late updates.
        if p.state == PullState::Cancelled {
            return None;
        }
        f(p);
        Some(p.clone())
    }

    fn finish(&self, id: u64, f: impl FnOnce(&mut Pull)) {
        let done = self.update(id, |p| {
            f(p);
            p.rate = None;
            p.eta_seconds = None;
            p.finished_at = Some(Utc::now());
        });
        self.finish_cleanup();
        self.persist();
        if let Some(p) = done {
            crate::metrics::counters::model_pull(p.state);
            let _ = self.inner.events.send(QueueEvent::Finished(p));
        }
    }

    /// Forgets the oldest finished pulls beyond [`KEEP_FINISHED`].
    fn finish_cleanup(&self) {
        let mut s = self.saved();
        let finished = s.pulls.iter().filter(|p| !p.state.is_active()).count();
        let mut drop = finished.saturating_sub(KEEP_FINISHED);
        s.pulls.retain(|p| {
            if drop > 0 && !p.state.is_active() {
                drop -= 1;
                false
            } else {
                true
            }
        });
    }

    fn next_queued(&self) -> Option<Pull> {
        self.saved()
            .pulls
            .iter()
            .find(|p| p.state == PullState::Queued)
            .cloned()
    }

    /// Writes the queue (atomically); a failure is logged, the queue goes on
    /// in memory.
    fn persist(&self) {
        let Some(file) = &self.inner.file else { return };
        let bytes = {
            let s = self.saved();
            serde_json::to_vec_pretty(&*s)
        };
        let res = bytes.map_err(std::io::Error::other).and_then(|b| {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::os::fs::write_atomic(file, &b, crate::os::fs::PRIVATE)
        });
        if let Err(e) = res {
            tracing::warn!(file = %file.display(), "model pull queue not saved: {e}");
        }
    }
}

pub fn service_name(b: Backend) -> &'static str {
    match b {
        Backend::Llm => "llm",
        Backend::Embeddings => "embeddings",
    }
}

pub fn backend_of(service: &str) -> Option<Backend> {
    match service {
        "llm" => Some(Backend::Llm),
        "embeddings" => Some(Backend::Embeddings),
        _ => None,
    }
}

/// What the worker and the admission checks need.
#[derive(Clone)]
pub struct PullDeps {
    pub queue: PullQueue,
    pub services: SupervisorHandle,
    pub config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    pub ai: Ai,
    pub registry: reqwest::Client,
}

impl PullDeps {
    pub fn new(
        queue: PullQueue,
        services: SupervisorHandle,
        config: tokio::sync::watch::Receiver<Arc<crate::config::Config>>,
    ) -> PullDeps {
        PullDeps {
            queue,
            services,
            config,
            ai: Ai::new(),
            registry: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(15))
                .build()
                .expect("an HTTP client builds"),
        }
    }

    fn config(&self) -> Arc<crate::config::Config> {
        self.config.borrow().clone()
    }

    /// The runtime's catalog entry (for its store and memory limit).
    fn spec(&self, backend: Backend) -> Option<crate::docker::catalog::ServiceSpec> {
        let cfg = self.config();
        let catalog = crate::docker::load_catalog(&cfg.paths.services_file).ok()?;
        catalog
            .services
            .into_iter()
            .find(|s| s.role == backend.role())
    }

    /// The host directory of the runtime's model store, when it is a bind mount.
    pub fn store(&self, backend: Backend) -> Option<PathBuf> {
        self.spec(backend).as_ref().and_then(admission::store_dir)
    }

    /// The model's manifest from the registry (None: offline or unknown).
    async fn manifest(&self, registry: &str, model: &str) -> Option<admission::Manifest> {
        if registry.is_empty() {
            return None;
        }
        let url = admission::manifest_url(registry, model);
        let resp = self
            .registry
            .get(&url)
            .header(
                reqwest::header::ACCEPT,
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => match r.json().await {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::debug!(%url, "manifest unreadable: {e}");
                    None
                }
            },
            Ok(r) => {
                tracing::debug!(%url, status = %r.status(), "no manifest");
                None
            }
            Err(e) => {
                tracing::debug!(%url, "registry not reachable: {e}");
                None
            }
        }
    }

    /// What the model asks (None where nothing is known) and what the box has.
    pub async fn assess(&self, model: &str, backend: Backend) -> (Option<Footprint>, Room) {
        let cfg = self.config();
        let spec = self.spec(backend);
        let store = spec.as_ref().and_then(admission::store_dir);
        let curated = admission::curated_entry(model);
        let need = match self.manifest(&cfg.models.registry, model).await {
            Some(m) => Some(Footprint {
                download: m.missing_bytes(store.as_deref()),
                memory: curated
                    .as_ref()
                    .map_or_else(|| admission::memory_estimate(m.weights()), |c| c.memory),
            }),
            None => match curated {
                Some(c) => Some(Footprint {
                    download: if self.installed(model, backend).await {
                        0
                    } else {
                        c.download
                    },
                    memory: c.memory,
                }),
                None => None,
            },
        };
        (
            need,
            self.room(backend, spec.as_ref(), store.as_deref()).await,
        )
    }

    async fn installed(&self, model: &str, backend: Backend) -> bool {
        let Ok(t) = super::locate(&self.services.services(), backend) else {
            return false;
        };
        let full = admission::full_name(model);
        self.ai
            .tags(&t)
            .await
            .is_ok_and(|tags| tags.iter().any(|m| admission::full_name(&m.name) == full))
    }

    async fn room(
        &self,
        backend: Backend,
        spec: Option<&crate::docker::catalog::ServiceSpec>,
        store: Option<&Path>,
    ) -> Room {
        let cfg = self.config();
        let disk_dir =
            store.map_or_else(|| cfg.paths.data_path.clone(), admission::existing_ancestor);
        let disk_free =
            crate::metrics::collect::disk_usage(&disk_dir).map_or(u64::MAX, |d| d.free_bytes);
        let meminfo = std::fs::read(cfg.paths.proc_root.join("meminfo"))
            .ok()
            .and_then(|b| crate::metrics::collect::parse_meminfo(&b).ok());
        // What the runtime's loaded models hold comes back when it unloads them.
        let loaded: u64 = match super::locate(&self.services.services(), backend) {
            Ok(t) => self
                .ai
                .ps(&t)
                .await
                .map(|v| v.iter().map(|m| m.size).sum())
                .unwrap_or(0),
            Err(_) => 0,
        };
        let reserve = ModelsConfig::bytes(&cfg.models.memory_reserve);
        let mut memory = meminfo.map_or(u64::MAX, |m| {
            (m.available_bytes + loaded).saturating_sub(reserve)
        });
        let limit = spec
            .and_then(|s| s.memory_limit.as_deref())
            .and_then(|l| crate::docker::catalog::parse_bytes(l).ok())
            .map(|n| n.max(0) as u64);
        let mut memory_limit = None;
        if let Some(l) = limit
            && l <= memory
        {
            memory = l;
            memory_limit = Some(l);
        }
        Room {
            disk_free,
            disk_margin: ModelsConfig::bytes(&cfg.models.disk_margin),
            memory,
            memory_limit,
        }
    }

    /// Before a chat loads a model: an installed model that is not loaded
    /// must fit the memory the runtime can have (disk is not asked).
    pub async fn admit_load(&self, t: &super::Target, model: &str) -> Result<(), Refusal> {
        let full = admission::full_name(model);
        let loaded = self.ai.ps(t).await.unwrap_or_default();
        if loaded.iter().any(|m| admission::full_name(&m.name) == full) {
            return Ok(());
        }
        // Not installed (or the runtime cannot say): the runtime answers.
        let Some(size) = self.ai.tags(t).await.ok().and_then(|tags| {
            tags.iter()
                .find(|m| admission::full_name(&m.name) == full)
                .map(|m| m.size)
        }) else {
            return Ok(());
        };
        let memory = admission::curated_entry(model)
            .map_or_else(|| admission::memory_estimate(size), |c| c.memory);
        let spec = self.spec(t.backend);
        let store = spec.as_ref().and_then(admission::store_dir);
        let room = self.room(t.backend, spec.as_ref(), store.as_deref()).await;
        let need = Footprint {
            download: 0,
            memory,
        };
        admission::check(
            model,
            need,
            Room {
                disk_free: u64::MAX,
                disk_margin: 0,
                ..room
            },
        )
    }

    /// The admission check: Ok, or the refusal with the numbers.
    pub async fn admit(&self, model: &str, backend: Backend) -> Result<(), Refusal> {
        match self.assess(model, backend).await {
            (Some(need), room) => admission::check(model, need, room),
            // Sizes unknown: the worker checks each layer as the runtime names it.
            (None, _) => Ok(()),
        }
    }
}

/// A partial download in a runtime's store.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Partial {
    pub service: String,
    /// `sha256:…`
    pub digest: String,
    /// Bytes on disk.
    pub bytes: u64,
    pub modified_at: Option<DateTime<Utc>>,
}

/// `blobs/sha256-<hex>-partial` in `store` (the `-partial-N` files beside
/// them are Ollama's chunk bookkeeping and go with them).
pub fn partials(store: &Path, service: &str) -> Vec<Partial> {
    let Ok(rd) = std::fs::read_dir(store.join("blobs")) else {
        return Vec::new();
    };
    let mut out: Vec<Partial> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let hex = name.strip_prefix("sha256-")?.strip_suffix("-partial")?;
            let md = e.metadata().ok()?;
            Some(Partial {
                service: service.to_string(),
                digest: format!("sha256:{hex}"),
                // Sparse files: what is really on the disk.
                bytes: std::os::unix::fs::MetadataExt::blocks(&md)
                    .saturating_mul(512)
                    .min(md.len()),
                modified_at: md.modified().ok().map(DateTime::<Utc>::from),
            })
        })
        .collect();
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    out
}

/// Removes every partial download of `store`; returns (files, bytes).
pub fn remove_partials(store: &Path) -> std::io::Result<(u64, u64)> {
    let Ok(rd) = std::fs::read_dir(store.join("blobs")) else {
        return Ok((0, 0));
    };
    let (mut files, mut bytes) = (0, 0);
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("sha256-") && name.contains("-partial") {
            let len = e
                .metadata()
                .map(|m| {
                    std::os::unix::fs::MetadataExt::blocks(&m)
                        .saturating_mul(512)
                        .min(m.len())
                })
                .unwrap_or(0);
            std::fs::remove_file(e.path())?;
            files += 1;
            if name.ends_with("-partial") {
                bytes += len;
            }
        }
    }
    Ok((files, bytes))
}

/// Rate over a sliding window of (time, bytes).
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(10);

    fn new() -> Rate {
        Rate {
            samples: VecDeque::new(),
        }
    }

    fn add(&mut self, at: Instant, bytes: u64) -> Option<f64> {
        self.samples.push_back((at, bytes));
        while let Some(&(t, _)) = self.samples.front() {
            if at.duration_since(t) > Self::WINDOW && self.samples.len() > 2 {
                self.samples.pop_front();
            } else {
                break;
            }
        }
        let (t0, b0) = *self.samples.front()?;
        let secs = at.duration_since(t0).as_secs_f64();
        (secs >= 0.2).then(|| bytes.saturating_sub(b0) as f64 / secs)
    }
}

/// How one try ended.
enum TryEnd {
    Done,
    /// For good: a runtime error, a refusal.
    Failed(&'static str, String),
    /// Worth resuming: a stall, a broken stream.
    Transient {
        stalled: bool,
        why: String,
    },
    /// Cancelled through the API.
    Cancelled,
    /// The daemon is stopping: stays queued for the next start.
    Shutdown,
}

/// Spawns the `model-pulls` worker on `deps`' queue and hands `deps`
/// back, for the API's admission checks and queue.
pub fn spawn(workers: &Workers, deps: PullDeps) -> PullDeps {
    let d = deps.clone();
    workers.spawn(WorkerName::ModelPulls, WorkerKind::Auxiliary, move |ctx| {
        run(ctx, d.clone())
    });
    deps
}

/// The `model-pulls` worker.
async fn run(ctx: WorkerCtx, deps: PullDeps) -> anyhow::Result<()> {
    loop {
        ctx.beat();
        let Some(pull) = deps.queue.next_queued() else {
            tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                _ = deps.queue.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            continue;
        };
        work_on(&ctx, &deps, pull).await;
        if ctx.is_cancelled() {
            return Ok(());
        }
    }
}

/// Works on one pull until it is done, failed, cancelled, or the daemon stops.
async fn work_on(ctx: &WorkerCtx, deps: &PullDeps, pull: Pull) {
    let q = &deps.queue;
    let id = pull.id;
    let Some(backend) = backend_of(&pull.service) else {
        q.finish(id, |p| {
            p.state = PullState::Failed;
            p.error_code = Some("pull_failed".into());
            p.error = Some(format!("unknown runtime {:?}", p.service));
        });
        return;
    };
    let token = CancellationToken::new();
    q.inner
        .cancels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, token.clone());
    let _slot = CancelSlot(q.clone(), id);
    loop {
        // The runtime must be up; waiting for it costs no try.
        let target = match super::locate(&deps.services.services(), backend) {
            Ok(t) => t,
            Err(e) => {
                q.update(id, |p| {
                    p.state = PullState::Queued;
                    p.status = Some(format!("waiting: {e}"));
                });
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
                ctx.beat();
                continue;
            }
        };
        if let Err(r) = deps.admit(&pull.model, backend).await {
            q.finish(id, |p| {
                p.state = PullState::Failed;
                p.error_code = Some(r.code().into());
                p.error = Some(r.message(Lang::En));
            });
            return;
        }
        let Some(_) = q.update(id, |p| {
            p.state = PullState::Running;
            p.attempts += 1;
            p.started_at.get_or_insert_with(Utc::now);
            p.error = None;
        }) else {
            return;
        };
        q.persist();
        let end = one_try(ctx, deps, &token, id, backend, &target, &pull.model).await;
        let cfg = deps.config();
        match end {
            TryEnd::Done => {
                q.finish(id, |p| {
                    p.state = PullState::Done;
                    p.status = Some("success".into());
                    p.completed = p.total.max(p.completed);
                });
                tracing::info!(model = %pull.model, "model pulled");
                return;
            }
            TryEnd::Failed(code, why) => {
                tracing::warn!(model = %pull.model, "model pull failed: {why}");
                q.finish(id, |p| {
                    p.state = PullState::Failed;
                    p.error_code = Some(code.into());
                    p.error = Some(why);
                });
                return;
            }
            TryEnd::Cancelled | TryEnd::Shutdown => return,
            TryEnd::Transient { stalled, why } => {
                let tries = q.get(id).map_or(0, |p| p.attempts);
                if tries > cfg.models.retries {
                    tracing::warn!(model = %pull.model, "model pull given up after {tries} tries: {why}");
                    q.finish(id, |p| {
                        p.state = PullState::Failed;
                        p.error_code = Some(if stalled { "stalled" } else { "pull_failed" }.into());
                        p.error = Some(format!("{why}; gave up after {tries} tries"));
                    });
                    return;
                }
                let wait = Duration::from_secs(1 << tries.min(5)).min(Duration::from_secs(30));
                tracing::info!(model = %pull.model, "model pull resumes in {wait:?}: {why}");
                q.update(id, |p| {
                    p.state = PullState::Retrying;
                    if stalled {
                        p.stalls += 1;
                    }
                    p.status = Some(format!("{why}; resuming in {} s", wait.as_secs()));
                    p.rate = None;
                    p.eta_seconds = None;
                });
                q.persist();
                let _ = q.inner.events.send(QueueEvent::Line(
                    id,
                    serde_json::json!({"status": format!("{why}; resuming")}),
                ));
                tokio::select! {
                    _ = ctx.cancel.cancelled() => return,
                    _ = token.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// Removes the pull's cancel token when its work ends.
struct CancelSlot(PullQueue, u64);

impl Drop for CancelSlot {
    fn drop(&mut self) {
        self.0
            .inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// One request to the runtime's `/api/pull`, followed to its end.
async fn one_try(
    ctx: &WorkerCtx,
    deps: &PullDeps,
    token: &CancellationToken,
    id: u64,
    backend: Backend,
    target: &super::Target,
    model: &str,
) -> TryEnd {
    let q = &deps.queue;
    let cfg = deps.config();
    let stall = cfg.models.stall_timeout;
    let mut lines = match deps.ai.pull_lines(target, model).await {
        Ok(l) => l,
        Err(AiError::NotFound(m) | AiError::Rejected(_, m)) => {
            return TryEnd::Failed("pull_failed", m);
        }
        Err(e) => {
            return TryEnd::Transient {
                stalled: false,
                why: e.to_string(),
            };
        }
    };
    let store = deps.store(backend);
    let margin = ModelsConfig::bytes(&cfg.models.disk_margin);
    // digest → (total, completed)
    let mut layers: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut rate = Rate::new();
    let mut last_growth = Instant::now();
    let mut last_bytes = 0u64;
    let mut last_saved = Instant::now();
    loop {
        ctx.beat();
        let next = tokio::select! {
            _ = ctx.cancel.cancelled() => return TryEnd::Shutdown,
            _ = token.cancelled() => return TryEnd::Cancelled,
            n = tokio::time::timeout(Duration::from_secs(1), lines.next()) => n,
        };
        let line = match next {
            Err(_) => None,
            Ok(None) => {
                return TryEnd::Transient {
                    stalled: false,
                    why: "the runtime ended the download before it succeeded".into(),
                };
            }
            Ok(Some(Err(e))) => {
                return TryEnd::Transient {
                    stalled: false,
                    why: e.to_string(),
                };
            }
            Ok(Some(Ok(v))) => Some(v),
        };
        if let Some(v) = line {
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                return TryEnd::Failed("pull_failed", e.to_string());
            }
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if status == "success" {
                let _ = q.inner.events.send(QueueEvent::Line(id, v));
                return TryEnd::Done;
            }
            let mut new_layer = false;
            if let Some(d) = v.get("digest").and_then(Value::as_str) {
                let total = v.get("total").and_then(Value::as_u64).unwrap_or(0);
                let done = v.get("completed").and_then(Value::as_u64).unwrap_or(0);
                new_layer = !layers.contains_key(d);
                layers.insert(d.to_string(), (total, done));
            }
            // Past the downloads (verifying, writing): progress too.
            if !status.starts_with("pulling") {
                last_growth = Instant::now();
            }
            let total: u64 = layers.values().map(|l| l.0).sum();
            let completed: u64 = layers.values().map(|l| l.1.min(l.0)).sum();
            let now = Instant::now();
            if completed > last_bytes {
                last_growth = now;
                last_bytes = completed;
            }
            if new_layer && let Some(store) = &store {
                // The disk check again, with the sizes the runtime names.
                let left: u64 = layers.values().map(|l| l.0.saturating_sub(l.1)).sum();
                let free =
                    crate::metrics::collect::disk_usage(&admission::existing_ancestor(store))
                        .map_or(u64::MAX, |d| d.free_bytes);
                if left > free.saturating_sub(margin) {
                    let s = Shortfall::Disk {
                        need: left,
                        free,
                        margin,
                    };
                    return TryEnd::Failed(s.code(), s.message(model, Lang::En) + ".");
                }
            }
            let bps = rate.add(now, completed);
            let eta = bps
                .filter(|r| *r > 0.0)
                .map(|r| (total.saturating_sub(completed) as f64 / r).ceil() as u64);
            q.update(id, |p| {
                p.status = Some(status.clone());
                p.total = total;
                p.completed = completed;
                p.rate = bps;
                p.eta_seconds = eta;
            });
            let mut line = v;
            if let Some(o) = line.as_object_mut() {
                o.insert("rate".into(), serde_json::json!(bps));
                o.insert("eta_seconds".into(), serde_json::json!(eta));
            }
            let _ = q.inner.events.send(QueueEvent::Line(id, line));
            if last_saved.elapsed() >= Duration::from_secs(2) {
                q.persist();
                last_saved = Instant::now();
            }
        }
        if last_growth.elapsed() >= stall {
            return TryEnd::Transient {
                stalled: true,
                why: format!(
                    "no progress for {} s at {}",
                    stall.as_secs(),
                    admission::human_bytes(last_bytes, Lang::En)
                ),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_survives_a_restart_and_resumes_the_running_pull() {
        let dir = tempfile::tempdir().unwrap();
        let file = PullQueue::file_in(dir.path());
        let q = PullQueue::open(Some(file.clone()));
        let (a, new) = q.enqueue("llama3.2:1b", Backend::Llm);
        assert!(new);
        let (again, new) = q.enqueue("llama3.2:1b", Backend::Llm);
        assert!(!new);
        assert_eq!(again.id, a.id);
        let (b, _) = q.enqueue("qwen2.5", Backend::Llm);
        assert_eq!(b.model, "qwen2.5:latest");
        let (c, _) = q.enqueue("nomic-embed-text", Backend::Embeddings);
        q.update(a.id, |p| {
            p.state = PullState::Running;
            p.completed = 500;
        });
        q.persist();
        assert_eq!(q.cancel(c.id).unwrap().state, PullState::Cancelled);
        assert_eq!(
            q.cancel(c.id).unwrap_err(),
            CancelError::Finished(PullState::Cancelled)
        );
        assert_eq!(q.cancel(999).unwrap_err(), CancelError::NotFound);

        let q2 = PullQueue::open(Some(file));
        let a2 = q2.get(a.id).unwrap();
        assert_eq!(a2.state, PullState::Queued);
        assert_eq!(a2.completed, 500);
        assert_eq!(q2.next_queued().unwrap().id, a.id);
        assert_eq!(q2.get(c.id).unwrap().state, PullState::Cancelled);
        let (d, _) = q2.enqueue("gemma3:4b", Backend::Llm);
        assert!(d.id > c.id, "ids are not reused");
    }

    #[test]
    fn only_the_last_finished_pulls_are_kept() {
        let q = PullQueue::open(None);
        for i in 0..30 {
            let (p, _) = q.enqueue(&format!("m{i}"), Backend::Llm);
            q.finish(p.id, |p| p.state = PullState::Done);
        }
        let (active, _) = q.enqueue("still-waiting", Backend::Llm);
        let all = q.list();
        assert_eq!(all.len(), KEEP_FINISHED + 1);
        assert_eq!(all[0].id, active.id, "newest first");
        assert_eq!(all.last().unwrap().model, "m10:latest");
    }

    #[test]
    fn partial_blobs_are_listed_with_their_size_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = dir.path().join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("sha256-aa-partial"), vec![1u8; 8192]).unwrap();
        std::fs::write(blobs.join("sha256-aa-partial-0"), b"{}").unwrap();
        std::fs::write(blobs.join("sha256-bb"), b"done").unwrap();
        let p = partials(dir.path(), "llm");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].digest, "sha256:aa");
        assert_eq!(p[0].bytes, 8192);
        assert_eq!(remove_partials(dir.path()).unwrap(), (2, 8192));
        assert!(partials(dir.path(), "llm").is_empty());
        assert!(blobs.join("sha256-bb").exists(), "finished blobs stay");
    }

    #[test]
    fn the_rate_is_over_the_last_ten_seconds() {
        let mut r = Rate::new();
        let t = Instant::now();
        assert_eq!(r.add(t, 0), None);
        assert_eq!(r.add(t + Duration::from_secs(1), 1000), Some(1000.0));
        for s in 2..=20 {
            r.add(t + Duration::from_secs(s), 1000 * s);
        }
        // A stall of 5 s after 20 s at 1000 B/s: the window sees half of it.
        let v = r.add(t + Duration::from_secs(25), 20_000).unwrap();
        assert!((400.0..=600.0).contains(&v), "{v}");
    }

    #[test]
    fn config_values_are_checked() {
        assert!(ModelsConfig::default().validate().is_empty());
        let bad = ModelsConfig {
            registry: "ftp://x".into(),
            disk_margin: "lots".into(),
            stall_timeout: Duration::ZERO,
            ..ModelsConfig::default()
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|e| e.0).collect();
        assert_eq!(
            keys,
            [
                "models.disk_margin",
                "models.registry",
                "models.stall_timeout"
            ]
        );
    }
}
