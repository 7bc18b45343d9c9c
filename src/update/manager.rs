//! The one updater of a daemon: takes bundles (upload or USB), verifies them
//! into staging and keeps one pending, lets one update run at a time (any
//! second one is `update_in_progress`), publishes the status (watch), and
//! hands the run to the `update-applier` worker, which also resolves an
//! interrupted run at start (see `apply`). It holds no SQL and no Docker
//! client: the database through `db::update`, containers through the
//! supervisor.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

pub use super::state::Source;
use super::state::{
    self, CheckComponents, CheckImage, CheckSignature, Persisted, Plan, PlanConfig, PlanImage,
    PlanMigration, PlanModel, Run, UpdateCheck, UpdateState, UpdateStatus,
};
use super::{BundleError, TrustedKeys, VerifiedBundle, VerifyLimits};
use crate::db::Db;
use crate::docker::SupervisorHandle;
use crate::tasks::{WorkerKind, WorkerName, Workers};

/// Log file inside `paths.log_dir`.
pub const LOG_FILE: &str = crate::logs::Source::Update.file_name();
/// Log lines kept in the status.
const STATUS_LOG_LINES: usize = 50;

/// The `update:` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpdateConfig {
    /// Largest bundle accepted (upload or USB); 413 `bundle_too_large` beyond.
    pub max_bundle_bytes: u64,
    /// Every switched service must be healthy within this long.
    #[serde(with = "humantime_serde")]
    pub verify_timeout: Duration,
    /// ... and stay healthy this long before the update counts as done.
    #[serde(with = "humantime_serde")]
    pub stability_window: Duration,
    /// Where a bundle's config files are installed (`<config_dir>/<name>`);
    /// `arasuld.yaml` and `services.yaml` become the update drop-ins of the
    /// daemon's own config and catalog instead.
    pub config_dir: PathBuf,
    /// How long a bundle's package install (or a rollback's reinstall) by
    /// the root helper (`arasuld-package.path`) may take to answer.
    #[serde(with = "humantime_serde")]
    pub package_timeout: Duration,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            max_bundle_bytes: 16 << 30,
            verify_timeout: Duration::from_secs(120),
            stability_window: Duration::from_secs(60),
            config_dir: "/etc/arasul".into(),
            package_timeout: Duration::from_secs(600),
        }
    }
}

impl UpdateConfig {
    /// (key, message) for each invalid value.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.max_bundle_bytes < 1024 {
            out.push((
                "update.max_bundle_bytes".into(),
                "must be at least 1024".into(),
            ));
        }
        if self.verify_timeout.is_zero() {
            out.push((
                "update.verify_timeout".into(),
                "must be longer than 0s".into(),
            ));
        }
        if self.package_timeout.is_zero() {
            out.push((
                "update.package_timeout".into(),
                "must be longer than 0s".into(),
            ));
        }
        if !self.config_dir.is_absolute() {
            out.push((
                "update.config_dir".into(),
                format!(
                    "must be an absolute path, got {}",
                    self.config_dir.display()
                ),
            ));
        }
        out
    }
}

/// Why a bundle or a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("an update is already in progress ({0}); try again when it has finished")]
    InProgress(&'static str),
    #[error("no validated update is waiting; upload a bundle first")]
    NoneStaged,
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("{0}")]
    BadUpload(String),
    /// A bundled `arasuld.yaml` or `services.yaml` that `check-config`
    /// would refuse (each error with file, line and key).
    #[error("the bundle's config would not load: {0}")]
    InvalidConfig(String),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl UpdateError {
    pub fn code(&self) -> &'static str {
        match self {
            UpdateError::InProgress(_) => "update_in_progress",
            UpdateError::NoneStaged => "no_update_staged",
            UpdateError::Bundle(b) => b.code(),
            UpdateError::TooLarge { .. } => "bundle_too_large",
            UpdateError::BadUpload(_) => "invalid_bundle",
            UpdateError::InvalidConfig(_) => "invalid_config",
            UpdateError::Internal(_) => "internal",
        }
    }
}

/// What the updater needs from the rest of the daemon.
#[derive(Clone)]
pub struct UpdateDeps {
    pub config: UpdateConfig,
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub keys_dir: PathBuf,
    /// `database.url`, for pg_dump / psql.
    pub database_url: String,
    pub db: Db,
    pub services: SupervisorHandle,
    /// Published here as the run goes; read by healing and the reboot checks.
    pub activity: super::UpdateActivity,
    /// The daemon's own config file and service catalog: a bundled
    /// `arasuld.yaml` / `services.yaml` becomes their update drop-in
    /// ([`crate::dropin::update_path`]), never the dpkg conffile itself.
    pub config_path: PathBuf,
    pub services_file: PathBuf,
    /// Where a config reload is asked for once a bundled config is in place
    /// (None in tests of the updater alone: nothing reloads).
    pub control: Option<tokio::sync::mpsc::Sender<crate::state::Control>>,
    /// An update refused, rolled back, failed or done reaches the owner here.
    pub notify: crate::notify::Notifier,
}

/// The daemon's config and its catalog, by the names a bundle gives them.
pub const DAEMON_CONFIG: &str = "arasuld.yaml";
pub const CATALOG: &str = "services.yaml";

impl UpdateDeps {
    /// Where a bundled config named `name` is installed: the update drop-in
    /// of the daemon's config or catalog, else `<config_dir>/<name>`.
    pub fn config_target(&self, name: &str) -> anyhow::Result<PathBuf> {
        Ok(match name {
            DAEMON_CONFIG => crate::dropin::update_path(&self.config_path),
            CATALOG => crate::dropin::update_path(&self.services_file),
            _ => super::backup::config_target(&self.config.config_dir, name)?,
        })
    }

    /// The bundled daemon config and catalog loaded as `check-config` loads
    /// them, with the bundle's files in place of the update drop-ins:
    /// refused here, a broken file never reaches the box. Returns the
    /// catalog the box will run.
    pub fn check_bundled_configs(
        &self,
        configs: &[PlanConfig],
    ) -> Result<Option<crate::docker::Catalog>, UpdateError> {
        let staged = |name: &str| {
            configs
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.path.as_path())
        };
        let (daemon, catalog) = (staged(DAEMON_CONFIG), staged(CATALOG));
        let refuse = |errors: Vec<crate::config::ConfigError>| {
            let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
            UpdateError::InvalidConfig(lines.join("; "))
        };
        let mut services_file = self.services_file.clone();
        if daemon.is_some() {
            let c =
                crate::config::load_with_update(&self.config_path, false, std::env::vars(), daemon)
                    .map_err(refuse)?;
            services_file = c.paths.services_file;
        }
        if catalog.is_some() || daemon.is_some() {
            let cat =
                crate::docker::load_catalog_with_update(&services_file, catalog).map_err(refuse)?;
            return Ok(Some(cat));
        }
        Ok(None)
    }
}

impl UpdateDeps {
    /// The updater's parts as the daemon's config names them.
    pub fn from_config(
        config: &crate::config::Config,
        db: &Db,
        services: &SupervisorHandle,
    ) -> Self {
        UpdateDeps {
            config: config.update.clone(),
            state_dir: config.paths.state_dir.clone(),
            log_dir: config.paths.log_dir.clone(),
            keys_dir: config.paths.keys_dir.clone(),
            database_url: config.database.url.expose().to_string(),
            db: db.clone(),
            services: services.clone(),
            activity: super::UpdateActivity::new(),
            config_path: crate::config::DEFAULT_PATH.into(),
            services_file: config.paths.services_file.clone(),
            control: None,
            notify: crate::notify::Notifier::detached(),
        }
    }
}

pub(crate) enum Phase {
    Idle,
    /// An upload or USB copy is arriving or being verified.
    Receiving {
        source: Source,
    },
    Pending(Box<Plan>),
    /// A run is between validated and a final state.
    Applying,
}

pub(crate) struct Inner {
    pub deps: UpdateDeps,
    pub phase: Mutex<Phase>,
    pub persisted: Mutex<Persisted>,
    pub status: watch::Sender<UpdateStatus>,
    log: Mutex<VecDeque<String>>,
    /// Bytes received of the upload in progress, and the total if known.
    progress: Mutex<Option<(u64, Option<u64>)>>,
    pub wake: mpsc::Sender<()>,
    /// Where the pending bundle came from.
    last_source: Mutex<Source>,
    /// The interrupted run (if any) was looked at by this daemon.
    pub recovered: std::sync::atomic::AtomicBool,
    wake_rx: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// What of the updater's directories is still needed: the previous
/// version's backup, the staging of a run not yet over, the backup of a run
/// that was not rolled back (done: the version before; failed: what a person
/// needs), and the pending bundle's staging.
pub(crate) fn kept_paths(p: &Persisted, pending: Option<&Plan>) -> BTreeSet<PathBuf> {
    let mut keep: BTreeSet<PathBuf> = p.previous_backup.iter().cloned().collect();
    if let Some(run) = &p.run {
        if !run.state.is_final() {
            keep.insert(run.plan.staging_dir.clone());
        }
        if run.state != UpdateState::RolledBack {
            keep.extend(run.backup.as_ref().map(|b| b.dir.clone()));
        }
    }
    keep.extend(pending.map(|plan| plan.staging_dir.clone()));
    keep
}

/// A verification's staging dir until its plan is handed over: dropped
/// before that (the caller went away), it is removed, now and by the
/// verification thread when it ends (whichever comes last finds it).
struct OrphanStaging {
    dir: PathBuf,
    abandoned: Arc<std::sync::atomic::AtomicBool>,
    kept: bool,
}

impl OrphanStaging {
    fn new(dir: PathBuf) -> Self {
        OrphanStaging {
            dir,
            abandoned: Arc::default(),
            kept: false,
        }
    }

    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for OrphanStaging {
    fn drop(&mut self) {
        if !self.kept {
            self.abandoned
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Cheap to clone; one per daemon.
#[derive(Clone)]
pub struct UpdateManager {
    pub(crate) inner: Arc<Inner>,
}

/// Held while an upload streams in; dropping it without `finish` gives
/// the updater back (the partial file is the caller's to delete).
pub struct UploadTicket {
    mgr: UpdateManager,
    source: Source,
    done: bool,
}

impl UploadTicket {
    /// Bytes received so far (and the total when known), for the status.
    pub fn progress(&self, received: u64, total: Option<u64>) {
        *self.mgr.inner.progress.lock().unwrap() = Some((received, total));
        self.mgr.publish();
    }

    /// Verifies the complete file into staging; it becomes the pending update.
    pub async fn finish(mut self, bundle: &Path) -> Result<UpdateCheck, UpdateError> {
        let r = self.mgr.verify_pending(bundle, self.source).await;
        // Only now: a client that goes away during the verification drops
        // this future, and the ticket's drop gives the updater back.
        self.done = true;
        r
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if !self.done {
            let mut phase = self.mgr.inner.phase.lock().unwrap();
            if matches!(*phase, Phase::Receiving { .. }) {
                *phase = Phase::Idle;
            }
            drop(phase);
            *self.mgr.inner.progress.lock().unwrap() = None;
            self.mgr.publish();
        }
    }
}

/// Spawns the `update-applier` worker around a new manager (see
/// [`UpdateManager::new`]): it resolves a run interrupted by a crash, then
/// carries out each apply. Restarted after a panic, it resolves the run it
/// was in from the state file again.
pub fn spawn(workers: &Workers, deps: UpdateDeps) -> UpdateManager {
    let mgr = UpdateManager::new(deps);
    let m = mgr.clone();
    workers.spawn(
        WorkerName::UpdateApplier,
        WorkerKind::Auxiliary,
        move |ctx| {
            let mgr = m.clone();
            async move { super::apply::run_worker(ctx, mgr).await }
        },
    );
    mgr
}

impl UpdateManager {
    /// Reads `update_state.json` (an unreadable one is kept aside and the
    /// updater starts from the built-in version, loudly).
    pub fn new(deps: UpdateDeps) -> UpdateManager {
        let persisted = match state::load(&deps.state_dir) {
            Ok(Some(p)) => reconcile_installed(&deps.state_dir, p),
            Ok(None) => Persisted {
                installed_version: crate::build_info::VERSION.to_string(),
                run: None,
                previous_backup: None,
            },
            Err(e) => {
                tracing::error!(critical = true, error = %format!("{e:#}"), "update state unreadable; starting from the built-in version");
                let p = state::state_path(&deps.state_dir);
                let _ = std::fs::rename(&p, p.with_extension("json.corrupt"));
                Persisted {
                    installed_version: crate::build_info::VERSION.to_string(),
                    run: None,
                    previous_backup: None,
                }
            }
        };
        let (wake, wake_rx) = mpsc::channel(4);
        let installed = persisted.installed_version.clone();
        let inner = Inner {
            deps,
            phase: Mutex::new(Phase::Idle),
            persisted: Mutex::new(persisted),
            status: watch::channel(idle_status(installed)).0,
            log: Mutex::new(VecDeque::new()),
            progress: Mutex::new(None),
            wake,
            last_source: Mutex::new(Source::Upload),
            recovered: std::sync::atomic::AtomicBool::new(false),
            wake_rx: tokio::sync::Mutex::new(wake_rx),
        };
        let mgr = UpdateManager {
            inner: Arc::new(inner),
        };
        // A run persisted mid-apply is "applying" until the worker resolved it.
        if mgr
            .inner
            .persisted
            .lock()
            .unwrap()
            .run
            .as_ref()
            .is_some_and(|r| !r.state.is_final())
        {
            *mgr.inner.phase.lock().unwrap() = Phase::Applying;
        }
        mgr.publish();
        mgr
    }

    pub fn config(&self) -> &UpdateConfig {
        &self.inner.deps.config
    }

    /// Where uploads and USB copies are written before verification.
    pub fn incoming_dir(&self) -> PathBuf {
        self.inner.deps.state_dir.join("updates/incoming")
    }

    pub fn installed_version(&self) -> String {
        self.inner
            .persisted
            .lock()
            .unwrap()
            .installed_version
            .clone()
    }

    pub fn status(&self) -> UpdateStatus {
        let mut s = self.inner.status.borrow().clone();
        s.timestamp = Utc::now();
        s
    }

    pub fn subscribe(&self) -> watch::Receiver<UpdateStatus> {
        self.inner.status.subscribe()
    }

    /// Claims the updater for an incoming bundle; 409 while another is
    /// arriving or an update runs.
    pub fn begin(&self, source: Source) -> Result<UploadTicket, UpdateError> {
        let mut phase = self.inner.phase.lock().unwrap();
        match &*phase {
            Phase::Receiving { .. } => return Err(UpdateError::InProgress("a bundle is arriving")),
            Phase::Applying => return Err(UpdateError::InProgress("an update is being applied")),
            Phase::Idle | Phase::Pending(_) => {}
        }
        // A new bundle replaces the pending one.
        if let Phase::Pending(plan) = std::mem::replace(&mut *phase, Phase::Receiving { source }) {
            let _ = std::fs::remove_dir_all(&plan.staging_dir);
        }
        drop(phase);
        *self.inner.progress.lock().unwrap() = Some((0, None));
        self.publish();
        Ok(UploadTicket {
            mgr: self.clone(),
            source,
            done: false,
        })
    }

    /// Verifies a bundle already on disk (the USB worker's copy) into
    /// staging; it becomes the pending update.
    pub async fn submit(&self, bundle: &Path, source: Source) -> Result<UpdateCheck, UpdateError> {
        self.begin(source)?.finish(bundle).await
    }

    async fn verify_pending(
        &self,
        bundle: &Path,
        source: Source,
    ) -> Result<UpdateCheck, UpdateError> {
        let result = self.verify(bundle).await;
        *self.inner.progress.lock().unwrap() = None;
        match result {
            Ok(plan) => {
                let check = plan.check.clone();
                *self.inner.phase.lock().unwrap() = Phase::Pending(Box::new(plan));
                *self.inner.last_source.lock().unwrap() = source;
                self.log(
                    "INFO",
                    None,
                    &format!(
                        "bundle {} ({} bytes, sha256 {}) from {} verified: signed by {}; waiting for apply",
                        check.version,
                        check.size,
                        check.sha256,
                        source.as_str(),
                        check.signature.key
                    ),
                );
                self.publish();
                Ok(check)
            }
            Err(e) => {
                *self.inner.phase.lock().unwrap() = Phase::Idle;
                self.log(
                    "WARN",
                    None,
                    &format!("bundle from {} refused: {e}", source.as_str()),
                );
                self.inner.deps.notify.alert(crate::notify::Alert::new(
                    crate::notify::Severity::Warning,
                    "update_refused",
                    "update_refused",
                    "Update refused",
                    format!("An update bundle from {} was refused: {e}", source.as_str()),
                ));
                self.record_rejected(source, &e).await;
                self.publish();
                Err(e)
            }
        }
    }

    async fn verify(&self, bundle: &Path) -> Result<Plan, UpdateError> {
        let deps = &self.inner.deps;
        let keys = TrustedKeys::load(&deps.keys_dir)
            .map_err(|e| anyhow::anyhow!("trusted keys: {}: {}", e.path.display(), e.reason))?;
        let installed: semver::Version = self
            .installed_version()
            .parse()
            .map_err(|e| anyhow::anyhow!("installed version is not semver: {e}"))?;
        let staging = deps.state_dir.join("updates/staging").join(new_id());
        std::fs::create_dir_all(staging.parent().expect("has a parent"))
            .map_err(|e| anyhow::anyhow!("cannot create the staging dir: {e}"))?;
        let limits = VerifyLimits {
            max_bundle_bytes: deps.config.max_bundle_bytes,
            ..VerifyLimits::default()
        };
        let (bundle, staging2) = (bundle.to_path_buf(), staging.clone());
        let installed2 = installed.clone();
        // The verification runs on a blocking thread that outlives this
        // future: a client that goes away mid-verification must not leave a
        // staged bundle nobody will ever apply.
        let mut orphan = OrphanStaging::new(staging);
        let abandoned = orphan.abandoned.clone();
        let verified = tokio::task::spawn_blocking(move || {
            let r = super::verify_bundle(&bundle, &keys, &installed2, &staging2, &limits);
            if abandoned.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = std::fs::remove_dir_all(&staging2);
            }
            r
        })
        .await
        .map_err(|e| anyhow::anyhow!("verification task failed: {e}"))??;
        let plan = plan_of(&verified, &installed.to_string());
        // Refused here, the staging dir goes with `orphan` (never kept).
        deps.check_bundled_configs(&plan.configs)?;
        orphan.keep();
        Ok(plan)
    }

    /// Starts the pending update (the worker carries it out).
    pub fn apply(&self) -> Result<UpdateStatus, UpdateError> {
        let mut phase = self.inner.phase.lock().unwrap();
        let plan = match std::mem::replace(&mut *phase, Phase::Applying) {
            Phase::Pending(plan) => plan,
            other => {
                let err = match other {
                    Phase::Idle => UpdateError::NoneStaged,
                    Phase::Receiving { .. } => UpdateError::InProgress("a bundle is arriving"),
                    _ => UpdateError::InProgress("an update is being applied"),
                };
                *phase = other;
                return Err(err);
            }
        };
        drop(phase);
        let now = Utc::now();
        let from = self.installed_version();
        let run = Run {
            id: new_id(),
            state: UpdateState::Validated,
            step: "starting".into(),
            version: plan.check.version.clone(),
            from_version: from,
            source: self.pending_source(),
            started_at: now,
            updated_at: now,
            finished_at: None,
            error: None,
            plan: *plan,
            backup: None,
            reached: UpdateState::Validated,
            model_files: Vec::new(),
        };
        self.inner.log.lock().unwrap().clear();
        {
            let mut p = self.inner.persisted.lock().unwrap();
            p.run = Some(run.clone());
            state::save(&self.inner.deps.state_dir, &p)
                .map_err(|e| anyhow::anyhow!("cannot persist the update state: {e}"))?;
        }
        self.log(
            "INFO",
            Some(&run),
            &format!("apply {} → {} requested", run.from_version, run.version),
        );
        self.publish();
        state::crash_point(UpdateState::Validated);
        // The worker picks it up; a full queue means it is already awake.
        let _ = self.inner.wake.try_send(());
        Ok(self.status())
    }

    fn pending_source(&self) -> Source {
        *self.inner.last_source.lock().unwrap()
    }

    /// Finished runs and refused bundles, newest first.
    pub async fn history(
        &self,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<crate::db::update::RunRow>, sqlx::Error> {
        crate::db::update::history(self.inner.deps.db.pool(), limit, offset).await
    }

    /// Appends to `update.log` and the status' log lines; events of a run
    /// also go to `update_events` (best effort: the file is the record).
    pub(crate) fn log(&self, level: &str, run: Option<&Run>, msg: &str) {
        let now = Utc::now();
        let line = format!(
            "{} {level} {}{msg}",
            now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            run.map(|r| format!("[{}] ", r.id)).unwrap_or_default()
        );
        match level {
            "ERROR" => tracing::error!(critical = true, "update: {msg}"),
            "WARN" => tracing::warn!("update: {msg}"),
            _ => tracing::info!("update: {msg}"),
        }
        let path = self.inner.deps.log_dir.join(LOG_FILE);
        if let Err(e) = crate::os::fs::append_line(&path, &line) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the update log");
        }
        let mut log = self.inner.log.lock().unwrap();
        log.push_back(line);
        while log.len() > STATUS_LOG_LINES {
            log.pop_front();
        }
    }

    async fn record_rejected(&self, source: Source, e: &UpdateError) {
        let UpdateError::Bundle(b) = e else { return };
        if !self.inner.deps.db.status().up {
            return;
        }
        let now = Utc::now();
        let row = crate::db::update::RunRow {
            id: new_id(),
            version: String::new(),
            from_version: self.installed_version(),
            source: source.as_str().into(),
            state: "rejected".into(),
            result: Some("rejected".into()),
            step: b.code().into(),
            bundle_sha256: None,
            started_at: now,
            updated_at: now,
            finished_at: Some(now),
            error: Some(b.to_string()),
        };
        if let Err(e) = crate::db::update::upsert_run(self.inner.deps.db.pool(), &row).await {
            tracing::warn!(error = %e, "refused bundle not recorded in the database");
        }
    }

    /// What healing and the reboot checks read (see `update::activity`).
    pub fn activity(&self) -> super::UpdateActivity {
        self.inner.deps.activity.clone()
    }

    /// Rebuilds the status from the phase, the run and the log, and the
    /// activity from the phase and the run.
    pub(crate) fn publish(&self) {
        self.publish_status();
        let status = self.inner.status.borrow().clone();
        let persisted = self.inner.persisted.lock().unwrap().clone();
        let (busy, keep) = match &*self.inner.phase.lock().unwrap() {
            Phase::Receiving { .. } => (
                Some(UpdateState::Uploading.as_str().to_owned()),
                kept_paths(&persisted, None),
            ),
            Phase::Applying => (
                Some(status.state.as_str().to_owned()),
                kept_paths(&persisted, None),
            ),
            Phase::Pending(plan) => (None, kept_paths(&persisted, Some(plan))),
            Phase::Idle => (None, kept_paths(&persisted, None)),
        };
        let activity = &self.inner.deps.activity;
        activity.set_keep(keep);
        activity.set_in_progress(busy);
    }

    fn publish_status(&self) {
        let p = self.inner.persisted.lock().unwrap().clone();
        let phase_view = {
            let phase = self.inner.phase.lock().unwrap();
            match &*phase {
                Phase::Idle => (None, false),
                Phase::Receiving { source } => (Some(*source), false),
                Phase::Pending(plan) => {
                    let mut s = idle_status(p.installed_version.clone());
                    s.state = UpdateState::Validated;
                    s.step = "verified; waiting for apply".into();
                    s.version = Some(plan.check.version.clone());
                    s.from_version = Some(p.installed_version.clone());
                    s.pending = Some(plan.check.clone());
                    s.log = self.inner.log.lock().unwrap().iter().cloned().collect();
                    self.inner.status.send_replace(s);
                    return;
                }
                Phase::Applying => (None, true),
            }
        };
        let mut s = idle_status(p.installed_version.clone());
        s.log = self.inner.log.lock().unwrap().iter().cloned().collect();
        if let (Some(source), _) = phase_view {
            let (got, total) = self.inner.progress.lock().unwrap().unwrap_or((0, None));
            s.state = UpdateState::Uploading;
            s.source = Some(source);
            s.percent = total
                .filter(|t| *t > 0)
                .map_or(0, |t| ((got.min(t) * 100) / t) as u8);
            s.step = match total {
                Some(t) => format!("receiving the bundle: {got} of {t} bytes"),
                None => format!("receiving the bundle: {got} bytes"),
            };
        } else if let Some(run) = &p.run {
            s.state = run.state;
            s.step = run.step.clone();
            s.percent = percent_of(run.state, run.reached);
            s.version = Some(run.version.clone());
            s.from_version = Some(run.from_version.clone());
            s.source = Some(run.source);
            s.started_at = Some(run.started_at);
            s.updated_at = run.updated_at;
            s.error = run.error.clone();
        }
        self.inner.status.send_replace(s);
    }

    pub(crate) async fn wait_for_work(&self) -> Option<()> {
        self.inner.wake_rx.lock().await.recv().await
    }
}

/// A package newer than the recorded version (installed with apt, outside
/// an update) is what the box runs: the record follows the binary. Never
/// lowered: a bundle without a package raises the version above the
/// binary's. Left alone while a run is unresolved.
fn reconcile_installed(state_dir: &Path, mut p: Persisted) -> Persisted {
    let binary = crate::build_info::VERSION;
    let newer = match (
        semver::Version::parse(binary),
        semver::Version::parse(&p.installed_version),
    ) {
        (Ok(b), Ok(i)) => b.cmp_precedence(&i).is_gt(),
        (Ok(_), Err(_)) => true,
        _ => false,
    };
    let settled = p.run.as_ref().is_none_or(|r| r.state.is_final());
    if newer && settled {
        tracing::info!(
            recorded = %p.installed_version,
            binary,
            "the running arasuld is newer than the recorded version: recording it as installed"
        );
        p.installed_version = binary.to_string();
        if let Err(e) = state::save(state_dir, &p) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the installed version");
        }
    }
    p
}

fn idle_status(installed: String) -> UpdateStatus {
    UpdateStatus {
        state: UpdateState::Idle,
        step: "idle".into(),
        percent: 0,
        version: None,
        from_version: None,
        source: None,
        started_at: None,
        updated_at: Utc::now(),
        error: None,
        log: Vec::new(),
        pending: None,
        installed_version: installed,
        timestamp: Utc::now(),
    }
}

/// Rough progress of a run by state.
fn percent_of(state: UpdateState, reached: UpdateState) -> u8 {
    match state {
        UpdateState::Idle | UpdateState::Uploading | UpdateState::Validated => 0,
        UpdateState::BackingUp => 5,
        UpdateState::LoadingImages => 20,
        UpdateState::Migrating => 50,
        UpdateState::Switching => 65,
        UpdateState::Verifying => 75,
        UpdateState::RollingBack => percent_of(reached, reached).max(80),
        UpdateState::Done | UpdateState::RolledBack | UpdateState::Failed => 100,
    }
}

/// A random id: time-ordered prefix, random suffix.
pub fn new_id() -> String {
    format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u32>()
    )
}

fn plan_of(v: &VerifiedBundle, installed: &str) -> Plan {
    let m = &v.manifest;
    let c = &m.components;
    let check = UpdateCheck {
        version: m.version.to_string(),
        min_version: m.min_version.to_string(),
        installed_version: installed.to_string(),
        build_hash: m.build_hash.clone(),
        created_at: m.created_at,
        release_notes: m.release_notes.clone(),
        requires_reboot: m.requires_reboot,
        components: CheckComponents {
            images: c
                .images
                .iter()
                .map(|i| CheckImage {
                    service: i.service.clone(),
                    image: i.image.clone(),
                    size: i.size,
                })
                .collect(),
            models: c
                .models
                .iter()
                .map(|m| format!("{}:{}", m.service, m.name))
                .collect(),
            migrations: c.migrations.iter().map(|m| m.name.clone()).collect(),
            configs: c.configs.iter().map(|c| c.name.clone()).collect(),
            package: c.package.is_some(),
        },
        signature: CheckSignature {
            valid: true,
            key: v.signature.key.clone(),
            algorithm: v.signature.algorithm.as_str().to_string(),
        },
        size: v.size,
        sha256: v.sha256.clone(),
        timestamp: Utc::now(),
    };
    Plan {
        staging_dir: v.staging_dir.clone(),
        images: c
            .images
            .iter()
            .map(|i| PlanImage {
                service: i.service.clone(),
                image: i.image.clone(),
                tarball: v.staged(&i.file),
            })
            .collect(),
        models: c
            .models
            .iter()
            .map(|m| PlanModel {
                service: m.service.clone(),
                name: m.name.clone(),
                tarball: v.staged(&m.file),
            })
            .collect(),
        migrations: c
            .migrations
            .iter()
            .map(|m| PlanMigration {
                name: m.name.clone(),
                path: v.staged(&m.file),
                transactional: m.transactional,
            })
            .collect(),
        configs: c
            .configs
            .iter()
            .map(|c| PlanConfig {
                name: c.name.clone(),
                path: v.staged(&c.file),
            })
            .collect(),
        check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_section_is_validated_with_its_keys() {
        assert!(UpdateConfig::default().validate().is_empty());
        let bad = UpdateConfig {
            max_bundle_bytes: 10,
            verify_timeout: Duration::ZERO,
            stability_window: Duration::ZERO,
            config_dir: "etc".into(),
            package_timeout: Duration::from_secs(1),
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "update.max_bundle_bytes",
                "update.verify_timeout",
                "update.config_dir"
            ]
        );
        let text = "update:\n  verify_timeout: 5s\n  stability_window: 1s\n";
        let c = crate::config::parse("test.yaml", text, Vec::new()).unwrap();
        assert_eq!(c.update.verify_timeout, Duration::from_secs(5));
        assert!(crate::config::parse("test.yaml", "update:\n  nope: 1\n", Vec::new()).is_err());
    }

    #[test]
    fn percent_grows_with_the_run_and_a_rollback_ends_at_100() {
        let order = [
            UpdateState::Validated,
            UpdateState::BackingUp,
            UpdateState::LoadingImages,
            UpdateState::Migrating,
            UpdateState::Switching,
            UpdateState::Verifying,
            UpdateState::Done,
        ];
        let p: Vec<u8> = order.iter().map(|s| percent_of(*s, *s)).collect();
        assert!(p.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        assert!(percent_of(UpdateState::RollingBack, UpdateState::Migrating) >= 80);
        assert_eq!(
            percent_of(UpdateState::RolledBack, UpdateState::Switching),
            100
        );
    }
}
