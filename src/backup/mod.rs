//! The owner's data, backed up and put back (issue 17).
//!
//! One run makes one archive (`archive`): arasuld's database (`pg_dump -Fc`,
//! with its row counts from the same snapshot), the config dir and the
//! secrets dir, the list of installed models (names and digests), and the
//! bind-mount volumes of the services whose data is the owner's (n8n; MinIO
//! when `backup.include_minio` and it fits), each copied while its service
//! is stopped through the supervisor. The archive is then read back, its
//! database restored into a scratch database and counted: only then is the
//! run `good`. Destinations (`dest`): a local dir, a USB stick by label, an
//! S3 bucket; retention keeps 7 daily + 4 weekly by default (`retention`).
//! `restore` checks an archive completely before it touches anything, takes
//! a safety backup, and rolls back to it when the restore fails.
//!
//! Runs are kept in `state_dir/data-backups.json` (not the database: a
//! restore of the database must not forget the runs, and a run must be
//! recordable while the database is down). Failures and an overdue backup
//! go through [`raise`], the one place that tells the owner.

pub mod archive;
pub mod create;
pub mod dest;
pub mod restore;
pub mod retention;
pub mod s3;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::db::Db;
use crate::docker::SupervisorHandle;
use crate::healing::record::{EventKind, HealingRecord, Severity};
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// The runs, in the state dir.
pub const RUNS_FILE: &str = "data-backups.json";
/// Runs kept in [`RUNS_FILE`].
const MAX_RUNS: usize = 200;

/// Where archives go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    /// `backup.local_dir` (default `<state_dir>/data-backups`).
    #[default]
    Local,
    /// The mounted USB stick whose mount dir is named `backup.usb_label`,
    /// into `arasul-backups/` on it.
    Usb,
    /// `backup.s3`.
    S3,
}

/// `backup.schedule`: a daily run at a local time of day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Schedule {
    pub enabled: bool,
    /// `HH:MM`, local time.
    pub at: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            enabled: true,
            at: "03:30".into(),
        }
    }
}

/// `backup.s3`: any S3 endpoint. The keys are files in the secrets dir:
/// `s3-backup-access-key` and `s3-backup-secret-key`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// `https://s3.example.com` (path-style requests).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// Key prefix, e.g. `arasul/`.
    pub prefix: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: String::new(),
            bucket: String::new(),
            region: "us-east-1".into(),
            prefix: String::new(),
        }
    }
}

/// The `backup:` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    pub schedule: Schedule,
    pub destination: DestinationKind,
    /// Unset: `<paths.state_dir>/data-backups`.
    #[schema(value_type = Option<String>)]
    pub local_dir: Option<PathBuf>,
    /// The stick's label (its mount dir's name under `usb.mount_roots`).
    pub usb_label: Option<String>,
    pub s3: Option<S3Config>,
    pub keep_daily: u32,
    pub keep_weekly: u32,
    /// MinIO's buckets too (size-aware: not when over `minio_max_size`).
    pub include_minio: bool,
    /// `20g`, `500m`, or bytes.
    pub minio_max_size: String,
    /// The last good backup older than this raises a WARNING.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String)]
    pub overdue_after: Duration,
    /// How long services get to become healthy after a restore.
    #[serde(with = "humantime_serde")]
    #[schema(value_type = String)]
    pub restore_health_timeout: Duration,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            schedule: Schedule::default(),
            destination: DestinationKind::Local,
            local_dir: None,
            usb_label: None,
            s3: None,
            keep_daily: 7,
            keep_weekly: 4,
            include_minio: false,
            minio_max_size: "20g".into(),
            overdue_after: Duration::from_secs(2 * 86400),
            restore_health_timeout: Duration::from_secs(180),
        }
    }
}

impl BackupConfig {
    /// (key, message) for each invalid value.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |k: &str, m: String| out.push((format!("backup.{k}"), m));
        if parse_time_of_day(&self.schedule.at).is_none() {
            bad(
                "schedule.at",
                format!("expected HH:MM, got {:?}", self.schedule.at),
            );
        }
        if let Some(d) = &self.local_dir
            && !d.is_absolute()
        {
            bad(
                "local_dir",
                format!("must be an absolute path, got {}", d.display()),
            );
        }
        if let Some(l) = &self.usb_label
            && (l.is_empty() || l.contains('/') || l == "." || l == "..")
        {
            bad("usb_label", format!("not a stick label: {l:?}"));
        }
        match self.destination {
            DestinationKind::Usb if self.usb_label.is_none() => bad(
                "usb_label",
                "destination usb needs the stick's label".into(),
            ),
            DestinationKind::S3 if self.s3.is_none() => {
                bad("s3", "destination s3 needs backup.s3".into())
            }
            _ => {}
        }
        if let Some(s3) = &self.s3 {
            if !(s3.endpoint.starts_with("http://") || s3.endpoint.starts_with("https://"))
                || reqwest::Url::parse(&s3.endpoint).is_err()
            {
                bad(
                    "s3.endpoint",
                    format!("not an http(s) URL: {:?}", s3.endpoint),
                );
            }
            if !s3::bucket_name_ok(&s3.bucket) {
                bad(
                    "s3.bucket",
                    format!("not an S3 bucket name: {:?}", s3.bucket),
                );
            }
        }
        if self.keep_daily == 0 && self.keep_weekly == 0 {
            bad(
                "keep_daily",
                "keep_daily and keep_weekly cannot both be 0".into(),
            );
        }
        if let Err(e) = crate::docker::catalog::parse_bytes(&self.minio_max_size) {
            bad("minio_max_size", e);
        }
        if self.overdue_after < Duration::from_secs(3600) {
            bad("overdue_after", "must be at least 1h".into());
        }
        out
    }

    pub fn local_dir(&self, state_dir: &Path) -> PathBuf {
        self.local_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("data-backups"))
    }
}

/// `HH:MM` → (hour, minute).
pub fn parse_time_of_day(s: &str) -> Option<(u32, u32)> {
    let (h, m) = s.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && s.len() == 5).then_some((h, m))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    /// Written, read back and its database restored and counted.
    Good,
    /// Written and read back, but the scratch restore could not be done
    /// (e.g. the database user may not create databases).
    Unverified,
    Failed,
}

/// One backup run (or a restore), as kept in [`RUNS_FILE`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Run {
    /// `20261206T033000Z`, also the archive's time.
    pub id: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// `schedule`, `manual`, `cli`, `safety` (before a restore).
    pub trigger: String,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// `local:/dir`, `usb:LABEL`, `s3://bucket/prefix`.
    pub destination: String,
    /// The archive's file name.
    pub file: Option<String>,
    /// Where it is: a path, or an `s3://` URL.
    pub location: Option<String>,
    pub size: Option<u64>,
    pub status: RunStatus,
    pub error: Option<String>,
    /// What the archive left out (MinIO over its limit, …).
    #[serde(default)]
    pub skipped: Vec<String>,
}

impl Run {
    pub fn duration_ms(&self) -> Option<i64> {
        self.finished.map(|f| (f - self.started).num_milliseconds())
    }
}

/// Why a backup or a restore did not happen; `code` is the API's.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("a backup or restore is running already")]
    Busy,
    #[error("{0}")]
    InsufficientDisk(String),
    #[error("the archive cannot be used: {0}")]
    Corrupt(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Destination(String),
    #[error("{0}")]
    Failed(String),
}

impl BackupError {
    pub fn code(&self) -> &'static str {
        match self {
            BackupError::Busy => "backup_running",
            BackupError::InsufficientDisk(_) => "insufficient_disk",
            BackupError::Corrupt(_) => "archive_corrupt",
            BackupError::NotFound(_) => "backup_not_found",
            BackupError::Destination(_) => "destination_unavailable",
            BackupError::Failed(_) => "backup_failed",
        }
    }
}

impl From<anyhow::Error> for BackupError {
    fn from(e: anyhow::Error) -> Self {
        BackupError::Failed(format!("{e:#}"))
    }
}

/// The runs file: read, changed and written whole (atomically).
fn runs_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RUNS_FILE)
}

pub fn load_runs(state_dir: &Path) -> Vec<Run> {
    std::fs::read(runs_path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_run(state_dir: &Path, run: &Run) -> std::io::Result<()> {
    let mut runs = load_runs(state_dir);
    match runs
        .iter_mut()
        .find(|r| r.id == run.id && r.kind == run.kind)
    {
        Some(r) => *r = run.clone(),
        None => runs.push(run.clone()),
    }
    let excess = runs.len().saturating_sub(MAX_RUNS);
    runs.drain(..excess);
    let bytes = serde_json::to_vec_pretty(&runs).map_err(std::io::Error::other)?;
    crate::os::fs::write_atomic(&runs_path(state_dir), &bytes, None)
}

/// Runs a crash left `running` become `failed` (called once at start).
fn close_interrupted(state_dir: &Path) {
    for mut r in load_runs(state_dir) {
        if r.status == RunStatus::Running {
            r.status = RunStatus::Failed;
            r.finished = Some(Utc::now());
            r.error = Some("interrupted (the daemon stopped during the run)".into());
            let _ = save_run(state_dir, &r);
        }
    }
}

/// The newest good backup run.
pub fn last_good(runs: &[Run]) -> Option<&Run> {
    runs.iter()
        .filter(|r| r.kind == "backup" && r.status == RunStatus::Good)
        .max_by_key(|r| r.started)
}

/// What [`raise`] reports.
#[derive(Clone, Debug)]
pub enum Alert {
    /// A backup run failed (or was refused).
    Failed { trigger: String, error: String },
    /// The last good backup is older than `backup.overdue_after`.
    Overdue { last_good: Option<DateTime<Utc>> },
    /// A restore failed (and was rolled back, or not).
    RestoreFailed { error: String },
}

/// The one place a backup problem reaches the owner: the notification
/// channels (`notify`, never waits), the audit trail (`self_healing_events`)
/// and the log.
pub async fn raise(db: Option<&Db>, notify: &crate::notify::Notifier, alert: Alert) {
    let (event_type, severity, description) = match &alert {
        Alert::Failed { trigger, error } => (
            EventKind::BackupFailed,
            Severity::Warning,
            format!("a {trigger} backup failed: {error}"),
        ),
        Alert::Overdue { last_good } => (
            EventKind::BackupOverdue,
            Severity::Warning,
            match last_good {
                Some(t) => format!("the last good backup is from {}", t.to_rfc3339()),
                None => "there is no good backup yet".into(),
            },
        ),
        Alert::RestoreFailed { error } => (
            EventKind::RestoreFailed,
            Severity::Critical,
            format!("a restore failed: {error}"),
        ),
    };
    tracing::warn!(event = %event_type, "{description}");
    let title = match &alert {
        Alert::Failed { .. } => "A backup failed",
        Alert::Overdue { .. } => "No recent good backup",
        Alert::RestoreFailed { .. } => "A restore failed",
    };
    notify.alert(crate::notify::Alert::new(
        severity,
        event_type.as_str(),
        event_type.as_str(),
        title,
        description.clone(),
    ));
    let Some(db) = db else { return };
    let record = HealingRecord::recorded(event_type, severity, None, description);
    if let Err(e) = crate::db::healing::insert_events(db.pool(), &[record]).await {
        tracing::warn!("the backup event was not recorded in the database: {e}");
    }
}

/// Everything a run needs; cloneable (the API, the worker and the CLI
/// share one).
#[derive(Clone)]
pub struct Backups {
    inner: Arc<Inner>,
}

struct Inner {
    config: watch::Receiver<Arc<Config>>,
    db: Db,
    services: SupervisorHandle,
    /// The config file (its dir and drop-ins are backed up).
    config_path: Option<PathBuf>,
    /// Failures and an overdue backup reach the owner through it.
    notify: crate::notify::Notifier,
    /// One run (backup or restore) at a time.
    busy: tokio::sync::Mutex<()>,
}

impl Backups {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        db: Db,
        services: SupervisorHandle,
        config_path: Option<PathBuf>,
        notify: crate::notify::Notifier,
    ) -> Backups {
        close_interrupted(&config.borrow().paths.state_dir);
        Backups {
            inner: Arc::new(Inner {
                config,
                db,
                services,
                config_path,
                notify,
                busy: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        self.inner.config.borrow().clone()
    }

    pub fn runs(&self) -> Vec<Run> {
        load_runs(&self.config().paths.state_dir)
    }

    pub fn is_busy(&self) -> bool {
        self.inner.busy.try_lock().is_err()
    }

    /// A backup now, to the configured destination. Refused with `Busy`
    /// while another backup or restore runs.
    pub async fn create(&self, trigger: &str) -> Result<Run, BackupError> {
        let _one = self.inner.busy.try_lock().map_err(|_| BackupError::Busy)?;
        let config = self.config();
        let r = match dest::resolve(&config).await {
            Ok(t) => create::run(self, &config, &t, trigger).await,
            Err(e) => {
                self.record_refusal(&config, trigger, &e);
                Err(e)
            }
        };
        crate::metrics::counters::backup_run("backup", &r);
        if let Err(e) = &r {
            raise(
                Some(&self.inner.db),
                &self.inner.notify,
                Alert::Failed {
                    trigger: trigger.into(),
                    error: e.to_string(),
                },
            )
            .await;
        }
        r
    }

    /// Puts an archive back: `id` of a recorded run, or a `file` (a path,
    /// or an archive name in the configured destination).
    pub async fn restore(&self, id_or_file: &str) -> Result<Run, BackupError> {
        let _one = self.inner.busy.try_lock().map_err(|_| BackupError::Busy)?;
        let config = self.config();
        let r = restore::run(self, &config, id_or_file).await;
        crate::metrics::counters::backup_run("restore", &r);
        if let Err(e) = &r
            && !matches!(e, BackupError::Corrupt(_) | BackupError::NotFound(_))
        {
            raise(
                Some(&self.inner.db),
                &self.inner.notify,
                Alert::RestoreFailed {
                    error: e.to_string(),
                },
            )
            .await;
        }
        r
    }

    /// A run refused before it began (no stick, no S3 keys) still appears
    /// in the list.
    fn record_refusal(&self, config: &Config, trigger: &str, e: &BackupError) {
        let state_dir = &config.paths.state_dir;
        let now = Utc::now();
        let id = retention::stamp(now);
        let _ = save_run(
            state_dir,
            &Run {
                id,
                kind: "backup".into(),
                trigger: trigger.into(),
                started: now,
                finished: Some(now),
                destination: dest::describe(&config.backup),
                file: None,
                location: None,
                size: None,
                status: RunStatus::Failed,
                error: Some(e.to_string()),
                skipped: Vec::new(),
            },
        );
    }
}

/// How long the worker waits after a start before it makes up for a missed
/// scheduled run (the box settles first).
pub const CATCH_UP_AFTER: Duration = Duration::from_secs(15 * 60);

/// Spawns the `backups` worker (the schedule and the overdue check, see
/// below) and hands `backups` back, for the API.
pub fn spawn(workers: &Workers, backups: Backups) -> Backups {
    let b = backups.clone();
    workers.spawn(WorkerName::Backups, WorkerKind::Auxiliary, move |ctx| {
        run_worker(ctx, b.clone())
    });
    backups
}

/// The scheduled runs and the overdue check: wakes at each day's
/// `backup.schedule.at` (local time) and every hour for the check. A box
/// that is off at that hour (or never made a backup) gets its run
/// [`CATCH_UP_AFTER`] a start instead (see [`catch_up_due`]).
async fn run_worker(ctx: WorkerCtx, backups: Backups) -> anyhow::Result<()> {
    let mut warned_for: Option<Option<DateTime<Utc>>> = None;
    let up_since = std::time::Instant::now();
    loop {
        ctx.beat();
        let config = backups.config();
        let b = &config.backup;
        let runs = backups.runs();
        if catch_up_due(&runs, Utc::now(), up_since.elapsed(), b) {
            tracing::info!(
                "no backup for over a day (the box was off at {}, or never made one): one now",
                b.schedule.at
            );
            if let Err(e) = backups.create("schedule").await {
                tracing::warn!("scheduled backup: {e}");
            }
            continue;
        }
        let last = last_good(&runs).map(|r| r.started);
        if is_overdue(&runs, Utc::now(), b) && warned_for != Some(last) {
            raise(
                Some(&backups.inner.db),
                &backups.inner.notify,
                Alert::Overdue { last_good: last },
            )
            .await;
            warned_for = Some(last);
        }
        let next = next_run(chrono::Local::now(), &b.schedule);
        let wait = next
            .map(|n| (n - chrono::Local::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(3600))
            .min(Duration::from_secs(3600));
        // Awake when a catch-up could first be due.
        let settle = CATCH_UP_AFTER.saturating_sub(up_since.elapsed());
        let wait = if settle.is_zero() {
            wait
        } else {
            wait.min(settle)
        };
        if !ctx.sleep(wait).await {
            return Ok(());
        }
        let config = backups.config();
        if config.backup.schedule.enabled
            && next.is_some_and(|n| chrono::Local::now() >= n)
            && let Err(e) = backups.create("schedule").await
        {
            tracing::warn!("scheduled backup: {e}");
        }
    }
}

/// Whether the owner must hear that the backups are overdue: schedule on,
/// and the last good backup older than `overdue_after` (or none at all
/// while a run has failed already: a box that never made a good one).
pub fn is_overdue(runs: &[Run], now: DateTime<Utc>, b: &BackupConfig) -> bool {
    b.schedule.enabled
        && match last_good(runs) {
            Some(r) => (now - r.started).to_std().unwrap_or_default() > b.overdue_after,
            None => runs
                .iter()
                .any(|r| r.kind == "backup" && r.status == RunStatus::Failed),
        }
}

/// Whether a scheduled run was missed and is made up now: schedule on, the
/// worker up for [`CATCH_UP_AFTER`], and no backup attempted (good or not)
/// in the last 25 hours — or none ever. A failed catch-up counts as an
/// attempt, so it is not repeated before the next day.
pub fn catch_up_due(runs: &[Run], now: DateTime<Utc>, up: Duration, b: &BackupConfig) -> bool {
    let last_attempt = runs
        .iter()
        .filter(|r| r.kind == "backup")
        .map(|r| r.started)
        .max();
    b.schedule.enabled
        && up >= CATCH_UP_AFTER
        && last_attempt.is_none_or(|t| now - t > chrono::Duration::hours(25))
}

/// The next daily time after `now` (None when off or unparsable).
pub fn next_run(now: DateTime<chrono::Local>, s: &Schedule) -> Option<DateTime<chrono::Local>> {
    if !s.enabled {
        return None;
    }
    let (h, m) = parse_time_of_day(&s.at)?;
    let today = now.date_naive().and_hms_opt(h, m, 0)?;
    let mut at = today.and_local_timezone(chrono::Local).earliest()?;
    if at <= now {
        at = (today + chrono::Duration::days(1))
            .and_local_timezone(chrono::Local)
            .earliest()?;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_refuses_what_cannot_work() {
        assert!(BackupConfig::default().validate().is_empty());
        let c = BackupConfig {
            schedule: Schedule {
                enabled: true,
                at: "3:30".into(),
            },
            destination: DestinationKind::Usb,
            keep_daily: 0,
            keep_weekly: 0,
            minio_max_size: "lots".into(),
            ..Default::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "backup.schedule.at",
                "backup.usb_label",
                "backup.keep_daily",
                "backup.minio_max_size"
            ]
        );
    }

    fn run(kind: &str, status: RunStatus, hours_ago: i64, now: DateTime<Utc>) -> Run {
        Run {
            id: format!("{hours_ago}"),
            kind: kind.into(),
            trigger: "schedule".into(),
            started: now - chrono::Duration::hours(hours_ago),
            finished: None,
            destination: "local".into(),
            file: None,
            location: None,
            size: None,
            status,
            error: None,
            skipped: Vec::new(),
        }
    }

    #[test]
    fn backups_are_overdue_two_days_after_the_last_good_one() {
        let now = Utc::now();
        let b = BackupConfig::default();
        let good_47h = vec![run("backup", RunStatus::Good, 47, now)];
        assert!(!is_overdue(&good_47h, now, &b));
        // Failures and restores since do not make a backup good.
        let mut runs = vec![run("backup", RunStatus::Good, 49, now)];
        runs.push(run("backup", RunStatus::Failed, 20, now));
        runs.push(run("restore", RunStatus::Good, 2, now));
        runs.push(run("backup", RunStatus::Unverified, 1, now));
        assert!(is_overdue(&runs, now, &b));
        // Never a good one: overdue once a run failed; a new box is not.
        assert!(is_overdue(
            &[run("backup", RunStatus::Failed, 1, now)],
            now,
            &b
        ));
        assert!(!is_overdue(&[], now, &b));
        // Schedule off: the owner chose so.
        let off = BackupConfig {
            schedule: Schedule {
                enabled: false,
                ..Schedule::default()
            },
            ..BackupConfig::default()
        };
        assert!(!is_overdue(&runs, now, &off));
    }

    #[test]
    fn a_run_missed_while_the_box_was_off_is_made_up_after_the_box_settled() {
        let now = Utc::now();
        let b = BackupConfig::default();
        let settled = CATCH_UP_AFTER;
        let just_up = CATCH_UP_AFTER - Duration::from_secs(1);
        // Off at 03:30 for two nights: the last attempt is 50 h old.
        let stale = vec![run("backup", RunStatus::Good, 50, now)];
        assert!(catch_up_due(&stale, now, settled, &b));
        assert!(!catch_up_due(&stale, now, just_up, &b));
        // A new box makes its first backup on its first day.
        assert!(catch_up_due(&[], now, settled, &b));
        // Last night's run (good or failed) is enough; restores do not count.
        for status in [RunStatus::Good, RunStatus::Failed] {
            let mut runs = vec![run("backup", status, 20, now)];
            assert!(!catch_up_due(&runs, now, settled, &b));
            runs[0].kind = "restore".into();
            assert!(catch_up_due(&runs, now, settled, &b));
        }
        let off = BackupConfig {
            schedule: Schedule {
                enabled: false,
                ..Schedule::default()
            },
            ..BackupConfig::default()
        };
        assert!(!catch_up_due(&stale, now, settled, &off));
    }

    #[test]
    fn the_next_run_is_today_or_tomorrow_at_the_set_time() {
        use chrono::TimeZone;
        let s = Schedule::default();
        let early = chrono::Local
            .with_ymd_and_hms(2026, 12, 6, 1, 0, 0)
            .unwrap();
        let late = chrono::Local
            .with_ymd_and_hms(2026, 12, 6, 4, 0, 0)
            .unwrap();
        assert_eq!(
            next_run(early, &s).unwrap(),
            chrono::Local
                .with_ymd_and_hms(2026, 12, 6, 3, 30, 0)
                .unwrap()
        );
        assert_eq!(
            next_run(late, &s).unwrap(),
            chrono::Local
                .with_ymd_and_hms(2026, 12, 7, 3, 30, 0)
                .unwrap()
        );
        let off = Schedule {
            enabled: false,
            ..s
        };
        assert_eq!(next_run(late, &off), None);
    }
}
