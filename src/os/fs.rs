//! The two ways the daemon writes its own small files: replacing one whole
//! (state, secrets, keys, spools) so a crash leaves the old or the new
//! content, and appending a line to one of its log files. Large streamed
//! copies (bundles, archives) keep their own `.part` handling.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rand::Rng;

/// Owner read/write only: secrets, keys, and whatever else only the daemon reads.
pub const PRIVATE: Option<u32> = Some(0o600);

/// Replaces `path` with `bytes`: a temp file in the same directory (created
/// if missing), written, given its mode, fsynced, renamed over `path`, and
/// the directory fsynced. `mode` is exact when given (not filtered by the
/// umask); `None` creates the file as `File::create` would (0666 less the
/// umask). The temp file is created new, under a random name, so neither a
/// concurrent writer nor a link planted in the directory is written through;
/// on error it is removed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    fs::create_dir_all(dir)?;
    let mut suffix = [0u8; 6];
    rand::rng().fill(&mut suffix[..]);
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        hex::encode(suffix)
    ));

    let result = (|| {
        let mut open = OpenOptions::new();
        open.write(true).create_new(true);
        if let Some(mode) = mode {
            open.mode(mode);
        }
        let mut file = open.open(&tmp)?;
        if let Some(mode) = mode {
            // open()'s mode is filtered by the umask: make it exact.
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename, creation or removal in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Opens `path` for appending, creating it and its directory when missing.
pub fn open_append(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Appends `line` and a newline to `path` in one write, so lines from
/// concurrent writers (O_APPEND) do not interleave.
pub fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut buf = String::with_capacity(line.len() + 1);
    buf.push_str(line);
    buf.push('\n');
    open_append(path)?.write_all(buf.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_content_with_the_exact_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nested/key");
        write_atomic(&p, b"one", PRIVATE).unwrap();
        write_atomic(&p, b"two", Some(0o644)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(mode(&p), 0o644);
        write_atomic(&p, b"three", PRIVATE).unwrap();
        assert_eq!(mode(&p), 0o600);
        assert_eq!(names(&dir.path().join("nested")), vec!["key".to_owned()]);
    }

    #[test]
    fn atomic_write_over_a_directory_fails_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("taken")).unwrap();
        fs::write(dir.path().join("taken/x"), "x").unwrap();
        assert!(write_atomic(&dir.path().join("taken"), b"y", None).is_err());
        assert_eq!(names(dir.path()), vec!["taken".to_owned()]);
    }

    #[test]
    fn appended_lines_follow_one_another_in_a_created_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs/a.log");
        append_line(&p, "first").unwrap();
        append_line(&p, "second").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "first\nsecond\n");
    }
}
