//! The apply state machine and its rollback, run by the `update-applier`
//! worker. Each transition is persisted (`update_state.json`, then the DB
//! mirror) before the step it names begins, so a crash anywhere leaves a
//! state that says what may have been touched. At the next start the run is
//! resolved by this rule:
//!
//! | persisted state | live state possibly touched | resolution |
//! |---|---|---|
//! | validated | nothing | the bundle is pending again (apply it or upload another) |
//! | backing_up, loading_images | nothing (a dump, loaded images) | rolled back (nothing to undo) |
//! | migrating | the database | rolled back: the dump restored |
//! | switching | database, configs, some containers | rolled back: images, configs, database |
//! | verifying | everything switched | verification runs again: healthy → done, else rolled back |
//! | rolling_back | partly undone | the rollback runs again (each step is idempotent) |
//! | done, rolled_back, failed | — | nothing; `failed` waits for a person |
//!
//! Once `done` is persisted nothing rolls the update back. A rollback that
//! fails ends in `failed` with one critical event, and is never retried by
//! itself.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use chrono::Utc;
use tokio::time::Instant;

use super::backup::{self, PgTarget};
use super::manager::{Phase, UpdateManager};
use super::package;
use super::state::{self, Backup, ConfigBackup, Run, ServiceBackup, UpdateState};
use crate::docker::ServiceState;
use crate::tasks::WorkerCtx;

pub(crate) async fn run_worker(ctx: WorkerCtx, mgr: UpdateManager) -> anyhow::Result<()> {
    ctx.beat();
    let current = mgr.inner.persisted.lock().unwrap().run.clone();
    // Once per daemon: a worker restarted after an error does not redo a
    // rollback that already failed.
    let first = !mgr
        .inner
        .recovered
        .swap(true, std::sync::atomic::Ordering::SeqCst);
    if first {
        clean_leftovers(&mgr);
    }
    if let Some(run) = current
        && first
    {
        let applier = Applier {
            mgr: mgr.clone(),
            ctx: ctx.clone(),
        };
        if !run.state.is_final() {
            applier.recover(run).await?;
        } else if run.state == UpdateState::Done {
            // Killed between persisting done and its clean-up.
            applier.finish_done(&run).await;
        }
    }
    loop {
        ctx.beat();
        tokio::select! {
            _ = ctx.cancel.cancelled() => return Ok(()),
            w = mgr.wait_for_work() => {
                if w.is_none() { return Ok(()); }
                let run = mgr.inner.persisted.lock().unwrap().run.clone();
                if let Some(run) = run && run.state == UpdateState::Validated {
                    let applier = Applier { mgr: mgr.clone(), ctx: ctx.clone() };
                    applier.execute(run).await?;
                }
            }
        }
    }
}

/// At start: partial uploads, staged bundles and backups no run refers to
/// any more (a crash mid-upload, a pending bundle never applied) are removed.
fn clean_leftovers(mgr: &UpdateManager) {
    let p = mgr.inner.persisted.lock().unwrap().clone();
    let keep = super::manager::kept_paths(&p, None);
    for sub in super::activity::UPDATER_DIRS {
        let Ok(entries) = std::fs::read_dir(mgr.inner.deps.state_dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if keep.contains(&path) {
                continue;
            }
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            match removed {
                Ok(()) => tracing::info!(path = %path.display(), "removed an update leftover"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an update leftover")
                }
            }
        }
    }
}

struct Applier {
    mgr: UpdateManager,
    ctx: WorkerCtx,
}

/// One step of the run; an error sends the run into the rollback.
type StepResult = anyhow::Result<()>;

/// The longest an update waits for the database or the Docker engine to
/// come (back) before it gives up on the step (a rollback then, or `failed`).
const WAIT_DEADLINE: Duration = Duration::from_secs(300);

impl Applier {
    fn deps(&self) -> &super::manager::UpdateDeps {
        &self.mgr.inner.deps
    }

    fn log(&self, level: &str, run: &Run, msg: &str) {
        self.mgr.log(level, Some(run), msg);
        self.mgr.publish();
    }

    /// Persists the run in `state` (file first, then the DB mirror), logs it,
    /// and gives fault injection its chance.
    async fn transition(
        &self,
        run: &mut Run,
        state: UpdateState,
        step: &str,
    ) -> anyhow::Result<()> {
        run.state = state;
        run.step = step.to_string();
        run.updated_at = Utc::now();
        if !matches!(
            state,
            UpdateState::RollingBack | UpdateState::RolledBack | UpdateState::Failed
        ) {
            run.reached = state;
        }
        if state.is_final() {
            run.finished_at = Some(run.updated_at);
        }
        self.persist(run)?;
        if state.is_final() {
            crate::metrics::counters::UPDATE_RUNS.inc([state.as_str()]);
            // The run is over for every observer at once: whoever sees the
            // final state may upload or apply the next bundle.
            self.deps().activity.set_switched(BTreeSet::new());
            self.settle();
        }
        self.mirror(run).await;
        if let Some(a) =
            crate::notify::update_outcome(run.state.as_str(), &run.version, &run.from_version, step)
        {
            self.deps().notify.alert(a);
        }
        let level = match state {
            UpdateState::Failed => "ERROR",
            UpdateState::RollingBack | UpdateState::RolledBack => "WARN",
            _ => "INFO",
        };
        self.log(level, run, &format!("{}: {step}", state.as_str()));
        self.event(run, level, step).await;
        state::crash_point(state);
        Ok(())
    }

    fn persist(&self, run: &Run) -> anyhow::Result<()> {
        let mut p = self.mgr.inner.persisted.lock().unwrap();
        let mut next = p.clone();
        next.run = Some(run.clone());
        if run.state == UpdateState::Done {
            next.installed_version = run.version.clone();
        }
        state::save(&self.deps().state_dir, &next).context("cannot persist the update state")?;
        *p = next;
        Ok(())
    }

    /// A transition of the rollback: the disk refusing to record it (full)
    /// must not stop the undo. The state is kept in memory and published;
    /// a restart before it reaches the disk resolves the run again from the
    /// last state that did.
    async fn rollback_transition(&self, run: &mut Run, state: UpdateState, step: &str) {
        if let Err(e) = self.transition(run, state, step).await {
            let msg = format!("{e:#}");
            tracing::error!(error = %msg, state = state.as_str(), "update state not recorded on disk; the rollback goes on");
            self.log(
                "ERROR",
                run,
                &format!("{}: {step} (not recorded on disk: {msg})", state.as_str()),
            );
            let mut p = self.mgr.inner.persisted.lock().unwrap();
            p.run = Some(run.clone());
            drop(p);
            if state.is_final() {
                crate::metrics::counters::UPDATE_RUNS.inc([state.as_str()]);
                self.deps().activity.set_switched(BTreeSet::new());
                self.settle();
                if let Some(a) = crate::notify::update_outcome(
                    state.as_str(),
                    &run.version,
                    &run.from_version,
                    step,
                ) {
                    self.deps().notify.alert(a);
                }
            } else {
                self.mgr.publish();
            }
        }
    }

    async fn mirror(&self, run: &Run) {
        let db = &self.deps().db;
        let result = run.state.is_final().then(|| run.state.as_str().to_string());
        let row = crate::db::update::RunRow {
            id: run.id.clone(),
            version: run.version.clone(),
            from_version: run.from_version.clone(),
            source: run.source.as_str().into(),
            state: run.state.as_str().into(),
            result,
            step: run.step.clone(),
            bundle_sha256: Some(run.plan.check.sha256.clone()),
            started_at: run.started_at,
            updated_at: run.updated_at,
            finished_at: run.finished_at,
            error: run.error.clone(),
        };
        let write = crate::db::update::upsert_run(db.pool(), &row);
        match tokio::time::timeout(Duration::from_secs(10), write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "update state not mirrored in the database"),
            Err(_) => tracing::warn!("update state not mirrored in the database: timed out"),
        }
    }

    async fn event(&self, run: &Run, level: &str, msg: &str) {
        let severity = match level {
            "ERROR" => "CRITICAL",
            "WARN" => "WARNING",
            _ => "INFO",
        };
        let write = crate::db::update::insert_event(
            self.deps().db.pool(),
            &run.id,
            Utc::now(),
            severity,
            run.state.as_str(),
            msg,
        );
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(10), write).await {
            tracing::debug!(error = %e, "update event not written");
        }
    }

    /// validated → … → done, or into the rollback on the first failure.
    /// Whatever happens, the updater and the switched services are given
    /// back at the end (an error here used to leave the phase `Applying`:
    /// every later upload was 409 until a restart).
    async fn execute(&self, run: Run) -> anyhow::Result<()> {
        let outcome = self.carry_out(run).await;
        self.release();
        outcome
    }

    async fn carry_out(&self, mut run: Run) -> anyhow::Result<()> {
        let t0 = Instant::now();
        let result = self.forward(&mut run).await;
        match result {
            Ok(timings) => {
                let step = format!("installed {} ({timings})", run.version);
                self.transition(&mut run, UpdateState::Done, &step).await?;
                self.finish_done(&run).await;
                tracing::info!(total_ms = t0.elapsed().as_millis() as u64, "update done");
            }
            Err(_) if self.ctx.cancel.is_cancelled() => {
                // A shutdown (the package's restart among them) is not a
                // failure: the state on disk says what the next start does.
                self.log(
                    "INFO",
                    &run,
                    &format!(
                        "the daemon is stopping during {}; the next start resumes the run",
                        run.state.as_str()
                    ),
                );
            }
            Err(e) => {
                let msg = format!("{e:#}");
                self.log(
                    "WARN",
                    &run,
                    &format!("update failed in {}: {msg}", run.state.as_str()),
                );
                run.error = Some(msg);
                self.rollback(&mut run).await?;
            }
        }
        Ok(())
    }

    /// The run is over: self-healing gets the switched services back, and
    /// the updater goes back to idle.
    fn release(&self) {
        self.deps().activity.set_switched(BTreeSet::new());
        self.settle();
    }

    /// Back to idle (the run stays visible in the status until the next);
    /// a bundle that started arriving meanwhile keeps its claim.
    fn settle(&self) {
        {
            let mut phase = self.mgr.inner.phase.lock().unwrap();
            if matches!(*phase, Phase::Applying) {
                *phase = Phase::Idle;
            }
        }
        self.mgr.publish();
    }

    async fn forward(&self, run: &mut Run) -> anyhow::Result<String> {
        self.transition(
            run,
            UpdateState::BackingUp,
            "dumping the database and recording the running containers",
        )
        .await?;
        self.backup(run).await?;
        self.persist(run)?;

        let t = Instant::now();
        self.transition(run, UpdateState::LoadingImages, "loading the images")
            .await?;
        self.load_images(run).await?;
        self.install_models(run).await?;
        let load_ms = t.elapsed().as_millis();

        self.transition(run, UpdateState::Migrating, "running the migrations")
            .await?;
        self.migrate(run).await?;

        let t = Instant::now();
        self.transition(
            run,
            UpdateState::Switching,
            "installing configs and switching the containers",
        )
        .await?;
        self.switch(run).await?;
        let switch_ms = t.elapsed().as_millis();

        let t = Instant::now();
        self.transition(
            run,
            UpdateState::Verifying,
            "waiting for the switched services to be healthy",
        )
        .await?;
        if run.has_package() {
            // Returns only if the package is not installed: the install
            // restarts the daemon, whose new binary resumes `verifying`.
            self.install_package(run).await?;
        }
        self.verify(run).await?;
        let verify_ms = t.elapsed().as_millis();
        Ok(format!(
            "load {load_ms} ms, switch {switch_ms} ms, verify {verify_ms} ms"
        ))
    }

    async fn backup(&self, run: &mut Run) -> StepResult {
        let deps = self.deps();
        let dir = deps.state_dir.join("updates/backup").join(&run.id);
        std::fs::create_dir_all(dir.join("configs")).context("cannot create the backup dir")?;
        let pg = PgTarget::from_url(&deps.database_url)?;
        let dump = dir.join("db.dump");
        let size = backup::dump_database(&pg, &dump)
            .await
            .context("database backup failed")?;
        self.log(
            "INFO",
            run,
            &format!("database dumped ({size} bytes) and checked readable"),
        );
        let overrides = deps
            .services
            .image_overrides()
            .await
            .context("supervisor")?;
        let mut services = Vec::new();
        for img in &run.plan.images {
            let s = deps.services.service(&img.service).ok_or_else(|| {
                anyhow!(
                    "the bundle updates service {:?}, which this box does not run",
                    img.service
                )
            })?;
            let image_id = deps
                .services
                .image_id(&s.image)
                .await
                .context("supervisor")?;
            services.push(ServiceBackup {
                service: s.name.clone(),
                image: s.image.clone(),
                image_id: image_id.or(s.image_id.clone()),
                override_image: overrides.get(&s.name).cloned(),
                container_id: s.container_id.clone(),
                counts: !matches!(
                    s.state,
                    ServiceState::Unhealthy
                        | ServiceState::Failed
                        | ServiceState::ImageMissing
                        | ServiceState::Stopped
                ),
            });
        }
        // Checked again now: the files on the box may have changed since the
        // upload. What the bundled catalog changes is verified like a switch.
        let mut catalog_services = Vec::new();
        if let Some(next) = deps.check_bundled_configs(&run.plan.configs)? {
            let now = crate::docker::load_catalog(&deps.services_file).unwrap_or_default();
            for s in &next.services {
                if now.services.iter().all(|o| o != s) {
                    catalog_services.push(s.name.clone());
                }
            }
        }
        let mut configs = Vec::new();
        for c in &run.plan.configs {
            let target = deps.config_target(&c.name)?;
            let saved = if target.exists() {
                let copy = dir.join("configs").join(&c.name);
                backup::copy_atomic(&target, &copy)
                    .await
                    .with_context(|| format!("cannot back up {}", target.display()))?;
                Some(copy)
            } else {
                None
            };
            configs.push(ConfigBackup {
                name: c.name.clone(),
                target,
                saved,
            });
        }
        run.backup = Some(Backup {
            dir,
            db_dump: dump,
            services,
            configs,
            catalog_services,
            previous_binary: run
                .has_package()
                .then(|| crate::build_info::VERSION.to_string()),
        });
        Ok(())
    }

    async fn load_images(&self, run: &mut Run) -> StepResult {
        let h = &self.deps().services;
        let n = run.plan.images.len();
        for (i, img) in run.plan.images.clone().iter().enumerate() {
            self.ctx.beat();
            run.step = format!("loading image {}/{n}: {}", i + 1, img.image);
            self.persist(run)?;
            self.mgr.publish();
            // What the tarball itself says the tag will point at: a tag that
            // merely exists afterwards may have been on the box before.
            let (tarball, reference) = (img.tarball.clone(), img.image.clone());
            let expected = tokio::task::spawn_blocking(move || {
                super::image_tar::image_ids_for(&tarball, &reference)
            })
            .await
            .context("image tarball reader")?
            .with_context(|| format!("the image tarball for {}", img.image))?;
            let loaded = h
                .load_image(&img.tarball)
                .await
                .with_context(|| format!("docker load of {}", img.image))?;
            let now = h.image_id(&img.image).await?;
            if !now.as_ref().is_some_and(|id| expected.contains(id)) {
                bail!(
                    "after loading its tarball {} is {}, not the image the tarball carries ({}); loaded {:?}",
                    img.image,
                    now.as_deref().unwrap_or("missing"),
                    expected.join(", "),
                    loaded
                );
            }
            self.log(
                "INFO",
                run,
                &format!("loaded {} ({})", img.image, loaded.join(", ")),
            );
        }
        Ok(())
    }

    /// Puts the bundle's models into their runtimes' stores (files only:
    /// the runtime lists them from there; `verify` checks that it does).
    async fn install_models(&self, run: &mut Run) -> StepResult {
        if run.plan.models.is_empty() {
            return Ok(());
        }
        let catalog = crate::docker::load_catalog(&self.deps().services_file).map_err(|e| {
            let e: Vec<String> = e.iter().map(ToString::to_string).collect();
            anyhow!("the service catalog: {}", e.join("; "))
        })?;
        let n = run.plan.models.len();
        for (i, m) in run.plan.models.clone().iter().enumerate() {
            self.ctx.beat();
            run.step = format!("installing model {}/{n}: {}", i + 1, m.name);
            self.persist(run)?;
            self.mgr.publish();
            let store = model_store(&catalog, &m.service, &m.name)?;
            // The bundle says how big the model is: it must fit the store.
            let need = tokio::fs::metadata(&m.tarball)
                .await
                .map_or(0, |md| md.len());
            let free = crate::metrics::collect::disk_usage(
                &crate::ai::admission::existing_ancestor(&store),
            )
            .map_or(u64::MAX, |d| d.free_bytes);
            if need > free {
                let short = crate::ai::admission::Shortfall::Disk {
                    need,
                    free,
                    margin: 0,
                };
                bail!("{}", short.message(&m.name, crate::ai::admission::Lang::En));
            }
            let (tar, name) = (m.tarball.clone(), m.name.clone());
            let created = tokio::task::spawn_blocking(move || {
                super::model_tar::install_model(&tar, &store, &name)
            })
            .await
            .context("the model installer")?
            .with_context(|| format!("installing the model {}", m.name))?;
            let n_files = created.len();
            run.model_files.extend(created);
            self.persist(run)?;
            self.log(
                "INFO",
                run,
                &format!(
                    "installed the model {} for {} ({n_files} new files)",
                    m.name, m.service
                ),
            );
        }
        Ok(())
    }

    /// Each installed model is listed by its runtime (within 30 s).
    async fn models_listed(&self, run: &Run) -> StepResult {
        let ai = crate::ai::Ai::new();
        for m in &run.plan.models {
            let backend = crate::ai::pulls::backend_of(&m.service)
                .with_context(|| format!("model {}: unknown runtime {}", m.name, m.service))?;
            let want = crate::ai::admission::full_name(&m.name);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                self.ctx.beat();
                let listed = match crate::ai::locate(&self.deps().services.services(), backend) {
                    Ok(t) => ai.tags(&t).await.map(|tags| {
                        tags.iter()
                            .any(|t| crate::ai::admission::full_name(&t.name) == want)
                    }),
                    Err(e) => Err(e),
                };
                match listed {
                    Ok(true) => break,
                    _ if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok(false) => bail!(
                        "the {} runtime does not list the installed model {}",
                        m.service,
                        m.name
                    ),
                    Err(e) => bail!("the installed model {} could not be checked: {e}", m.name),
                }
            }
            self.log(
                "INFO",
                run,
                &format!("the {} runtime lists {}", m.service, m.name),
            );
        }
        Ok(())
    }

    async fn migrate(&self, run: &mut Run) -> StepResult {
        let n = run.plan.migrations.len();
        for (i, m) in run.plan.migrations.clone().iter().enumerate() {
            self.ctx.beat();
            run.step = format!("migration {}/{n}: {}", i + 1, m.name);
            self.persist(run)?;
            self.mgr.publish();
            let sql = tokio::fs::read_to_string(&m.path)
                .await
                .with_context(|| format!("cannot read migration {}", m.name))?;
            crate::db::update::run_migration(self.deps().db.pool(), &sql, m.transactional)
                .await
                .with_context(|| format!("migration {}/{n} {} failed", i + 1, m.name))?;
            self.log(
                "INFO",
                run,
                &format!("migration {}/{n} {} applied", i + 1, m.name),
            );
        }
        Ok(())
    }

    async fn switch(&self, run: &mut Run) -> StepResult {
        let deps = self.deps();
        let backup = run.backup.clone().context("no backup recorded")?;
        deps.activity.set_switched(run.touched_services());
        for (c, b) in run.plan.configs.iter().zip(&backup.configs) {
            if let Some(dir) = b.target.parent() {
                tokio::fs::create_dir_all(dir)
                    .await
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            backup::copy_atomic(&c.path, &b.target)
                .await
                .with_context(|| format!("cannot install config {}", b.target.display()))?;
            self.log(
                "INFO",
                run,
                &format!("config {} installed", b.target.display()),
            );
        }
        if run.reloads() {
            self.reload(run).await?;
        }
        for img in &run.plan.images {
            self.ctx.beat();
            deps.services
                .set_image(&img.service, Some(&img.image))
                .await
                .with_context(|| format!("switching {} to {}", img.service, img.image))?;
            self.log(
                "INFO",
                run,
                &format!("{} now runs {}", img.service, img.image),
            );
        }
        Ok(())
    }

    /// Every touched service whose check was not failing before must be healthy within
    /// `verify_timeout` and then stay healthy for `stability_window`. A
    /// container that exits fails at once (nothing restarts it meanwhile).
    async fn verify(&self, run: &Run) -> StepResult {
        let backup = run.backup.as_ref().context("no backup recorded")?;
        let mut required: Vec<String> = backup
            .services
            .iter()
            .filter(|s| s.counts)
            .map(|s| s.service.clone())
            .collect();
        for name in &backup.catalog_services {
            if !required.contains(name) && backup.services.iter().all(|s| &s.service != name) {
                required.push(name.clone());
            }
        }
        for s in backup.services.iter().filter(|s| !s.counts) {
            self.log(
                "WARN",
                run,
                &format!(
                    "{}'s check was already failing before the update: its health does not count",
                    s.service
                ),
            );
        }
        let cfg = &self.deps().config;
        let since = Utc::now();
        self.wait_healthy(&required, cfg.verify_timeout, cfg.stability_window)
            .await?;
        self.models_listed(run).await?;
        // SPEC §8: no critical self-healing event while verifying (the
        // healing loop writes its events within seconds; a database that
        // cannot answer does not block the update).
        let check = crate::db::update::critical_healing_event_since(self.deps().db.pool(), since);
        match tokio::time::timeout(Duration::from_secs(10), check).await {
            Ok(Ok(Some((kind, what)))) => {
                bail!("critical self-healing event while verifying: {kind}: {what}")
            }
            Ok(Ok(None)) => Ok(()),
            Ok(Err(e)) => {
                self.log(
                    "WARN",
                    run,
                    &format!("self-healing events not checked: {e}"),
                );
                Ok(())
            }
            Err(_) => {
                self.log("WARN", run, "self-healing events not checked: timed out");
                Ok(())
            }
        }
    }

    async fn wait_healthy(
        &self,
        required: &[String],
        timeout: Duration,
        window: Duration,
    ) -> StepResult {
        let h = &self.deps().services;
        let mut rx = h.subscribe();
        let deadline = Instant::now() + timeout;
        let mut since: Option<Instant> = None;
        loop {
            self.ctx.beat();
            let now = Instant::now();
            let services = h.services();
            let mut all = true;
            for name in required {
                let s = services
                    .iter()
                    .find(|s| &s.name == name)
                    .ok_or_else(|| anyhow!("service {name} is gone"))?;
                if s.state != ServiceState::Healthy {
                    all = false;
                    let exited = s.container_id.is_none()
                        || (s.last_exit_code.is_some() && s.address.is_none());
                    if matches!(
                        s.state,
                        ServiceState::Unhealthy | ServiceState::Failed | ServiceState::ImageMissing
                    ) && exited
                    {
                        bail!(
                            "{name} is down ({:?}, exit code {:?}){}",
                            s.state,
                            s.last_exit_code,
                            s.last_error
                                .as_deref()
                                .map(|e| format!(": {e}"))
                                .unwrap_or_default()
                        );
                    }
                }
            }
            if all {
                let t = *since.get_or_insert(now);
                if now.duration_since(t) >= window {
                    return Ok(());
                }
            } else {
                since = None;
                if now >= deadline {
                    let states: Vec<String> = required
                        .iter()
                        .filter_map(|n| services.iter().find(|s| &s.name == n))
                        .map(|s| format!("{} {:?}", s.name, s.state))
                        .collect();
                    bail!("not healthy within {timeout:?}: {}", states.join(", "));
                }
            }
            let nap = Duration::from_millis(250);
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => bail!("the daemon is shutting down"),
                _ = rx.changed() => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn finish_done(&self, run: &Run) {
        // The backup of the version just replaced stays (the "previous
        // version"); the one before it goes.
        let old = {
            let mut p = self.mgr.inner.persisted.lock().unwrap();
            let old = p.previous_backup.take();
            p.previous_backup = run.backup.as_ref().map(|b| b.dir.clone());
            let _ = state::save(&self.deps().state_dir, &p);
            old
        };
        if let Some(old) = old.filter(|o| Some(o) != run.backup.as_ref().map(|b| &b.dir)) {
            let _ = tokio::fs::remove_dir_all(old).await;
        }
        let _ = tokio::fs::remove_dir_all(&run.plan.staging_dir).await;
        let _ = tokio::fs::remove_file(package::outcome_path(&self.deps().state_dir)).await;
    }

    /// Undoes what `run.reached` says may have changed, newest first:
    /// images and containers, configs, then the database. Ends in
    /// `rolled_back`, or `failed` (one critical event, no retry).
    async fn rollback(&self, run: &mut Run) -> anyhow::Result<()> {
        self.deps().activity.set_switched(run.touched_services());
        self.rollback_transition(
            run,
            UpdateState::RollingBack,
            "restoring the previous version",
        )
        .await;
        match self.undo(run).await {
            Err(_) if self.ctx.cancel.is_cancelled() => {
                // Stopped (the reinstalled package's restart among the
                // reasons): `rolling_back` on disk, the next start resumes.
                self.log(
                    "INFO",
                    run,
                    "the daemon is stopping during the rollback; the next start resumes it",
                );
            }
            Ok(()) => {
                self.rollback_transition(
                    run,
                    UpdateState::RolledBack,
                    "the previous version runs again",
                )
                .await;
                let _ = tokio::fs::remove_dir_all(&run.plan.staging_dir).await;
                if let Some(b) = &run.backup {
                    let _ = tokio::fs::remove_dir_all(&b.dir).await;
                }
            }
            Err(e) => {
                let msg = format!("rollback failed: {e:#}");
                run.error = Some(match &run.error {
                    Some(first) => format!("{first}; {msg}"),
                    None => msg.clone(),
                });
                self.rollback_transition(
                    run,
                    UpdateState::Failed,
                    &format!("{msg}; the box needs a person (nothing is retried)"),
                )
                .await;
            }
        }
        self.deps().activity.set_switched(BTreeSet::new());
        Ok(())
    }

    async fn undo(&self, run: &mut Run) -> StepResult {
        let deps = self.deps();
        let reached = run.reached;
        let Some(backup) = run.backup.clone() else {
            self.log("INFO", run, "nothing was changed yet: nothing to undo");
            return Ok(());
        };
        if run.has_package() && package::installed_version().as_deref() == Some(&run.version) {
            // The bundle's package is installed: the kept one goes back
            // first, and the binary it brings back does the rest (the run
            // is `rolling_back` on disk).
            let previous = backup
                .previous_binary
                .clone()
                .unwrap_or_else(|| run.from_version.clone());
            self.restore_package(run, &previous).await?;
        }
        // Model files this run added go (blobs that were there stay).
        for f in run.model_files.clone().iter().rev() {
            match tokio::fs::remove_file(f).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(anyhow!("removing {}: {e}", f.display())),
            }
        }
        if !run.model_files.is_empty() {
            self.log(
                "INFO",
                run,
                &format!(
                    "removed the {} model files the update added",
                    run.model_files.len()
                ),
            );
            run.model_files.clear();
            self.persist(run)?;
        }
        let touched_live = matches!(
            reached,
            UpdateState::Switching | UpdateState::Verifying | UpdateState::Done
        );
        // Loading a bundle's image moves its tag at once: from the first
        // load on, every rollback puts the old tags back, switched or not
        // (a tag left on the new image would be what the next recreate runs).
        let tags_moved =
            touched_live || matches!(reached, UpdateState::LoadingImages | UpdateState::Migrating);
        if tags_moved {
            for s in &backup.services {
                self.ctx.beat();
                if let Some(id) = &s.image_id {
                    let now = deps.services.image_id(&s.image).await?;
                    if now.as_deref() != Some(id.as_str()) {
                        deps.services
                            .tag_image(id, &s.image)
                            .await
                            .with_context(|| format!("re-tagging {} as {}", id, s.image))?;
                        self.log("INFO", run, &format!("{} points at {} again", s.image, id));
                    }
                }
            }
        }
        if touched_live {
            for s in &backup.services {
                self.ctx.beat();
                deps.services
                    .set_image(&s.service, s.override_image.as_deref())
                    .await
                    .with_context(|| format!("switching {} back to {}", s.service, s.image))?;
                self.log(
                    "INFO",
                    run,
                    &format!("{} runs {} again", s.service, s.image),
                );
            }
            for c in &backup.configs {
                match &c.saved {
                    Some(saved) => backup::copy_atomic(saved, &c.target)
                        .await
                        .with_context(|| format!("restoring {}", c.target.display()))?,
                    None => match tokio::fs::remove_file(&c.target).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(anyhow!("removing {}: {e}", c.target.display())),
                    },
                }
            }
            if run.reloads() {
                self.reload(run).await?;
            }
        }
        if matches!(
            reached,
            UpdateState::Migrating
                | UpdateState::Switching
                | UpdateState::Verifying
                | UpdateState::Done
        ) {
            let pg = PgTarget::from_url(&deps.database_url)?;
            self.wait_db().await?;
            backup::restore_database(&pg, &backup.db_dump, &backup.dir.join("restore"))
                .await
                .context("restoring the database backup")?;
            // The restore took this run's row with it: write it again.
            self.mirror(run).await;
            self.log("INFO", run, "database restored from the backup");
        }
        if touched_live {
            // The catalog's services as they were: back on their old spec
            // (one the bundle added is gone again).
            let mut required: Vec<String> = backup
                .services
                .iter()
                .filter(|s| s.counts)
                .map(|s| s.service.clone())
                .collect();
            for name in &backup.catalog_services {
                if !required.contains(name) && deps.services.service(name).is_some() {
                    required.push(name.clone());
                }
            }
            let cfg = &deps.config;
            self.wait_healthy(&required, cfg.verify_timeout, Duration::ZERO)
                .await
                .context("the previous version did not come back healthy")?;
        }
        Ok(())
    }

    /// Asks the daemon to reload its config and catalog (as SIGHUP does)
    /// and waits for the answer: a refusal fails the step.
    async fn reload(&self, run: &Run) -> StepResult {
        let Some(control) = &self.deps().control else {
            return Ok(());
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        control
            .send(crate::state::Control::Reload(Some(tx)))
            .await
            .map_err(|_| anyhow!("the daemon is shutting down"))?;
        match tokio::time::timeout(WAIT_DEADLINE, rx).await {
            Ok(Ok(Ok(changed))) => {
                let what = if changed.is_empty() {
                    "nothing changed".to_string()
                } else {
                    changed.join("; ")
                };
                self.log("INFO", run, &format!("config reloaded: {what}"));
                Ok(())
            }
            Ok(Ok(Err(errors))) => bail!("the config reload was refused: {}", errors.join("; ")),
            Ok(Err(_)) => bail!("the daemon is shutting down"),
            Err(_) => bail!("the config reload did not answer within {WAIT_DEADLINE:?}"),
        }
    }

    /// Asks the root helper to install the bundle's package, and waits for
    /// the restart into it (the package's postinst restarts the daemon).
    async fn install_package(&self, run: &Run) -> StepResult {
        if crate::build_info::VERSION == run.version {
            return Ok(()); // resumed by the new binary
        }
        let req = package::Request {
            run: run.id.clone(),
            action: package::Action::Install,
            version: run.version.clone(),
            staging_dir: Some(run.plan.staging_dir.clone()),
        };
        package::ask(&self.deps().state_dir, &req)?;
        self.log(
            "INFO",
            run,
            "package: asked the root helper (arasuld-package.path) to install it",
        );
        let outcome = self.wait_package(run, package::Action::Install).await?;
        if !outcome.ok {
            bail!("the package was not installed: {}", outcome.message);
        }
        self.log("INFO", run, &format!("package: {}", outcome.message));
        self.wait_for_restart(run).await
    }

    /// Asks the root helper to reinstall the package the run replaced.
    async fn restore_package(&self, run: &Run, version: &str) -> StepResult {
        let req = package::Request {
            run: run.id.clone(),
            action: package::Action::Restore,
            version: version.to_string(),
            staging_dir: None,
        };
        package::ask(&self.deps().state_dir, &req)?;
        self.log(
            "INFO",
            run,
            &format!("package: asked the root helper to reinstall {version}"),
        );
        let outcome = self.wait_package(run, package::Action::Restore).await?;
        if !outcome.ok {
            bail!(
                "the previous package was not reinstalled: {}",
                outcome.message
            );
        }
        self.log("INFO", run, &format!("package: {}", outcome.message));
        self.wait_for_restart(run).await
    }

    async fn wait_package(
        &self,
        run: &Run,
        action: package::Action,
    ) -> anyhow::Result<package::Outcome> {
        let timeout = self.deps().config.package_timeout;
        let deadline = Instant::now() + timeout;
        loop {
            self.ctx.beat();
            if let Some(o) = package::outcome_for(&self.deps().state_dir, &run.id, action) {
                return Ok(o);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the package helper did not answer within {timeout:?} (is arasuld-package.path active?)"
                );
            }
            if !self.ctx.sleep(Duration::from_millis(500)).await {
                bail!("the daemon is shutting down");
            }
        }
    }

    /// The package is in place: the restart into it ends this binary's part.
    async fn wait_for_restart(&self, run: &Run) -> StepResult {
        let timeout = self.deps().config.package_timeout;
        self.log(
            "INFO",
            run,
            "package: waiting for the daemon to be restarted into it",
        );
        if !self.ctx.sleep(timeout).await {
            bail!("the daemon is shutting down");
        }
        bail!("the package is installed but the daemon was not restarted within {timeout:?}")
    }

    async fn wait_db(&self) -> StepResult {
        let mut logged = false;
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            self.ctx.beat();
            let s = self.deps().db.status();
            if s.up && s.migrated {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the database did not come back within {WAIT_DEADLINE:?}");
            }
            if !logged {
                tracing::warn!("update: waiting for the database");
                logged = true;
            }
            if !self.ctx.sleep(Duration::from_millis(500)).await {
                bail!("the daemon is shutting down");
            }
        }
    }

    /// Waits until the supervisor has looked at Docker (services known).
    async fn wait_supervisor(&self) -> StepResult {
        let h = &self.deps().services;
        let mut rx = h.subscribe();
        let deadline = Instant::now() + WAIT_DEADLINE;
        loop {
            self.ctx.beat();
            let s = h.services();
            if s.is_empty() || s.iter().any(|s| s.state != ServiceState::Unknown) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the Docker engine did not answer within {WAIT_DEADLINE:?}");
            }
            tokio::select! {
                _ = self.ctx.cancel.cancelled() => bail!("the daemon is shutting down"),
                _ = rx.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// Resolves a run a crash interrupted (rule in the module docs).
    async fn recover(&self, mut run: Run) -> anyhow::Result<()> {
        self.log(
            "WARN",
            &run,
            &format!(
                "the daemon stopped during {}; resolving",
                run.state.as_str()
            ),
        );
        match run.state {
            UpdateState::Validated => {
                {
                    let mut p = self.mgr.inner.persisted.lock().unwrap();
                    p.run = None;
                    let _ = state::save(&self.deps().state_dir, &p);
                }
                let ok = run.plan.staging_dir.is_dir();
                *self.mgr.inner.phase.lock().unwrap() = if ok {
                    Phase::Pending(Box::new(run.plan.clone()))
                } else {
                    Phase::Idle
                };
                self.mgr.publish();
                return Ok(());
            }
            UpdateState::Verifying => {
                self.wait_db().await?;
                self.wait_supervisor().await?;
                self.deps().activity.set_switched(run.touched_services());
                let verified = if run.has_package() && crate::build_info::VERSION != run.version {
                    let why = package::outcome_for(
                        &self.deps().state_dir,
                        &run.id,
                        package::Action::Install,
                    )
                    .map(|o| format!("the package helper said: {}", o.message))
                    .unwrap_or_else(|| "the daemon restarted without it".into());
                    Err(anyhow!(
                        "arasuld {} runs, not the bundle's {}: {why}",
                        crate::build_info::VERSION,
                        run.version
                    ))
                } else {
                    self.verify(&run).await
                };
                match verified {
                    Ok(()) => {
                        self.transition(&mut run, UpdateState::Done, "verified after the restart")
                            .await?;
                        self.finish_done(&run).await;
                    }
                    Err(e) => {
                        run.error = Some(format!("{e:#}"));
                        self.rollback(&mut run).await?;
                    }
                }
            }
            UpdateState::Failed | UpdateState::Done | UpdateState::RolledBack => {}
            _ => {
                self.wait_db().await?;
                self.wait_supervisor().await?;
                if run.error.is_none() {
                    run.error = Some(format!(
                        "interrupted during {} (daemon restart)",
                        run.reached.as_str()
                    ));
                }
                self.rollback(&mut run).await?;
            }
        }
        self.release();
        Ok(())
    }
}

/// The host directory of the model store of the runtime with role `service`.
fn model_store(
    catalog: &crate::docker::Catalog,
    service: &str,
    model: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let backend = crate::ai::pulls::backend_of(service)
        .with_context(|| format!("model {model}: unknown runtime {service}"))?;
    let spec = catalog
        .services
        .iter()
        .find(|s| s.role == backend.role())
        .with_context(|| {
            format!("no service with role {service} in the catalog for the model {model}")
        })?;
    crate::ai::admission::store_dir(spec).with_context(|| {
        format!(
            "{}'s model store is not a host directory (a named volume): the model {model} cannot be installed",
            spec.name
        )
    })
}
