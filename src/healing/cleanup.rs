//! The file side of the disk cleanup (SPEC §7): rotated logs in the log
//! directory, stale update staging and backups beyond the newest N in the
//! state directory. Nothing else is ever deleted: only direct entries of
//! those three directories, symlinks are removed as links (never followed),
//! and staging and backups are left alone while an update is in progress
//! (the updater says so, and which of its files it still needs:
//! `update::UpdateActivity`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::config::CleanupRules;
use crate::update::activity::{Activity, UPDATER_DIRS};

/// Backups inside `paths.state_dir`.
pub const BACKUPS_DIR: &str = "backups";

/// What one cleanup did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FileCleanup {
    pub removed: Vec<PathBuf>,
    pub bytes_freed: u64,
    /// Parts left out, in words (e.g. an update in progress).
    pub skipped: Vec<String>,
    pub errors: Vec<String>,
}

/// `app.log.1`, `system.log.12`, anything ending in `.gz`.
pub fn is_rotated_log(name: &str) -> bool {
    if name.ends_with(".gz") {
        return true;
    }
    match name.rsplit_once('.') {
        Some((stem, n)) => {
            !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) && stem.ends_with(".log")
        }
        None => false,
    }
}

/// Deletes what `rules` allows under `log_dir` and `state_dir` as of `now`;
/// `update` is what the updater published: of its directories only what it
/// calls stale, and only when that is older than `staging_max_age`.
pub fn clean_files(
    log_dir: &Path,
    state_dir: &Path,
    rules: &CleanupRules,
    update: &Activity,
    now: SystemTime,
) -> FileCleanup {
    let mut out = FileCleanup::default();
    if rules.rotated_logs {
        for e in entries(log_dir, &mut out) {
            let is_file = e.meta.file_type().is_file();
            if is_file
                && e.path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_rotated_log)
            {
                remove(&e, &mut out);
            }
        }
    }
    if let Some(state) = &update.in_progress {
        out.skipped.push(format!(
            "update staging and backups: an update is in progress ({state})"
        ));
        return out;
    }
    for dir in UPDATER_DIRS {
        for e in entries(&state_dir.join(dir), &mut out) {
            let age = now.duration_since(e.modified).unwrap_or(Duration::ZERO);
            if age >= rules.staging_max_age && update.is_stale(&e.path) {
                remove(&e, &mut out);
            }
        }
    }
    let mut backups = entries(&state_dir.join(BACKUPS_DIR), &mut out);
    // Newest first; equal times by name, the larger (later-named) first.
    backups.sort_by(|a, b| b.modified.cmp(&a.modified).then(b.path.cmp(&a.path)));
    for e in backups.iter().skip(rules.keep_backups) {
        remove(e, &mut out);
    }
    out
}

struct Entry {
    path: PathBuf,
    meta: std::fs::Metadata,
    modified: SystemTime,
}

/// Direct entries of `dir` (a missing directory has none), links not followed.
fn entries(dir: &Path, out: &mut FileCleanup) -> Vec<Entry> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            out.errors.push(format!("{}: {e}", dir.display()));
            return Vec::new();
        }
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            Some(Entry {
                path,
                meta,
                modified,
            })
        })
        .collect()
}

fn remove(e: &Entry, out: &mut FileCleanup) {
    let size = if e.meta.is_dir() {
        dir_size(&e.path)
    } else {
        e.meta.len()
    };
    let r = if e.meta.is_dir() {
        // Does not follow symlinks inside.
        std::fs::remove_dir_all(&e.path)
    } else {
        std::fs::remove_file(&e.path)
    };
    match r {
        Ok(()) => {
            out.bytes_freed += size;
            out.removed.push(e.path.clone());
        }
        Err(err) => out.errors.push(format!("{}: {err}", e.path.display())),
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            std::fs::symlink_metadata(e.path())
                .ok()
                .map(|m| (e.path(), m))
        })
        .map(|(p, m)| {
            if m.is_dir() {
                dir_size(&p)
            } else if m.is_file() {
                m.len()
            } else {
                0
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_log_names() {
        for yes in ["system.log.1", "update.log.12", "x.gz", "system.log.2.gz"] {
            assert!(is_rotated_log(yes), "{yes}");
        }
        for no in [
            "system.log",
            "self_healing.log",
            "notes.1",
            "system.log.",
            "a.log.1x",
        ] {
            assert!(!is_rotated_log(no), "{no}");
        }
    }
}
