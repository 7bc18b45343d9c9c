//! Where archives go: a directory (the local one, or `arasul-backups/` on
//! the USB stick with the configured label) or an S3 bucket. Listing and
//! retention deletes go through here; only names of the archive pattern
//! (`retention::parse_name`) are ever deleted.

use std::path::{Path, PathBuf};

use super::{BackupConfig, BackupError, DestinationKind, retention, s3};
use crate::config::Config;

/// The dir on a stick that holds its backups.
pub const STICK_DIR: &str = "arasul-backups";

#[derive(Clone, Debug)]
pub enum Target {
    /// Archives are files in `dir`; `label` names it for the owner.
    Dir {
        dir: PathBuf,
        label: String,
    },
    S3(s3::Bucket),
}

/// The configured destination in words (`local:/dir`, `usb:LABEL`, `s3://…`).
pub fn describe(b: &BackupConfig) -> String {
    match b.destination {
        DestinationKind::Local => "local".into(),
        DestinationKind::Usb => format!("usb:{}", b.usb_label.as_deref().unwrap_or("")),
        DestinationKind::S3 => {
            b.s3.as_ref()
                .map(|s| format!("s3://{}/{}", s.bucket, s.prefix))
                .unwrap_or_else(|| "s3".into())
        }
    }
}

/// The configured destination, found: the stick must be mounted, the S3
/// keys readable.
pub async fn resolve(config: &Config) -> Result<Target, BackupError> {
    let b = &config.backup;
    match b.destination {
        DestinationKind::Local => Ok(local(config)),
        DestinationKind::Usb => {
            let label = b.usb_label.clone().unwrap_or_default();
            let roots = config.usb.mount_roots.clone();
            let found = tokio::task::spawn_blocking({
                let label = label.clone();
                move || find_stick(&roots, &label)
            })
            .await
            .map_err(|e| BackupError::Failed(e.to_string()))?;
            // Not under the mount roots: UDisks2 knows it by its label
            // (and mounts it read-write).
            // A read-only mount (the update worker's) is remounted there too.
            let found = match found {
                Some(m) if !crate::usb::udisks::read_only(&m) => Some(m),
                ro => match crate::usb::udisks::connect(config.usb.dbus_address.as_deref()).await {
                    Ok(conn) => crate::usb::udisks::writable_mount(&conn, &label, config.usb.mount)
                        .await
                        .map_err(|e| {
                            BackupError::Destination(format!(
                                "the USB stick {label:?} cannot be mounted: {e}"
                            ))
                        })?
                        .or(ro),
                    Err(_) => ro,
                },
            };
            let mount = found.ok_or_else(|| {
                BackupError::Destination(format!(
                    "the USB stick {label:?} is not plugged in (or not mounted)"
                ))
            })?;
            // A stick the update worker mounted read-only says so here,
            // not halfway through the archive.
            let dir = mount.join(STICK_DIR);
            if let Err(e) = std::fs::create_dir_all(&dir) {
                return Err(BackupError::Destination(format!(
                    "the USB stick {label:?} cannot be written to ({e})"
                )));
            }
            Ok(Target::Dir {
                dir,
                label: format!("usb:{label}"),
            })
        }
        DestinationKind::S3 => {
            let c =
                b.s3.as_ref()
                    .ok_or_else(|| BackupError::Destination("backup.s3 is not set".into()))?;
            let bucket = s3::Bucket::open(c, &config.paths.secrets_dir)
                .map_err(|e| BackupError::Destination(format!("{e:#}")))?;
            Ok(Target::S3(bucket))
        }
    }
}

/// The local dir, whatever the configured destination (safety backups).
pub fn local(config: &Config) -> Target {
    let dir = config.backup.local_dir(&config.paths.state_dir);
    Target::Dir {
        label: format!("local:{}", dir.display()),
        dir,
    }
}

/// A mount point named `label` one or two levels under the roots
/// (`/media/<label>`, `/media/<user>/<label>`): a directory that is its own
/// filesystem, so a stick that is gone never turns into a dir on the root
/// disk.
pub fn find_stick(roots: &[PathBuf], label: &str) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let is_mount = |d: &Path| -> bool {
        let (Ok(m), Some(parent)) = (std::fs::metadata(d), d.parent()) else {
            return false;
        };
        m.is_dir() && std::fs::metadata(parent).is_ok_and(|p| p.dev() != m.dev())
    };
    for root in roots {
        let direct = root.join(label);
        if is_mount(&direct) {
            return Some(direct);
        }
        let Ok(rd) = std::fs::read_dir(root) else {
            continue;
        };
        for e in rd.flatten() {
            let d = e.path().join(label);
            if e.file_type().is_ok_and(|t| t.is_dir()) && is_mount(&d) {
                return Some(d);
            }
        }
    }
    None
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Target::Dir { label, .. } => label.clone(),
            Target::S3(b) => b.describe(),
        }
    }

    /// Archive names at the destination, oldest first.
    pub async fn list(&self) -> anyhow::Result<Vec<String>> {
        let mut names: Vec<String> = match self {
            Target::Dir { dir, .. } => match std::fs::read_dir(dir) {
                Ok(rd) => rd
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().map(str::to_string))
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(e.into()),
            },
            Target::S3(b) => b.list().await?.into_iter().map(|(n, _)| n).collect(),
        };
        names.retain(|n| retention::parse_name(n).is_some());
        names.sort();
        Ok(names)
    }

    /// Deletes what retention does not keep; returns the deleted names.
    pub async fn apply_retention(&self, b: &BackupConfig) -> anyhow::Result<Vec<String>> {
        let names = self.list().await?;
        let gone = retention::to_delete(&names, b.keep_daily, b.keep_weekly);
        for name in &gone {
            match self {
                Target::Dir { dir, .. } => std::fs::remove_file(dir.join(name))?,
                Target::S3(bucket) => bucket.delete(name).await?,
            }
        }
        if !gone.is_empty() {
            tracing::info!(destination = %self.describe(), deleted = ?gone, "backup retention");
        }
        Ok(gone)
    }
}

/// Free bytes (for unprivileged users) of the filesystem holding `path`
/// (or its nearest existing parent).
pub fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let mut p = path.to_path_buf();
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    crate::metrics::collect::disk_usage(&p)
        .map(|u| u.free_bytes)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_dir_named_like_the_stick_is_not_the_stick() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("user/BACKUP")).unwrap();
        std::fs::create_dir_all(d.path().join("BACKUP")).unwrap();
        assert_eq!(find_stick(&[d.path().to_path_buf()], "BACKUP"), None);
    }
}
