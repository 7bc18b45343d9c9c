//! What the updater is doing, for those who must stand aside: whether a
//! run (or an arriving bundle) is in progress, and which services a run has
//! switched. The updater is the only writer; self-healing, the reboot
//! checks and the disk cleanup ask this handle instead of reading the
//! updater's files.

use std::collections::BTreeSet;
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
