//! The apply state machine's vocabulary: its states, what the API shows
//! (`UpdateStatus`, `UpdateCheck`), and the record persisted in
//! `state_dir/update_state.json` (written atomically: temp file, fsync,
//! rename, fsync the dir) that crash recovery reads at the next start.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an update came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = UpdateSource)]
pub enum Source {
    Upload,
    Usb,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Upload => "upload",
            Source::Usb => "usb",
        }
    }
}

/// validated → backing_up → loading_images → migrating → switching →
/// verifying → done, or → rolling_back → rolled_back (→ failed when the
/// rollback itself fails). `idle` and `uploading` are outside a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateState {
    Idle,
    Uploading,
    Validated,
    BackingUp,
    LoadingImages,
    Migrating,
    Switching,
    Verifying,
    Done,
    RollingBack,
    RolledBack,
    Failed,
}

impl UpdateState {
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateState::Idle => "idle",
            UpdateState::Uploading => "uploading",
            UpdateState::Validated => "validated",
            UpdateState::BackingUp => "backing_up",
            UpdateState::LoadingImages => "loading_images",
            UpdateState::Migrating => "migrating",
            UpdateState::Switching => "switching",
            UpdateState::Verifying => "verifying",
            UpdateState::Done => "done",
            UpdateState::RollingBack => "rolling_back",
            UpdateState::RolledBack => "rolled_back",
            UpdateState::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<UpdateState> {
        serde_json::from_value(serde_json::Value::String(s.into())).ok()
    }

    /// A run in this state has finished (nothing more happens to it).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            UpdateState::Done | UpdateState::RolledBack | UpdateState::Failed
        )
    }

    /// Between "apply" and a final state: live state may be touched.
    pub fn is_applying(self) -> bool {
        matches!(
            self,
            UpdateState::BackingUp
                | UpdateState::LoadingImages
                | UpdateState::Migrating
                | UpdateState::Switching
                | UpdateState::Verifying
                | UpdateState::RollingBack
        )
    }
}

/// What a validated bundle holds (CONTRACTS.md: the upload's answer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateCheck {
    pub version: String,
    pub min_version: String,
    pub installed_version: String,
    pub build_hash: String,
    pub created_at: DateTime<Utc>,
    pub release_notes: String,
    pub requires_reboot: bool,
    pub components: CheckComponents,
    pub signature: CheckSignature,
    /// Bytes of the bundle file.
    pub size: u64,
    /// sha256 (hex) of the bundle file.
    pub sha256: String,
    pub timestamp: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckComponents {
    pub images: Vec<CheckImage>,
    /// Models for the runtimes' stores (`llm:llama3.2:1b`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Migration names, in the order they run.
    pub migrations: Vec<String>,
    /// Config file names.
    pub configs: Vec<String>,
    /// Whether the bundle carries a new arasuld package.
    pub package: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckImage {
    pub service: String,
    pub image: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CheckSignature {
    pub valid: bool,
    /// File name of the trusted key that verified the manifest.
    pub key: String,
    /// `ed25519`, `rsa-pkcs1-sha256` or `rsa-pss-sha256`.
    pub algorithm: String,
}

/// `GET /api/update/status` and every event of the status stream.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct UpdateStatus {
    pub state: UpdateState,
    /// What is happening, in words.
    pub step: String,
    /// 0–100 over the whole run (over the bytes while uploading).
    pub percent: u8,
    /// The version being applied (or the last one applied).
    pub version: Option<String>,
    pub from_version: Option<String>,
    pub source: Option<Source>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub error: Option<String>,
    /// The latest log lines of this run (also in `update.log`).
    pub log: Vec<String>,
    /// A validated bundle waiting for `POST /api/update/apply`.
    pub pending: Option<UpdateCheck>,
    /// The version this box runs now.
    pub installed_version: String,
    pub timestamp: DateTime<Utc>,
}

/// One image a run loads and switches to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanImage {
    pub service: String,
    pub image: String,
    /// The staged, hash-checked tarball.
    pub tarball: PathBuf,
}

/// A model the run installs into a runtime's store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanModel {
    /// `llm` or `embeddings`.
    pub service: String,
    pub name: String,
    /// The staged, hash-checked tar.
    pub tarball: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanMigration {
    pub name: String,
    pub path: PathBuf,
    pub transactional: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanConfig {
    pub name: String,
    pub path: PathBuf,
}

/// What a run applies, all from the staged copy of the bundle.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub staging_dir: PathBuf,
    pub images: Vec<PlanImage>,
    #[serde(default)]
    pub models: Vec<PlanModel>,
    pub migrations: Vec<PlanMigration>,
    pub configs: Vec<PlanConfig>,
    pub check: UpdateCheck,
}

impl Plan {
    /// The services whose containers the run switches.
    pub fn services(&self) -> std::collections::BTreeSet<String> {
        self.images.iter().map(|i| i.service.clone()).collect()
    }
}

/// One touched service as it was before the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceBackup {
    pub service: String,
    /// The image reference it ran.
    pub image: String,
    /// The image id that reference resolved to (re-tagged on rollback when
    /// the load moved the tag).
    pub image_id: Option<String>,
    /// The image an earlier update had set (None: the catalog's).
    pub override_image: Option<String>,
    pub container_id: Option<String>,
    /// Not failing before the run (healthy, or still starting): only then
    /// is its health after the switch held against the update. A check
    /// that was already failing (unhealthy, failed, image missing, stopped)
    /// does not count.
    pub counts: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigBackup {
    pub name: String,
    /// Where the config is installed.
    pub target: PathBuf,
    /// The previous file's copy; None when there was none (rollback deletes).
    pub saved: Option<PathBuf>,
}

/// What a rollback needs, written (and verified) before live state changes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backup {
    pub dir: PathBuf,
    /// `pg_dump -Fc` of the arasuld database.
    pub db_dump: PathBuf,
    pub services: Vec<ServiceBackup>,
    pub configs: Vec<ConfigBackup>,
    /// Services a bundled `services.yaml` changes or adds: verified like
    /// the switched ones, and left alone by self-healing meanwhile.
    #[serde(default)]
    pub catalog_services: Vec<String>,
    /// The version of the arasuld binary that ran when a bundle with a
    /// package started: the package a rollback reinstalls.
    #[serde(default)]
    pub previous_binary: Option<String>,
}

impl Run {
    /// Every service the run switches or whose catalog entry it changes.
    pub fn touched_services(&self) -> std::collections::BTreeSet<String> {
        let mut s = self.plan.services();
        if let Some(b) = &self.backup {
            s.extend(b.catalog_services.iter().cloned());
        }
        s
    }

    /// Whether the bundle carries an arasuld package.
    pub fn has_package(&self) -> bool {
        self.plan.check.components.package
    }

    /// Whether the run installs the daemon's own config or catalog (a
    /// reload applies them).
    pub fn reloads(&self) -> bool {
        self.plan
            .configs
            .iter()
            .any(|c| c.name == super::manager::DAEMON_CONFIG || c.name == super::manager::CATALOG)
    }
}

/// One run of the state machine, as persisted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub state: UpdateState,
    pub step: String,
    pub version: String,
    pub from_version: String,
    pub source: Source,
    pub started_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub plan: Plan,
    pub backup: Option<Backup>,
    /// The furthest state reached before a rollback began: says what the
    /// rollback must undo.
    pub reached: UpdateState,
    /// Files the run put into the runtimes' model stores (a rollback
    /// removes them).
    #[serde(default)]
    pub model_files: Vec<PathBuf>,
}

/// `update_state.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Persisted {
    pub installed_version: String,
    pub run: Option<Run>,
    /// The backup of the version before the installed one, kept until the
    /// next successful update.
    #[serde(default)]
    pub previous_backup: Option<PathBuf>,
}

pub const STATE_FILE: &str = "update_state.json";

pub fn state_path(state_dir: &Path) -> PathBuf {
    state_dir.join(STATE_FILE)
}

/// Reads `update_state.json`; None when there is none yet.
pub fn load(state_dir: &Path) -> anyhow::Result<Option<Persisted>> {
    match std::fs::read(state_path(state_dir)) {
        Ok(b) => Ok(Some(serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!("{} is corrupt: {e}", state_path(state_dir).display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Atomic: temp file, fsync, rename, fsync the dir.
pub fn save(state_dir: &Path, p: &Persisted) -> std::io::Result<()> {
    crate::os::fs::write_atomic(&state_path(state_dir), &serde_json::to_vec_pretty(p)?, None)
}

/// Fault injection for the crash tests (debug builds only):
/// `ARASUL_TEST_CRASH_AT=<state>` kills this process with SIGKILL right
/// after that state was persisted.
pub fn crash_point(state: UpdateState) {
    if cfg!(debug_assertions)
        && std::env::var("ARASUL_TEST_CRASH_AT").is_ok_and(|s| s == state.as_str())
    {
        eprintln!(
            "ARASUL_TEST_CRASH_AT={}: killing the daemon",
            state.as_str()
        );
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_by_name() {
        for s in [
            UpdateState::Idle,
            UpdateState::BackingUp,
            UpdateState::LoadingImages,
            UpdateState::RolledBack,
            UpdateState::Failed,
        ] {
            assert_eq!(UpdateState::parse(s.as_str()), Some(s));
        }
        assert_eq!(UpdateState::parse("nope"), None);
        assert!(UpdateState::Done.is_final() && !UpdateState::Verifying.is_final());
        assert!(UpdateState::Migrating.is_applying() && !UpdateState::Validated.is_applying());
    }

    #[test]
    fn the_state_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let p = Persisted {
            installed_version: "1.2.3".into(),
            run: None,
            previous_backup: None,
        };
        save(dir.path(), &p).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(p));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE.to_string()], "no temp file left");
        std::fs::write(state_path(dir.path()), b"{not json").unwrap();
        assert!(load(dir.path()).is_err());
    }
}
