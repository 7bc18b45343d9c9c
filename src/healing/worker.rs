//! The self-healing worker: builds a [`Snapshot`] from the supervisor, the
//! latest metrics sample and the database status, runs [`decide`] on every
//! supervisor state change, on the tick and at the policy's own wake-ups, and
//! carries the actions out through the supervisor (and the AI client). Every
//! decision and action goes to `self_healing.log` at once and to Postgres,
//! buffered in memory while the database is down. Reboots asked for and
//! records made elsewhere reach it through its [`HealingHandle`]. It holds
//! no Docker client and no SQL.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::config::HealingConfig;
use super::decide;
use super::handle::{Command, HealingHandle, HealingInbox};
use super::policy::{Action, Event, PolicyState, Readings, ServiceView, Snapshot, Timestamp};
use super::reboot::{Refused, SavedState};
use super::record::{Category, EventKind, HealingRecord, LOG_FILE, Severity};
use crate::db::Db;
use crate::docker::{ServiceState, ServiceStatus, SupervisorError, SupervisorHandle};
use crate::metrics::MetricsHub;
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// Events kept in memory while the database is down; beyond it the oldest go.
pub const BUFFER_CAP: usize = 10_000;
/// The worker beats at least this often, whatever the tick.
const BEAT_EVERY: Duration = Duration::from_secs(1);
/// Longest one batch write to Postgres may take before it is retried later.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a `VACUUM ANALYZE` may take.
const VACUUM_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// What the worker needs; cloned into every run.
#[derive(Clone)]
pub struct HealingDeps {
    pub config: HealingConfig,
    pub log_dir: PathBuf,
    pub services: SupervisorHandle,
    /// None: no readings (tests), the overload rules stay quiet.
    pub metrics: Option<MetricsHub>,
    pub db: Db,
    /// `paths.state_dir`: update staging and backups.
    pub state_dir: PathBuf,
    /// What the updater is doing: switched services are left alone, and no
    /// cleanup of staging or reboot while it runs.
    pub update: crate::update::UpdateActivity,
    /// `metrics.retention`: what the disk cleanup deletes at once.
    pub metrics_retention: Duration,
    /// `paths.proc_root`: the boot id that proves a reboot happened.
    pub proc_root: PathBuf,
    /// The running config: `healing.reboot` is read from it when a reboot
    /// is considered (the owner may allow or forbid reboots at any time).
    /// None: `config.reboot` for good.
    pub live: Option<tokio::sync::watch::Receiver<std::sync::Arc<crate::config::Config>>>,
    /// Critical events, failed services, disk and heat reach the owner here.
    pub notify: crate::notify::Notifier,
}

/// Spawns the loop as the core worker `self-healing`; the handle reaches
/// it. The event buffer and the handle's inbox outlive restarts of the
/// worker.
pub fn spawn(workers: &Workers, deps: HealingDeps) -> HealingHandle {
    let trail = Arc::new(tokio::sync::Mutex::new(
        AuditTrail::new(deps.log_dir.join(LOG_FILE), deps.db.clone())
            .notifying(deps.notify.clone()),
    ));
    let (handle, inbox) = HealingHandle::new();
    workers.spawn(WorkerName::SelfHealing, WorkerKind::Core, move |ctx| {
        let (deps, trail, inbox) = (deps.clone(), trail.clone(), inbox.clone());
        async move { run(ctx, deps, trail, inbox).await }
    });
    handle
}

/// The DB/file side of the trail: appends JSON lines at once, buffers for
/// Postgres and writes in order once it is reachable.
pub struct AuditTrail {
    path: PathBuf,
    db: Db,
    pending: VecDeque<HealingRecord>,
    /// Dropped from the buffer since the last successful write.
    dropped: u64,
    file_error_logged: bool,
    db_error_logged: bool,
    notify: crate::notify::Notifier,
}

impl AuditTrail {
    pub fn new(path: PathBuf, db: Db) -> Self {
        AuditTrail {
            path,
            db,
            pending: VecDeque::new(),
            dropped: 0,
            file_error_logged: false,
            db_error_logged: false,
            notify: crate::notify::Notifier::detached(),
        }
    }

    /// Records worth an alert (see [`crate::notify::from_healing`]) go to `n`.
    pub fn notifying(mut self, n: crate::notify::Notifier) -> Self {
        self.notify = n;
        self
    }

    pub fn record(&mut self, r: HealingRecord) {
        if r.action.is_some() {
            crate::metrics::counters::healing_action(r.category.map(Category::as_str), &r.result);
        }
        let service = r.service.as_deref();
        if let Some(a) =
            crate::notify::from_healing(&r.event_type, r.severity, service, &r.description)
        {
            self.notify.alert(a);
        }
        match append_line(&self.path, &r) {
            Ok(()) => self.file_error_logged = false,
            Err(e) => {
                if !std::mem::replace(&mut self.file_error_logged, true) {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the self-healing log");
                }
            }
        }
        if r.severity == Severity::Critical {
            tracing::error!(event = %r.event_type, service = ?r.service, result = %r.result, "self-healing: {}", r.description);
        } else {
            tracing::info!(event = %r.event_type, service = ?r.service, result = %r.result, "self-healing: {}", r.description);
        }
        if self.pending.len() >= BUFFER_CAP {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back(r);
    }

    /// Writes what is buffered if the database is up; keeps it otherwise.
    pub async fn flush(&mut self) {
        if self.pending.is_empty() && self.dropped == 0 {
            return;
        }
        let status = self.db.status();
        if !status.up || !status.migrated {
            return;
        }
        if self.dropped > 0 {
            let note = HealingRecord::recorded(
                EventKind::EventsDropped,
                Severity::Warning,
                None,
                format!(
                    "{} self-healing events were dropped while the database was unreachable (buffer of {BUFFER_CAP})",
                    self.dropped
                ),
            );
            // At the front: it stands for events older than what is left.
            self.pending.push_front(note);
            self.dropped = 0;
        }
        while !self.pending.is_empty() {
            let n = self.pending.len().min(500);
            let batch: Vec<HealingRecord> = self.pending.iter().take(n).cloned().collect();
            // Bounded, so a database that hangs cannot stall the loop's heartbeat.
            let write = crate::db::healing::insert_events(self.db.pool(), &batch);
            let done = tokio::time::timeout(FLUSH_TIMEOUT, write)
                .await
                .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
            match done {
                Ok(_) => {
                    self.pending.drain(..n);
                    self.db_error_logged = false;
                }
                Err(e) => {
                    if !std::mem::replace(&mut self.db_error_logged, true) {
                        tracing::warn!(error = %e, buffered = self.pending.len(), "self-healing events not written yet");
                    }
                    return;
                }
            }
        }
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }
}

fn append_line(path: &Path, r: &HealingRecord) -> std::io::Result<()> {
    crate::os::fs::append_line(
        path,
        &serde_json::to_string(r).map_err(std::io::Error::other)?,
    )
}

/// The policy's view of one service. A container that exited is down at
/// once, not after N failed probes: it is `stopped` to the policy. The
/// supervisor calls it `unhealthy` (or still `starting` when it exited before
/// the events stream saw it), with an exit code and no address; an exit code
/// is only kept while the container is not running.
pub fn service_view(s: &ServiceStatus) -> ServiceView {
    let mut v = ServiceView::from(s);
    let exited = s.container_id.is_none() || (s.last_exit_code.is_some() && s.address.is_none());
    if matches!(s.state, ServiceState::Unhealthy | ServiceState::Starting) && exited {
        v.state = ServiceState::Stopped;
    }
    v
}

struct Loop {
    deps: HealingDeps,
    started: Instant,
    policy: PolicyState,
    /// Services the supervisor acknowledged as failed on the policy's request.
    marked_failed: BTreeSet<String>,
    ai: crate::ai::Ai,
    /// A reboot the policy is preparing: what is done of its checks.
    reboot_prep: Option<RebootPrep>,
    /// The post-reboot validation still to be written to its row.
    reboot_validation: Option<(i64, String)>,
}

#[derive(Default)]
struct RebootPrep {
    telemetry_flushed: bool,
    disk_state_recorded: bool,
}

async fn run(
    ctx: WorkerCtx,
    deps: HealingDeps,
    trail: Arc<tokio::sync::Mutex<AuditTrail>>,
    inbox: HealingInbox,
) -> anyhow::Result<()> {
    let mut inbox = inbox.lock().await;
    // Reboots asked for through the handle: they wait for workflows, so
    // they run beside the loop, not in it (dropped, that is cancelled, with it).
    let mut jobs = JoinSet::new();
    let mut state_rx = deps.services.subscribe();
    let mut db_rx = deps.db.subscribe();
    let tick = deps.config.tick;
    let mut lp = Loop {
        deps,
        started: Instant::now(),
        policy: PolicyState::new(),
        marked_failed: BTreeSet::new(),
        ai: crate::ai::Ai::new(),
        reboot_prep: None,
        reboot_validation: None,
    };
    // A reboot requested before this start: was it one?
    let (dir, proc_root) = (lp.deps.state_dir.clone(), lp.deps.proc_root.clone());
    let validated =
        tokio::task::spawn_blocking(move || super::reboot::validate_after_start(&dir, &proc_root))
            .await
            .ok()
            .flatten();
    if let Some((saved, text, ok)) = validated {
        let mut r = HealingRecord::recorded(
            EventKind::PostRebootValidation,
            if ok {
                Severity::Info
            } else {
                Severity::Warning
            },
            Some(Category::D),
            text.clone(),
        );
        r.result = if ok {
            "ok".into()
        } else {
            "failed: not confirmed".into()
        };
        trail.lock().await.record(r);
        lp.reboot_validation = saved.id.map(|id| (id, text));
    }
    let mut state_open = true;
    let mut db_open = true;
    let mut inbox_open = true;
    loop {
        ctx.beat();
        let mut trail_guard = trail.lock().await;
        lp.evaluate(&ctx, &mut trail_guard).await;
        trail_guard.flush().await;
        drop(trail_guard);
        let now = Instant::now();
        let mut due = now + tick;
        if let Some(at) = lp.policy.next_wakeup(&lp.deps.config) {
            let at = lp.started + Duration::from_millis(at.as_millis());
            due = due.min(at.max(now));
        }
        // Wait for a state change, the tick or a wake-up, beating meanwhile.
        loop {
            ctx.beat();
            let nap = due.min(Instant::now() + BEAT_EVERY);
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    trail.lock().await.flush().await;
                    return Ok(());
                }
                r = state_rx.changed(), if state_open => {
                    if r.is_err() { state_open = false; } else { break; }
                }
                r = db_rx.changed(), if db_open => {
                    if r.is_err() { db_open = false; }
                    trail.lock().await.flush().await;
                }
                cmd = inbox.recv(), if inbox_open => match cmd {
                    Some(cmd) => lp.serve(cmd, &trail, &mut jobs).await,
                    // Every handle is gone (tests that keep none).
                    None => inbox_open = false,
                },
                Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
                _ = tokio::time::sleep_until(nap) => {
                    if Instant::now() >= due { break; }
                }
            }
        }
    }
}

impl Loop {
    /// One command from the handle.
    async fn serve(
        &self,
        cmd: Command,
        trail: &Arc<tokio::sync::Mutex<AuditTrail>>,
        jobs: &mut JoinSet<()>,
    ) {
        match cmd {
            Command::Record { record, reply } => {
                let mut trail = trail.lock().await;
                trail.record(record);
                trail.flush().await;
                let _ = reply.send(());
            }
            Command::Reboot { reason, reply } => {
                let (rctx, trail) = (self.reboot_ctx(), trail.clone());
                jobs.spawn(async move {
                    let outcome = super::reboot::request(&rctx, &reason, true, &|| {}).await;
                    // In the trail (and Postgres) before the answer: the
                    // box may be gone soon after it.
                    let mut trail = trail.lock().await;
                    trail.record(reboot_record(&reason, &outcome));
                    trail.flush().await;
                    drop(trail);
                    let _ = reply.send(outcome);
                });
            }
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.started.elapsed().as_millis() as u64)
    }

    fn snapshot(&self, services: &[ServiceStatus]) -> Snapshot {
        let mut snap = Snapshot::new(self.now());
        // An update is switching these: it owns them until done or rolled back.
        let under_update = self.deps.update.switched();
        snap.services = services
            .iter()
            .filter(|s| !under_update.contains(&s.name))
            .map(service_view)
            .collect();
        let latest = self.deps.metrics.as_ref().and_then(|m| m.latest());
        if let Some(a) = latest.as_deref().and_then(crate::notify::gpu_throttle) {
            self.deps.notify.alert(a);
        }
        snap.readings = latest
            .as_ref()
            .map(|s| Readings::from_sample(s))
            .unwrap_or_default();
        // The GPU backend failed to read (a missing GPU is `gpu: null`, no error).
        snap.gpu_error = latest
            .as_ref()
            .is_some_and(|s| s.errors.iter().any(|e| e.series == "gpu"));
        // The supervisor says `unknown` for every service while Docker is away.
        snap.docker_up =
            services.is_empty() || services.iter().any(|s| s.state != ServiceState::Unknown);
        snap.db_up = self.deps.db.status().up;
        snap.update_in_progress = self.deps.update.in_progress().is_some();
        snap
    }

    fn reboot_ctx(&self) -> super::reboot::RebootCtx {
        super::reboot::RebootCtx {
            rules: self.deps.live.as_ref().map_or_else(
                || self.deps.config.reboot.clone(),
                |c| c.borrow().healing.reboot.clone(),
            ),
            db: self.deps.db.clone(),
            metrics: self.deps.metrics.clone(),
            services: self.deps.services.clone(),
            update: self.deps.update.clone(),
            state_dir: self.deps.state_dir.clone(),
            proc_root: self.deps.proc_root.clone(),
        }
    }

    /// What the policy's safety checks read while a reboot is prepared.
    async fn reboot_readiness(&mut self, snap: &mut Snapshot) {
        if let Some((id, text)) = &self.reboot_validation
            && snap.db_up
            && crate::db::healing::validate_reboot(self.deps.db.pool(), *id, text)
                .await
                .is_ok()
        {
            self.reboot_validation = None;
        }
        let Some(prep) = &self.reboot_prep else {
            return;
        };
        let db = &self.deps.db;
        snap.reboot.telemetry_flushed = prep.telemetry_flushed;
        snap.reboot.disk_state_recorded = prep.disk_state_recorded;
        if snap.db_up {
            let hour = super::reboot::reboots_last_hour(db).await;
            // Unknown counts as at the limit.
            snap.reboot.reboots_last_hour = hour.unwrap_or(u32::MAX);
            snap.reboot.workflows_drained = crate::db::healing::running_workflows(db.pool())
                .await
                .is_ok_and(|n| n == 0);
        }
    }

    async fn evaluate(&mut self, ctx: &WorkerCtx, trail: &mut AuditTrail) {
        let services = self.deps.services.services();
        // A start, stop or restart through the API cleared a failed mark: the
        // policy starts that service from a clean slate.
        let cleared: Vec<String> = self
            .marked_failed
            .iter()
            .filter(|n| {
                services
                    .iter()
                    .find(|s| &s.name == *n)
                    .is_none_or(|s| s.state != ServiceState::Failed)
            })
            .cloned()
            .collect();
        for name in cleared {
            self.marked_failed.remove(&name);
            self.policy.clear_failed(&name);
            let mut r = HealingRecord::recorded(
                EventKind::FailedCleared,
                Severity::Info,
                Some(Category::A),
                "the failed mark was cleared through the API; healing it again",
            );
            r.service = Some(name);
            trail.record(r);
        }
        let mut snap = self.snapshot(&services);
        self.reboot_readiness(&mut snap).await;
        let actions = decide(&snap, &mut self.policy, &self.deps.config);
        // An action is recorded with the event that follows it (the policy
        // emits each action before its event); a lone action or event is a
        // record of its own.
        let mut pending: Option<Done> = None;
        for action in actions {
            ctx.beat();
            match action {
                Action::RecordEvent(ev) => {
                    trail.record(event_record(&ev, pending.take()));
                }
                other => {
                    if let Some(done) = pending.take() {
                        trail.record(done.alone());
                    }
                    pending = Some(self.carry_out(ctx, other).await);
                }
            }
        }
        if let Some(done) = pending {
            trail.record(done.alone());
        }
    }

    async fn carry_out(&mut self, ctx: &WorkerCtx, action: Action) -> Done {
        let kind = action.kind();
        let service = match &action {
            Action::RestartService { name, .. }
            | Action::StopStartService { name }
            | Action::MarkFailed { name } => Some(name.clone()),
            _ => None,
        };
        let t0 = Instant::now();
        let h = &self.deps.services;
        let ok = |r: Result<(), String>| match r {
            Ok(()) => Outcome::Ok(None),
            Err(e) => Outcome::Failed(e),
        };
        let outcome = match &action {
            Action::RestartService { name, .. } => ok(h.restart(name).await.map_err(err)),
            // A stop that is not persisted: should the daemon die between
            // the two steps, the service runs again after its restart.
            Action::StopStartService { name } => ok(match h.stop_transient(name).await {
                Ok(()) => h.start(name).await.map_err(err),
                Err(e) => Err(err(e)),
            }),
            Action::MarkFailed { name } => {
                let r = h.mark_failed(name).await.map_err(err);
                if r.is_ok() {
                    self.marked_failed.insert(name.clone());
                }
                ok(r)
            }
            Action::HardRestartServices { services } => {
                ok(each(ctx, services, |s| h.restart(s)).await)
            }
            Action::StopLlm { services, .. } => {
                ok(each(ctx, services, |s| h.stop_transient(s)).await)
            }
            Action::StartLlm { services } => ok(each(ctx, services, |s| h.start(s)).await),
            Action::UnloadLlmModels => ok(self.unload_llm_models().await),
            Action::ResetLlmSession => self.reset_llm_session().await,
            Action::RunThrottleCommand => {
                let argv = self.deps.config.overload.throttle_command.clone();
                self.run_configured("overload.throttle_command", &argv)
                    .await
            }
            Action::GpuReset => self.gpu_reset(ctx).await,
            Action::DiskCleanup { .. } => self.disk_cleanup(ctx).await,
            Action::VacuumAnalyze => self.vacuum_analyze().await,
            Action::PrepareReboot { reason, .. } => {
                self.prepare_reboot(&format!("{reason:?}")).await
            }
            Action::Reboot { reason } => {
                self.reboot_prep = None;
                let rctx = self.reboot_ctx();
                let why = format!("{reason:?}");
                match super::reboot::request(&rctx, &why, false, &|| ctx.beat()).await {
                    Ok(_) => Outcome::Ok(Some("logind accepted the reboot".into())),
                    Err(r) => Outcome::Failed(format!("{}: {}", r.check, r.message)),
                }
            }
            Action::RecordEvent(_) => Outcome::Skipped("an event, not an action".into()),
        };
        let (result, detail) = match outcome {
            Outcome::Ok(detail) => ("ok".to_string(), detail),
            Outcome::Failed(e) => (format!("failed: {e}"), None),
            Outcome::Skipped(why) => (format!("skipped: {why}"), None),
        };
        Done {
            kind,
            service,
            result,
            detail,
            duration_ms: t0.elapsed().as_millis() as i64,
        }
    }

    /// `keep_alive: 0` for every model the LLM runtime has loaded.
    async fn unload_llm_models(&self) -> Result<(), String> {
        let services = self.deps.services.services();
        let target =
            crate::ai::locate(&services, crate::ai::Backend::Llm).map_err(|e| e.to_string())?;
        let loaded = self.ai.ps(&target).await.map_err(|e| e.to_string())?;
        for m in loaded {
            self.ai
                .unload(&target, &m.name)
                .await
                .map_err(|e| format!("{}: {e}", m.name))?;
        }
        Ok(())
    }

    /// A fresh session: every loaded model unloaded (`keep_alive: 0`), then
    /// loaded again, so its context and GPU state start from scratch.
    async fn reset_llm_session(&self) -> Outcome {
        let services = self.deps.services.services();
        let target = match crate::ai::locate(&services, crate::ai::Backend::Llm) {
            Ok(t) => t,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let loaded = match self.ai.ps(&target).await {
            Ok(l) => l,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        if loaded.is_empty() {
            return Outcome::Ok(Some("no model was loaded".into()));
        }
        let mut names = Vec::new();
        for m in &loaded {
            if let Err(e) = self.ai.unload(&target, &m.name).await {
                return Outcome::Failed(format!("unload {}: {e}", m.name));
            }
        }
        for m in &loaded {
            if let Err(e) = self.ai.load(&target, &m.name).await {
                return Outcome::Failed(format!("reload {}: {e}", m.name));
            }
            names.push(m.name.clone());
        }
        Outcome::Ok(Some(format!("reloaded {}", names.join(", "))))
    }

    async fn run_configured(&self, key: &str, argv: &[String]) -> Outcome {
        if argv.is_empty() {
            return Outcome::Skipped(format!("no healing.{key} configured"));
        }
        match super::exec::run_command(argv, self.deps.config.command_timeout).await {
            Ok(()) => Outcome::Ok(Some(format!("ran {}", argv.join(" ")))),
            Err(e) => Outcome::Failed(e),
        }
    }

    /// The configured GPU reset, only with every LLM service stopped: those
    /// still running are stopped first (not persisted) and started after.
    async fn gpu_reset(&self, ctx: &WorkerCtx) -> Outcome {
        let argv = self.deps.config.gpu_reset_command.clone();
        if argv.is_empty() {
            return Outcome::Skipped("no healing.gpu_reset_command configured".into());
        }
        let h = &self.deps.services;
        let running: Vec<String> = h
            .services()
            .iter()
            .filter(|s| s.role == crate::docker::Role::Llm)
            .filter(|s| {
                !matches!(
                    s.state,
                    ServiceState::Stopped | ServiceState::Failed | ServiceState::ImageMissing
                )
            })
            .map(|s| s.name.clone())
            .collect();
        if let Err(e) = each(ctx, &running, |s| h.stop_transient(s)).await {
            // Never reset the GPU under a running LLM: start what was stopped.
            let _ = each(ctx, &running, |s| h.start(s)).await;
            return Outcome::Failed(format!("could not stop the LLM first: {e}"));
        }
        let ran = self.run_configured("gpu_reset_command", &argv).await;
        if let Err(e) = each(ctx, &running, |s| h.start(s)).await {
            return Outcome::Failed(format!(
                "GPU reset done, but the LLM did not start again: {e}"
            ));
        }
        match ran {
            Outcome::Ok(_) if !running.is_empty() => Outcome::Ok(Some(format!(
                "ran {} with {} stopped",
                argv.join(" "),
                running.join(", ")
            ))),
            other => other,
        }
    }

    /// Only the configured paths (see `healing::cleanup`), this project's
    /// dangling images and metrics past retention.
    async fn disk_cleanup(&self, ctx: &WorkerCtx) -> Outcome {
        let rules = self.deps.config.cleanup.clone();
        let (log_dir, state_dir) = (self.deps.log_dir.clone(), self.deps.state_dir.clone());
        let update = self.deps.update.current();
        let files = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now();
            super::cleanup::clean_files(&log_dir, &state_dir, &rules, &update, now)
        })
        .await
        .unwrap_or_else(|e| super::cleanup::FileCleanup {
            errors: vec![format!("cleanup task failed: {e}")],
            ..Default::default()
        });
        ctx.beat();
        let mut errors = files.errors.clone();
        let mut done = vec![format!(
            "removed {} files ({} bytes)",
            files.removed.len(),
            files.bytes_freed
        )];
        done.extend(files.skipped.iter().map(|s| format!("skipped {s}")));
        if self.deps.config.cleanup.dangling_images {
            match self.deps.services.prune_images().await {
                Ok((n, bytes)) => done.push(format!("{n} dangling images ({bytes} bytes)")),
                Err(e) => errors.push(format!("images: {e}")),
            }
            ctx.beat();
        }
        if self.deps.config.cleanup.metrics_past_retention && self.deps.db.status().up {
            let before = Utc::now()
                - chrono::Duration::from_std(self.deps.metrics_retention)
                    .unwrap_or(chrono::Duration::days(7));
            let (pool, rows) = (self.deps.db.pool(), crate::db::metrics::AGING);
            let deleted = crate::db::retention::delete_older_than(
                pool,
                rows,
                before,
                crate::db::retention::BATCH,
                || ctx.beat(),
            );
            match deleted.await {
                Ok(n) => done.push(format!("{n} metrics rows past retention")),
                Err(e) => errors.push(format!("metrics: {e}")),
            }
        }
        if errors.is_empty() {
            Outcome::Ok(Some(done.join(", ")))
        } else {
            Outcome::Failed(format!("{}; {}", errors.join("; "), done.join(", ")))
        }
    }

    /// The preparation of a policy reboot: telemetry flushed, the state and
    /// disk recorded. The policy then waits for the workflows (or the drain
    /// timeout) and asks for the reboot, which checks everything again.
    async fn prepare_reboot(&mut self, reason: &str) -> Outcome {
        let rctx = self.reboot_ctx();
        let mut prep = RebootPrep::default();
        let mut missing = Vec::new();
        match &rctx.metrics {
            Some(m) if self.deps.db.status().up => match m.flush(&rctx.db).await {
                Ok(_) => prep.telemetry_flushed = true,
                Err(e) => missing.push(format!("telemetry not flushed: {e}")),
            },
            Some(_) => missing.push("telemetry not flushed: the database is down".into()),
            None => prep.telemetry_flushed = true,
        }
        match super::reboot::record_state(&rctx, reason).await {
            Ok(_) => prep.disk_state_recorded = true,
            Err(r) => missing.push(r.message),
        }
        self.reboot_prep = Some(prep);
        if missing.is_empty() {
            Outcome::Ok(Some("telemetry flushed, state and disk recorded".into()))
        } else {
            Outcome::Failed(missing.join("; "))
        }
    }

    async fn vacuum_analyze(&self) -> Outcome {
        let status = self.deps.db.status();
        if !status.up {
            return Outcome::Failed("the database is not reachable".into());
        }
        let pool = self.deps.db.pool();
        match crate::db::healing::vacuum_analyze(pool, VACUUM_TIMEOUT).await {
            Ok(()) => Outcome::Ok(None),
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }
}

/// How an action went.
enum Outcome {
    /// Done, with what it did in words where that says more than "ok".
    Ok(Option<String>),
    Failed(String),
    /// Not carried out (nothing configured for it).
    Skipped(String),
}

async fn each<'a, F, Fut>(ctx: &WorkerCtx, services: &'a [String], f: F) -> Result<(), String>
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<(), SupervisorError>>,
{
    let mut failed = Vec::new();
    for s in services {
        ctx.beat();
        if let Err(e) = f(s).await {
            failed.push(format!("{s}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

fn err(e: SupervisorError) -> String {
    e.to_string()
}

/// An action carried out, waiting for the event that explains it.
struct Done {
    /// The action's kind; its name is the record's `action`.
    kind: EventKind,
    service: Option<String>,
    result: String,
    /// What it did, added to the record's description.
    detail: Option<String>,
    duration_ms: i64,
}

impl Done {
    fn alone(self) -> HealingRecord {
        let severity = if self.result.starts_with("failed") {
            Severity::Warning
        } else {
            Severity::Info
        };
        let action = self.kind.as_str().to_string();
        HealingRecord {
            id: None,
            at: Utc::now(),
            severity,
            category: None,
            service: self.service,
            description: match self.detail {
                Some(d) => format!("action {action}: {d}"),
                None => format!("action {action}"),
            },
            event_type: self.kind,
            action: Some(action),
            result: self.result,
            duration_ms: Some(self.duration_ms),
        }
    }
}

/// An event of the policy, with the action carried out just before it.
fn event_record(ev: &Event, done: Option<Done>) -> HealingRecord {
    let mut r = HealingRecord::recorded(
        ev.event_type.clone(),
        ev.severity,
        Some(ev.category),
        ev.description.clone(),
    );
    r.service = ev.service.clone();
    if let Some(done) = done {
        r.service = r.service.or(done.service);
        r.action = Some(done.kind.as_str().to_string());
        r.result = done.result;
        r.duration_ms = Some(done.duration_ms);
        if let Some(d) = done.detail {
            r.description = format!("{}: {d}", r.description);
        }
    }
    r
}

/// A reboot asked for through the handle, as the trail keeps it.
fn reboot_record(reason: &str, outcome: &Result<SavedState, Refused>) -> HealingRecord {
    let mut r = match outcome {
        Ok(_) => HealingRecord::recorded(
            EventKind::Reboot,
            Severity::Critical,
            Some(Category::D),
            format!("reboot {reason}; logind accepted it"),
        ),
        Err(refused) => HealingRecord::recorded(
            EventKind::RebootRefused,
            Severity::Warning,
            Some(Category::D),
            format!("reboot {reason} refused: {}", refused.message),
        ),
    };
    r.action = Some(EventKind::Reboot.as_str().to_string());
    r.result = match outcome {
        Ok(_) => "ok".to_string(),
        Err(refused) => format!("failed: {}", refused.check),
    };
    r
}

/// The loop's heartbeat as SPEC §7 grades it.
pub fn heartbeat_grade(age: Duration) -> &'static str {
    if age < Duration::from_secs(20) {
        "healthy"
    } else if age <= Duration::from_secs(60) {
        "degraded"
    } else {
        "unhealthy"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_action_is_recorded_with_the_event_that_follows_it() {
        let ev = Event {
            severity: Severity::Warning,
            category: Category::A,
            event_type: EventKind::ServiceRestart,
            service: Some("llm".into()),
            description: "restart 1".into(),
        };
        let done = Done {
            kind: Action::RestartService {
                name: "llm".into(),
                reason: crate::healing::RestartReason::ServiceDown,
            }
            .kind(),
            service: Some("llm".into()),
            result: "ok".into(),
            detail: None,
            duration_ms: 12,
        };
        let r = event_record(&ev, Some(done));
        assert_eq!(r.event_type, EventKind::ServiceRestart);
        assert_eq!(r.severity, Severity::Warning);
        assert_eq!(r.category, Some(Category::A));
        assert_eq!(r.action.as_deref(), Some("restart_service"));
        assert_eq!((r.result.as_str(), r.duration_ms), ("ok", Some(12)));
    }

    #[test]
    fn an_action_alone_is_recorded_under_its_serde_name() {
        use crate::healing::{DiskLevel, RebootReason, RestartReason};
        let name = "x".to_string();
        let actions = [
            Action::RestartService {
                name: name.clone(),
                reason: RestartReason::ServiceDown,
            },
            Action::StopStartService { name: name.clone() },
            Action::MarkFailed { name },
            Action::UnloadLlmModels,
            Action::ResetLlmSession,
            Action::RunThrottleCommand,
            Action::StopLlm {
                services: vec![],
                until_below_c: None,
            },
            Action::StartLlm { services: vec![] },
            Action::HardRestartServices { services: vec![] },
            Action::DiskCleanup {
                level: DiskLevel::Critical,
            },
            Action::VacuumAnalyze,
            Action::GpuReset,
            Action::PrepareReboot {
                reason: RebootReason::RepeatedCriticalEvents,
                drain_timeout_s: 1,
            },
            Action::Reboot {
                reason: RebootReason::RepeatedCriticalEvents,
            },
        ];
        for a in actions {
            let tag = serde_json::to_value(&a).unwrap()["action"].clone();
            let done = Done {
                kind: a.kind(),
                service: None,
                result: "failed: no".into(),
                detail: None,
                duration_ms: 1,
            };
            let r = done.alone();
            assert_eq!(serde_json::json!(r.event_type.as_str()), tag);
            assert_eq!(serde_json::json!(r.action.as_deref().unwrap()), tag);
            assert_eq!(r.severity, Severity::Warning);
            assert!(!matches!(r.event_type, EventKind::Other(_)), "{tag}");
        }
    }

    #[test]
    fn a_reboot_asked_through_the_handle_is_recorded_with_its_outcome() {
        let refused = Err(Refused {
            check: "too_many_reboots",
            message: "2 reboots in the last hour (at most 2)".into(),
        });
        let r = reboot_record("requested through the API", &refused);
        assert_eq!(
            (r.event_type, r.severity, r.category),
            (
                EventKind::RebootRefused,
                Severity::Warning,
                Some(Category::D)
            )
        );
        assert_eq!(r.result, "failed: too_many_reboots");
        assert_eq!(r.action.as_deref(), Some("reboot"));
        assert!(r.description.ends_with("(at most 2)"), "{}", r.description);
    }

    #[test]
    fn heartbeat_grades_follow_the_spec() {
        assert_eq!(heartbeat_grade(Duration::from_secs(3)), "healthy");
        assert_eq!(heartbeat_grade(Duration::from_secs(20)), "degraded");
        assert_eq!(heartbeat_grade(Duration::from_secs(60)), "degraded");
        assert_eq!(heartbeat_grade(Duration::from_secs(61)), "unhealthy");
    }

    #[tokio::test]
    async fn the_buffer_drops_the_oldest_and_the_log_gets_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::new(&crate::config::DatabaseConfig::default()).unwrap();
        let mut trail = AuditTrail::new(dir.path().join(LOG_FILE), db);
        for i in 0..BUFFER_CAP + 5 {
            trail.record(HealingRecord::recorded(
                EventKind::FailedCleared,
                Severity::Info,
                None,
                format!("{i}"),
            ));
        }
        assert_eq!(trail.buffered(), BUFFER_CAP);
        assert_eq!(trail.dropped, 5);
        assert_eq!(trail.pending.front().unwrap().description, "5");
        let last = crate::healing::record::last_logged(dir.path()).unwrap();
        assert_eq!(last.description, (BUFFER_CAP + 4).to_string());
    }

    #[tokio::test]
    async fn the_handle_reaches_the_running_worker_and_not_a_stopped_one() {
        let dir = tempfile::tempdir().unwrap();
        let workers = Workers::new((&crate::config::Config::default().workers).into());
        let db = Db::new(&crate::config::DatabaseConfig::default()).unwrap();
        let deps = HealingDeps {
            config: HealingConfig::default(),
            log_dir: dir.path().to_path_buf(),
            services: SupervisorHandle::detached(),
            metrics: None,
            db,
            state_dir: dir.path().join("state"),
            update: crate::update::UpdateActivity::new(),
            metrics_retention: Duration::from_secs(3600),
            proc_root: dir.path().join("proc"),
            live: None,
            notify: crate::notify::Notifier::detached(),
        };
        let handle = spawn(&workers, deps);
        let note = HealingRecord::recorded(
            EventKind::FailedCleared,
            Severity::Info,
            None,
            "from outside the loop",
        );
        assert_eq!(handle.record(note).await, Ok(()));
        // Off by default: refused, and the refusal is in the trail.
        let refused = handle.request_reboot("asked by a test").await.unwrap_err();
        assert_eq!(refused.check, "reboot_disabled");
        let logged = crate::healing::record::last_logged(dir.path()).unwrap();
        assert_eq!(logged.event_type, EventKind::RebootRefused);
        assert_eq!(logged.result, "failed: reboot_disabled");
        let stuck = workers.shutdown(Duration::from_secs(5)).await;
        assert!(stuck.is_empty(), "{stuck:?}");
        let again = handle.request_reboot("after the stop").await.unwrap_err();
        assert_eq!(again.check, super::super::handle::NOT_RUNNING);
    }
}
