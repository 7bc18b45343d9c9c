//! What the updater is doing, for those who must stand aside: whether a
//! run (or an arriving bundle) is in progress, which services a run has
//! switched, and which of its files it still needs. The updater is the only writer; self-healing, the reboot
//! checks and the disk cleanup ask this handle instead of reading the
//! updater's files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::watch;

/// One picture of the updater's activity.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// `Some(state)` while a bundle arrives or a run is between validated
    /// and a final state (`uploading`, `backing_up`, `migrating`, …).
    pub in_progress: Option<String>,
    /// Services an update is switching: it owns them until done or rolled back.
    pub switched: BTreeSet<String>,
    /// Entries of the updater's own directories ([`UPDATER_DIRS`] under
    /// `state_dir`) that it still needs: the pending bundle's staging, the
    /// running update's, the previous version's backup.
    pub keep: BTreeSet<PathBuf>,
}

/// The updater's directories under `paths.state_dir`: partial uploads,
/// verified bundles, backups of the version before. Nothing else under
/// `updates/` (the USB worker's copies and its handled-list) is the
/// updater's to give up.
pub const UPDATER_DIRS: [&str; 3] = ["updates/incoming", "updates/staging", "updates/backup"];

impl Activity {
    /// Whether `path`, an entry of one of [`UPDATER_DIRS`], may be deleted:
    /// no update is in progress and the updater does not need it.
    pub fn is_stale(&self, path: &Path) -> bool {
        self.in_progress.is_none() && !self.keep.contains(path)
    }
}

/// Cheap to clone; the daemon makes one and hands it to the updater and to
/// everyone who reads it. A fresh one (tests) says "no update".
#[derive(Clone, Debug, Default)]
pub struct UpdateActivity {
    tx: Arc<watch::Sender<Activity>>,
}

impl UpdateActivity {
    pub fn new() -> Self {
        Self::default()
    }

    /// `Some(state)` while an update is in progress.
    pub fn in_progress(&self) -> Option<String> {
        self.tx.borrow().in_progress.clone()
    }

    /// Everything at once (one consistent picture).
    pub fn current(&self) -> Activity {
        self.tx.borrow().clone()
    }

    /// The services an update has switched.
    pub fn switched(&self) -> BTreeSet<String> {
        self.tx.borrow().switched.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Activity> {
        self.tx.subscribe()
    }

    pub(crate) fn set_in_progress(&self, state: Option<String>) {
        self.tx.send_if_modified(|a| {
            let changed = a.in_progress != state;
            a.in_progress = state;
            changed
        });
    }

    pub(crate) fn set_switched(&self, services: BTreeSet<String>) {
        self.tx.send_if_modified(|a| {
            let changed = a.switched != services;
            a.switched = services;
            changed
        });
    }
}

impl UpdateActivity {
    pub(crate) fn set_keep(&self, keep: BTreeSet<PathBuf>) {
        self.tx.send_if_modified(|a| {
            let changed = a.keep != keep;
            a.keep = keep;
            changed
        });
    }
}
