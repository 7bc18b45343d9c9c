//! The session spool: the session writes the DB does not have yet, kept in
//! `state_dir/auth-session-spool.json` so that a restart while Postgres is
//! down loses no login, logout or revocation. `Auth` decides when to write
//! it (a logout before it is acknowledged; the persister while the DB is
//! away, and to tidy up once it has taken everything); this file only knows
//! the format and the file, and remembers what is on disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::session::SessionWrite;
use crate::os::fs::{PRIVATE, write_atomic};

/// File name inside `paths.state_dir`.
pub const SPOOL_FILE: &str = "auth-session-spool.json";
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpoolFile {
    version: u32,
    writes: Vec<SessionWrite>,
}

/// What the file holds, as far as this process knows.
#[derive(Debug)]
pub struct SpoolState {
    /// The store generation last written (None: not written by us yet).
    pub written: Option<u64>,
    pub on_disk: bool,
}

#[derive(Debug)]
pub struct SessionSpool {
    path: PathBuf,
    /// Held across a write, so writes land in the order their snapshots
    /// were taken (take the snapshot while holding it).
    state: Mutex<SpoolState>,
}

impl SessionSpool {
    pub fn new(path: PathBuf) -> Self {
        let on_disk = path.exists();
        Self {
            path,
            state: Mutex::new(SpoolState {
                written: None,
                on_disk,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lock(&self) -> MutexGuard<'_, SpoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writes a previous run left; none if there is no file. A file
    /// that cannot be read or parsed is an error naming it.
    pub fn load(&self) -> anyhow::Result<Vec<SessionWrite>> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let file: SpoolFile = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not a valid session spool", self.path.display()))?;
        anyhow::ensure!(
            file.version == VERSION,
            "{} has version {}, this build reads {VERSION}",
            self.path.display(),
            file.version
        );
        Ok(file.writes)
    }

    /// Replaces the file with `writes` (atomically), or removes it when
    /// there are none. The caller holds `state` (see [`Self::lock`]).
    pub fn store(&self, state: &mut SpoolState, writes: Vec<SessionWrite>) -> anyhow::Result<()> {
        if writes.is_empty() {
            match fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("removing {}", self.path.display()));
                }
            }
            state.on_disk = false;
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let body = serde_json::to_vec(&SpoolFile {
            version: VERSION,
            writes,
        })
        .context("encoding the session spool")?;
        write_atomic(&self.path, &body, PRIVATE)
            .with_context(|| format!("writing {}", self.path.display()))?;
        state.on_disk = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::SessionRecord;
    use chrono::{DateTime, Utc};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(1_750_000_000_123_456_789 + s * 1_000_000_000)
    }

    #[test]
    fn writes_round_trip_and_none_removes_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = SessionSpool::new(tmp.path().join("state").join(SPOOL_FILE));
        assert!(spool.load().unwrap().is_empty());
        let mut r = SessionRecord::new(
            "00112233445566778899aabbccddeeff".into(),
            "fe80::1".parse().unwrap(),
            Some("curl/8"),
            t(0),
            t(3600),
        );
        r.revoked_at = Some(t(5));
        let writes = vec![
            SessionWrite::Upsert(r),
            SessionWrite::Revoke {
                jti: "ffeeddccbbaa99887766554433221100".into(),
                at: t(6),
            },
            SessionWrite::RevokeAll {
                at: t(7),
                except: Some("00112233445566778899aabbccddeeff".into()),
            },
        ];
        let mut state = spool.lock();
        spool.store(&mut state, writes.clone()).unwrap();
        assert!(state.on_disk);
        assert_eq!(spool.load().unwrap(), writes);
        spool.store(&mut state, Vec::new()).unwrap();
        assert!(!state.on_disk && !spool.path().exists());
        spool.store(&mut state, Vec::new()).unwrap();
    }

    #[test]
    fn a_corrupt_or_foreign_file_is_an_error_that_names_it() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = SessionSpool::new(tmp.path().join(SPOOL_FILE));
        for bad in [
            "{\"version\":1,\"writes\":[{\"upsert\":",
            "{\"version\":2,\"writes\":[]}",
            "[]",
        ] {
            fs::write(spool.path(), bad).unwrap();
            let err = format!("{:#}", spool.load().unwrap_err());
            assert!(err.contains(SPOOL_FILE), "{bad}: {err}");
        }
    }
}
