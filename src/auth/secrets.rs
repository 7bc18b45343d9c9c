//! The secrets directory (`/etc/arasul/secrets`, 0700, files 0600): the JWT
//! key, the admin password hash, its history, the initial password and the
//! revocation mark.
//! Everything is written atomically (temp file, fsync, rename, fsync dir).
//! Functions return paths for logging, never the secret itself.

use std::fmt;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use rand::Rng;

use super::revocation::RevocationMark;
use crate::os::fs::{PRIVATE, sync_dir, write_atomic};

/// Minimum length of the HMAC key in `jwt.key`.
pub const MIN_JWT_KEY_LEN: usize = 32;
/// Length of a newly generated `jwt.key`.
pub const NEW_JWT_KEY_LEN: usize = 64;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// File names inside the secrets directory.
pub const JWT_KEY_FILE: &str = "jwt.key";
/// Current admin password hash (argon2id PHC string).
pub const ADMIN_HASH_FILE: &str = "admin.hash";
/// Plaintext initial password; exists only until the first password change.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";
/// The last few admin password hashes (PHC strings, newest first, one a line).
pub const PASSWORD_HISTORY_FILE: &str = "password-history";
/// The [`RevocationMark`] as JSON: sessions created at or before its instant
/// are refused, whatever the session table says.
pub const REVOCATION_MARK_FILE: &str = "revoked-before.json";

/// A value that must never reach a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The secret itself; call sites are easy to grep for.
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<T> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for Secret<String> {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// Whether `load_or_create_jwt_key` found a key or made one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    Loaded,
    Created,
}

/// Handle on the secrets directory. Cheap to clone; holds only the path.
#[derive(Debug, Clone)]
pub struct SecretsDir {
    dir: PathBuf,
}

impl SecretsDir {
    /// Opens the directory, creating it 0700 if missing. An existing directory
    /// or secret file readable by group/others is tightened (with a warning)
    /// rather than refused, so a careless `cp` does not take the box down.
    pub fn open(dir: impl Into<PathBuf>) -> anyhow::Result<Self> {
        let dir = dir.into();
        if !dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&dir)
                .with_context(|| format!("creating secrets dir {}", dir.display()))?;
            // `recursive` applies the umask-filtered mode; make it exact.
            set_mode(&dir, DIR_MODE)?;
        }
        let meta =
            fs::metadata(&dir).with_context(|| format!("reading secrets dir {}", dir.display()))?;
        if !meta.is_dir() {
            bail!("secrets path {} is not a directory", dir.display());
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %dir.display(), "secrets dir was accessible to group/others; setting 0700");
            set_mode(&dir, DIR_MODE)?;
        }
        let this = Self { dir };
        for name in [
            JWT_KEY_FILE,
            ADMIN_HASH_FILE,
            INITIAL_PASSWORD_FILE,
            PASSWORD_HISTORY_FILE,
            REVOCATION_MARK_FILE,
        ] {
            let path = this.dir.join(name);
            if let Ok(meta) = fs::symlink_metadata(&path) {
                if !meta.file_type().is_file() {
                    bail!("secret {} is not a regular file", path.display());
                }
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), "secret file was accessible to group/others; setting 0600");
                    set_mode(&path, FILE_MODE)?;
                }
            }
        }
        Ok(this)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn jwt_key_path(&self) -> PathBuf {
        self.dir.join(JWT_KEY_FILE)
    }

    pub fn admin_hash_path(&self) -> PathBuf {
        self.dir.join(ADMIN_HASH_FILE)
    }

    pub fn initial_password_path(&self) -> PathBuf {
        self.dir.join(INITIAL_PASSWORD_FILE)
    }

    pub fn history_path(&self) -> PathBuf {
        self.dir.join(PASSWORD_HISTORY_FILE)
    }

    pub fn revocation_mark_path(&self) -> PathBuf {
        self.dir.join(REVOCATION_MARK_FILE)
    }

    /// Reads `jwt.key` (raw bytes, used as-is as the HMAC key) or generates
    /// one. A key shorter than [`MIN_JWT_KEY_LEN`] is refused, not extended:
    /// silently replacing it would hide a broken provisioning step.
    pub fn load_or_create_jwt_key(&self) -> anyhow::Result<(Secret<Vec<u8>>, KeyOrigin)> {
        let path = self.jwt_key_path();
        match fs::read(&path) {
            Ok(bytes) => {
                if bytes.len() < MIN_JWT_KEY_LEN {
                    bail!(
                        "{} holds {} bytes; at least {MIN_JWT_KEY_LEN} are required. \
                         Remove the file to have a new key generated (this logs out every session)",
                        path.display(),
                        bytes.len()
                    );
                }
                Ok((Secret::new(bytes), KeyOrigin::Loaded))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = vec![0u8; NEW_JWT_KEY_LEN];
                rand::rng().fill(&mut key[..]);
                write_atomic(&path, &key, PRIVATE)
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok((Secret::new(key), KeyOrigin::Created))
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The admin PHC string, or `None` when no admin password is set yet.
    pub fn read_admin_hash(&self) -> anyhow::Result<Option<String>> {
        read_optional_trimmed(&self.admin_hash_path())
    }

    pub fn write_admin_hash(&self, phc: &str) -> anyhow::Result<PathBuf> {
        let path = self.admin_hash_path();
        write_atomic(&path, format!("{phc}\n").as_bytes(), PRIVATE)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Password history, newest first. A missing file is an empty history.
    pub fn read_history(&self) -> anyhow::Result<Vec<String>> {
        Ok(read_optional_trimmed(&self.history_path())?
            .map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn write_history(&self, hashes: &[String]) -> anyhow::Result<PathBuf> {
        let path = self.history_path();
        let mut body = hashes.join("\n");
        body.push('\n');
        write_atomic(&path, body.as_bytes(), PRIVATE)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn initial_password_exists(&self) -> bool {
        self.initial_password_path().exists()
    }

    /// Writes the plaintext initial password (0600, owned by the daemon's
    /// user; the installer runs this as root so the file is root-only there).
    pub fn write_initial_password(&self, password: &Secret<String>) -> anyhow::Result<PathBuf> {
        let path = self.initial_password_path();
        write_atomic(
            &path,
            format!("{}\n", password.expose()).as_bytes(),
            PRIVATE,
        )
        .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The revocation mark; a missing file is an empty mark. An unreadable
    /// or malformed one is an error naming the file.
    pub fn read_revocation_mark(&self) -> anyhow::Result<RevocationMark> {
        let path = self.revocation_mark_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid revocation mark", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RevocationMark::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Adds `mark` to the one on disk (another process, `admin
    /// set-password`, may have moved it) and writes the union atomically.
    /// A file that cannot be read is replaced: `mark` is what this process
    /// enforces. Returns the union.
    pub fn add_revocation_mark(&self, mark: &RevocationMark) -> anyhow::Result<RevocationMark> {
        let mut union = self.read_revocation_mark().unwrap_or_else(|e| {
            tracing::warn!(error = %format!("{e:#}"), "replacing the revocation mark");
            RevocationMark::default()
        });
        union.merge(mark);
        let path = self.revocation_mark_path();
        let body = serde_json::to_vec_pretty(&union).context("encoding the revocation mark")?;
        write_atomic(&path, &body, PRIVATE)
            .with_context(|| format!("writing {}", path.display()))?;
        self.give_to_dir_owner(&path)?;
        Ok(union)
    }

    fn give_to_dir_owner(&self, path: &Path) -> anyhow::Result<()> {
        give_to_dir_owner(&self.dir, path)
    }

    /// Removes the initial password file; returns its path if it existed.
    pub fn remove_initial_password(&self) -> anyhow::Result<Option<PathBuf>> {
        let path = self.initial_password_path();
        match fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir).with_context(|| format!("syncing {}", self.dir.display()))?;
                Ok(Some(path))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
        }
    }
}

fn read_optional_trimmed(path: &Path) -> anyhow::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| t.to_owned()))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Root writing into the secrets dir (`admin set-password` on an installed
/// box) would leave files the daemon's user cannot read: `path` is given to
/// the owner of `dir`. Never through a link: the dir is that user's, and a
/// link planted there must not make root hand over what it points to.
/// Nothing to do when not root, when the dir is root's, or when `path` does
/// not exist.
pub fn give_to_dir_owner(dir: &Path, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let owner = fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    if owner.uid() == 0 {
        return Ok(());
    }
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => anyhow::bail!(
            "{} is a symbolic link; refusing to change its owner (remove it and run again)",
            path.display()
        ),
        Ok(_) => std::os::unix::fs::lchown(path, Some(owner.uid()), Some(owner.gid()))
            .with_context(|| format!("giving {} to the secrets dir's owner", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn secret_debug_and_display_hide_the_value() {
        let s = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{s:?}"), "***");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn open_creates_dir_0700_and_key_0600_then_reuses_key() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/secrets");
        let secrets = SecretsDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);

        let (key, origin) = secrets.load_or_create_jwt_key().unwrap();
        assert_eq!(origin, KeyOrigin::Created);
        assert!(key.expose().len() >= MIN_JWT_KEY_LEN);
        assert_eq!(mode(&secrets.jwt_key_path()), 0o600);

        let again = SecretsDir::open(&dir).unwrap();
        let (key2, origin2) = again.load_or_create_jwt_key().unwrap();
        assert_eq!(origin2, KeyOrigin::Loaded);
        assert_eq!(key.expose(), key2.expose());
    }

    #[test]
    fn short_existing_jwt_key_is_refused_with_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = SecretsDir::open(tmp.path()).unwrap();
        write_atomic(&secrets.jwt_key_path(), b"too-short", PRIVATE).unwrap();
        let err = secrets.load_or_create_jwt_key().unwrap_err().to_string();
        assert!(err.contains("at least 32"), "{err}");
        assert!(err.contains("jwt.key"), "{err}");
    }

    #[test]
    fn loose_permissions_are_tightened_on_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("s");
        fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o755).unwrap();
        fs::write(dir.join(ADMIN_HASH_FILE), "x").unwrap();
        set_mode(&dir.join(ADMIN_HASH_FILE), 0o644).unwrap();
        SecretsDir::open(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(ADMIN_HASH_FILE)), 0o600);
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = SecretsDir::open(tmp.path()).unwrap();
        secrets.write_history(&["a".into(), "b".into()]).unwrap();
        secrets.write_history(&["c".into()]).unwrap();
        assert_eq!(secrets.read_history().unwrap(), vec!["c".to_owned()]);
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![PASSWORD_HISTORY_FILE.to_owned()]);
        assert_eq!(mode(&secrets.history_path()), 0o600);
    }

    #[test]
    fn revocation_mark_is_added_to_the_file_and_a_bad_file_names_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = SecretsDir::open(tmp.path()).unwrap();
        assert_eq!(
            secrets.read_revocation_mark().unwrap(),
            RevocationMark::default()
        );
        let t = |s: i64| chrono::DateTime::from_timestamp(1_750_000_000 + s, 0).unwrap();
        let mut first = RevocationMark::default();
        first.revoke_through(t(100), None);
        secrets.add_revocation_mark(&first).unwrap();
        // An older mark from elsewhere does not move it back.
        let mut older = RevocationMark::default();
        older.revoke_through(t(50), None);
        older.revoke_through(t(200), Some("me"));
        let union = secrets.add_revocation_mark(&older).unwrap();
        assert_eq!(union.all_through, Some(t(100)));
        assert_eq!(secrets.read_revocation_mark().unwrap(), union);
        assert_eq!(mode(&secrets.revocation_mark_path()), 0o600);

        fs::write(secrets.revocation_mark_path(), "{ not json").unwrap();
        let err = format!("{:#}", secrets.read_revocation_mark().unwrap_err());
        assert!(err.contains(REVOCATION_MARK_FILE), "{err}");
        // Writing replaces the broken file with what this process knows.
        assert_eq!(secrets.add_revocation_mark(&first).unwrap(), first);
        assert_eq!(secrets.read_revocation_mark().unwrap(), first);
    }

    #[test]
    fn initial_password_file_is_0600_and_removable() {
        let tmp = tempfile::tempdir().unwrap();
        let secrets = SecretsDir::open(tmp.path()).unwrap();
        let path = secrets
            .write_initial_password(&Secret::from("Initial-Pass-123"))
            .unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(secrets.initial_password_exists());
        assert_eq!(secrets.remove_initial_password().unwrap(), Some(path));
        assert!(!secrets.initial_password_exists());
        assert_eq!(secrets.remove_initial_password().unwrap(), None);
    }
}
