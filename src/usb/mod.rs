//! Updates from a USB stick: a worker that learns of new filesystems from
//! UDisks2 (D-Bus, zbus) — or, without it, by polling configured mount roots
//! — looks in `updates/` for bundles, copies the highest acceptable version to
//! `state_dir/updates/usb/` (the stick is only ever read) and hands the copy
//! to the updater. It never applies anything itself; every step goes to
//! `log_dir/update_usb.log`.

pub mod handoff;
pub mod stick;
pub mod udisks;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};
use crate::update::verify::VerifyLimits;
use crate::update::{TrustedKeys, Version};

/// Log file in `paths.log_dir`.
pub const LOG_FILE: &str = crate::logs::Source::UpdateUsb.file_name();

/// What happens to a bundle found on a stick once it is verified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UsbMode {
    /// Apply at once.
    Auto,
    /// Keep it pending; the admin applies it (the API shows it).
    Ask,
}

/// The `usb:` config section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UsbConfig {
    pub enabled: bool,
    pub mode: UsbMode,
    /// D-Bus address of the bus UDisks2 is on; unset: the system bus.
    pub dbus_address: Option<String>,
    /// Mount (read-only, through UDisks2) removable filesystems that nobody
    /// mounted yet.
    pub mount: bool,
    /// Fallback without UDisks2: dirs whose sub-dirs (and sub-sub-dirs, as in
    /// /media/<user>/<label>) are mounted sticks.
    pub mount_roots: Vec<PathBuf>,
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for UsbConfig {
    fn default() -> Self {
        UsbConfig {
            enabled: true,
            mode: UsbMode::Ask,
            dbus_address: None,
            mount: true,
            mount_roots: vec!["/media".into(), "/run/media".into(), "/mnt".into()],
            poll_interval: Duration::from_secs(5),
        }
    }
}

impl UsbConfig {
    /// (key, message) for each invalid value.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.poll_interval < Duration::from_millis(100) {
            out.push(("usb.poll_interval".into(), "must be at least 100ms".into()));
        }
        for r in &self.mount_roots {
            if !r.is_absolute() {
                out.push((
                    "usb.mount_roots".into(),
                    format!("must be absolute paths, got {}", r.display()),
                ));
            }
        }
        if let Some(a) = &self.dbus_address
            && a.parse::<zbus::Address>().is_err()
        {
            out.push((
                "usb.dbus_address".into(),
                format!("not a D-Bus address: {a:?}"),
            ));
        }
        out
    }
}

/// The updater as the USB worker sees it (implemented by `UpdateManager`).
pub trait UsbHandoff: Send + Sync + 'static {
    /// The version running now (bundles must be newer).
    fn installed(&self) -> Version;
    /// Verifies the copied bundle into staging and makes it the pending
    /// update; with `apply` also starts it. `Ok` is a line for the log;
    /// `Err` is (code, message).
    fn submit(
        &self,
        bundle: PathBuf,
        apply: bool,
    ) -> BoxFuture<'_, Result<String, (String, String)>>;
}

/// What came of one mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickOutcome {
    /// No `updates/*.araupdate` acceptable (with the reasons, if any were there).
    NothingToDo { refused: Vec<String> },
    /// The best bundle was handled before (same sha256).
    AlreadyHandled { sha256: String },
    /// Copied, verified and handed to the updater.
    HandedOff {
        bundle: PathBuf,
        version: Version,
        sha256: String,
    },
    /// Every candidate failed (copy or verification).
    Failed { errors: Vec<String> },
}

/// Appends timestamped lines to `update_usb.log` (and to the tracing log).
#[derive(Clone)]
pub struct UsbLog {
    path: PathBuf,
}

impl UsbLog {
    pub fn new(log_dir: &Path) -> UsbLog {
        UsbLog {
            path: log_dir.join(LOG_FILE),
        }
    }

    pub fn line(&self, level: &str, msg: &str) {
        match level {
            "ERROR" => tracing::error!(target: "usb", "{msg}"),
            "WARN" => tracing::warn!(target: "usb", "{msg}"),
            _ => tracing::info!(target: "usb", "{msg}"),
        }
        let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let r = crate::os::fs::append_line(&self.path, &format!("{ts} {level} {msg}"));
        if let Err(e) = r {
            tracing::warn!("cannot write {}: {e}", self.path.display());
        }
    }
}

/// Everything the worker needs; cheap to clone into each run.
#[derive(Clone)]
pub struct UsbWorker {
    pub config: UsbConfig,
    pub keys_dir: PathBuf,
    /// Copies go to `<state_dir>/updates/usb/`.
    pub state_dir: PathBuf,
    pub limits: VerifyLimits,
    pub log: UsbLog,
    pub handoff: Arc<dyn UsbHandoff>,
}

impl UsbWorker {
    fn copy_dir(&self) -> PathBuf {
        self.state_dir.join("updates/usb")
    }

    fn handled_file(&self) -> PathBuf {
        self.copy_dir().join("handled.json")
    }

    /// sha256s of bundles already handed to the updater.
    fn handled(&self) -> BTreeSet<String> {
        std::fs::read(self.handled_file())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn mark_handled(&self, sha: &str) {
        let mut set = self.handled();
        set.insert(sha.to_owned());
        let r = serde_json::to_vec(&set)
            .map_err(std::io::Error::other)
            .and_then(|b| crate::os::fs::write_atomic(&self.handled_file(), &b, None));
        if let Err(e) = r {
            self.log
                .line("WARN", &format!("cannot record {sha} as handled: {e}"));
        }
    }

    /// Looks at one mounted filesystem and hands the best bundle on.
    pub async fn process_mount(&self, mount: &Path, via: &str) -> StickOutcome {
        self.log.line(
            "INFO",
            &format!("filesystem at {} ({via})", mount.display()),
        );
        let keys = match TrustedKeys::load(&self.keys_dir) {
            Ok(k) => k,
            Err(e) => {
                let msg = format!("trusted keys unusable: {e}");
                self.log.line("ERROR", &msg);
                return StickOutcome::Failed { errors: vec![msg] };
            }
        };
        let installed = self.handoff.installed();
        let (m, lim) = (mount.to_owned(), self.limits);
        let scan =
            match tokio::task::spawn_blocking(move || stick::scan(&m, &keys, &installed, &lim))
                .await
            {
                Ok(s) => s,
                Err(e) => {
                    return StickOutcome::Failed {
                        errors: vec![format!("scan task failed: {e}")],
                    };
                }
            };
        let refused: Vec<String> = scan
            .refused
            .iter()
            .map(|(p, why)| format!("{}: {why}", p.display()))
            .collect();
        for r in &refused {
            self.log.line("WARN", &format!("passed over {r}"));
        }
        if scan.candidates.is_empty() {
            self.log.line(
                "INFO",
                &format!("no acceptable update bundle in {}/updates", mount.display()),
            );
            return StickOutcome::NothingToDo { refused };
        }
        let handled = self.handled();
        let mut errors = Vec::new();
        for c in scan.candidates {
            let (src, dir, max) = (
                c.path.clone(),
                self.copy_dir(),
                self.limits.max_bundle_bytes,
            );
            let copied =
                match tokio::task::spawn_blocking(move || stick::copy(&src, &dir, max)).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        let msg = format!("{}: copy failed: {e}", c.path.display());
                        self.log.line("ERROR", &msg);
                        errors.push(msg);
                        continue;
                    }
                    Err(e) => {
                        errors.push(format!("copy task failed: {e}"));
                        continue;
                    }
                };
            if handled.contains(&copied.sha256) {
                let _ = std::fs::remove_file(&copied.path);
                self.log.line(
                    "INFO",
                    &format!(
                        "{} (version {}, sha256 {}) was handled before; skipped",
                        c.path.display(),
                        c.version,
                        copied.sha256
                    ),
                );
                return StickOutcome::AlreadyHandled {
                    sha256: copied.sha256,
                };
            }
            self.log.line(
                "INFO",
                &format!(
                    "copied {} (version {}, {} bytes, sha256 {}) to {}",
                    c.path.display(),
                    c.version,
                    copied.size,
                    copied.sha256,
                    copied.path.display()
                ),
            );
            let auto = self.config.mode == UsbMode::Auto;
            let r = self.handoff.submit(copied.path.clone(), auto).await;
            // Staging now holds the verified copy; this one is not needed.
            let _ = std::fs::remove_file(&copied.path);
            match r {
                Ok(what) => {
                    self.mark_handled(&copied.sha256);
                    self.log.line(
                        "INFO",
                        &format!(
                            "version {} handed to the updater ({}): {what}",
                            c.version,
                            if auto {
                                "mode auto: applying"
                            } else {
                                "mode ask: waiting for apply"
                            }
                        ),
                    );
                    return StickOutcome::HandedOff {
                        bundle: c.path,
                        version: c.version,
                        sha256: copied.sha256,
                    };
                }
                Err((code, msg)) => {
                    let msg = format!("{}: refused ({code}): {msg}", c.path.display());
                    self.log.line("ERROR", &msg);
                    errors.push(msg);
                }
            }
        }
        StickOutcome::Failed { errors }
    }

    /// Spawns this as the `usb-updates` worker (auxiliary: restarted on
    /// error, does not gate the watchdog).
    pub fn spawn(self, workers: &Workers) {
        workers.spawn(WorkerName::UsbUpdates, WorkerKind::Auxiliary, move |ctx| {
            self.clone().run(ctx)
        });
    }

    /// The worker body: UDisks2 events, or polling when D-Bus is not there.
    async fn run(self, ctx: WorkerCtx) -> anyhow::Result<()> {
        if !self.config.enabled {
            return Ok(());
        }
        match udisks::connect(self.config.dbus_address.as_deref()).await {
            Ok(conn) => match self.watch_udisks(&conn, &ctx).await {
                Ok(()) => return Ok(()),
                Err(WatchError::Unavailable(e)) => self.log.line(
                    "WARN",
                    &format!(
                        "UDisks2 not available ({e}); polling {:?} instead",
                        self.config.mount_roots
                    ),
                ),
                Err(WatchError::Lost(e)) => {
                    return Err(anyhow::anyhow!("UDisks2 watch ended: {e}"));
                }
            },
            Err(e) => self.log.line(
                "WARN",
                &format!(
                    "D-Bus not reachable ({e}); polling {:?} instead",
                    self.config.mount_roots
                ),
            ),
        }
        self.poll(&ctx).await
    }

    async fn watch_udisks(
        &self,
        conn: &zbus::Connection,
        ctx: &WorkerCtx,
    ) -> Result<(), WatchError> {
        let om = udisks::object_manager(conn)
            .await
            .map_err(WatchError::Unavailable)?;
        // Subscribe before listing, so that nothing slips between the two.
        let mut added = om
            .receive_interfaces_added()
            .await
            .map_err(WatchError::Unavailable)?;
        let existing = om
            .get_managed_objects()
            .await
            .map_err(|e| WatchError::Unavailable(e.into()))?;
        self.log.line(
            "INFO",
            &format!(
                "watching UDisks2 for new filesystems (mode {:?})",
                self.config.mode
            ),
        );
        for (path, ifaces) in existing {
            if ifaces.keys().any(|i| i.as_str() == udisks::FILESYSTEM) {
                self.on_filesystem(conn, path).await;
            }
        }
        loop {
            ctx.beat();
            let sig = tokio::select! {
                _ = ctx.cancel.cancelled() => return Ok(()),
                s = added.next() => s,
            };
            let Some(sig) = sig else {
                return Err(WatchError::Lost(zbus::Error::Failure(
                    "signal stream closed".into(),
                )));
            };
            let Ok(args) = sig.args() else { continue };
            if args
                .interfaces_and_properties
                .keys()
                .any(|i| i.as_str() == udisks::FILESYSTEM)
            {
                let path = zbus::OwnedObjectPath::from(args.object_path.to_owned());
                self.on_filesystem(conn, path).await;
            }
        }
    }

    async fn on_filesystem(&self, conn: &zbus::Connection, object: zbus::OwnedObjectPath) {
        match udisks::mount_point(conn, &object, self.config.mount).await {
            Ok(Some(m)) => {
                self.process_mount(&m, &format!("UDisks2 {}", object.as_str()))
                    .await;
            }
            Ok(None) => {}
            Err(e) => self
                .log
                .line("WARN", &format!("cannot mount {}: {e}", object.as_str())),
        }
    }

    async fn poll(&self, ctx: &WorkerCtx) -> anyhow::Result<()> {
        let mut seen = BTreeSet::new();
        loop {
            ctx.beat();
            let roots = self.config.mount_roots.clone();
            let now = tokio::task::spawn_blocking(move || stick_dirs(&roots)).await?;
            for m in now.difference(&seen) {
                self.process_mount(m, "mount-root poll").await;
            }
            seen = now;
            if !ctx.sleep(self.config.poll_interval).await {
                return Ok(());
            }
        }
    }
}

enum WatchError {
    /// UDisks2 is not on the bus: poll instead.
    Unavailable(zbus::Error),
    /// The bus went away after it worked: restart the worker.
    Lost(zbus::Error),
}

/// Dirs under the mount roots (one or two levels down) that have `updates/`.
pub fn stick_dirs(roots: &[PathBuf]) -> BTreeSet<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = BTreeSet::new();
    for root in roots {
        for d in subdirs(root) {
            if d.join(stick::UPDATES_DIR).is_dir() {
                out.insert(d);
                continue;
            }
            for dd in subdirs(&d) {
                if dd.join(stick::UPDATES_DIR).is_dir() {
                    out.insert(dd);
                }
            }
        }
    }
    out
}
