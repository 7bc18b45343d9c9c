//! What the USB worker does with one mounted filesystem, as plain blocking
//! functions: find `updates/*.araupdate`, rank them by the signed manifest's
//! version (cheap head check only), copy one off the stick while hashing.
//! Everything on the stick is opened read-only and never followed through
//! symlinks; nothing here writes to it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ring::digest;

use crate::update::Version;
use crate::update::bundle::EXTENSION;
use crate::update::keys::TrustedKeys;
use crate::update::manifest::{Manifest, cmp_version};
use crate::update::verify::{self, VerifyLimits};

/// The dir on a stick that holds bundles.
pub const UPDATES_DIR: &str = "updates";
/// Most bundle files looked at on one stick.
const MAX_FILES: usize = 64;

/// A bundle on the stick whose signed manifest makes it a candidate.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub path: PathBuf,
    pub version: Version,
    pub size: u64,
}

/// Candidates, highest version first, and the files passed over with why.
#[derive(Debug, Default)]
pub struct Scan {
    pub candidates: Vec<Candidate>,
    pub refused: Vec<(PathBuf, String)>,
}

/// Looks at `<mount>/updates/*.araupdate`: each must be a regular file (not
/// a link) whose manifest is signed by a trusted key and whose version is
/// newer than `installed` with `min_version` ≤ `installed`. The payload is
/// not read here; `copy` + full verification decide.
pub fn scan(mount: &Path, keys: &TrustedKeys, installed: &Version, limits: &VerifyLimits) -> Scan {
    let mut out = Scan::default();
    let dir = mount.join(UPDATES_DIR);
    // `updates` itself must be a directory on the stick, not a link that
    // leads the scan anywhere else on the box.
    match fs::symlink_metadata(&dir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => {
            out.refused.push((
                dir,
                "not a directory on the stick (links are not followed)".into(),
            ));
            return out;
        }
        Err(_) => return out,
    }
    let Ok(entries) = fs::read_dir(&dir) else {
        return out;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == EXTENSION))
        .collect();
    files.sort();
    if files.len() > MAX_FILES {
        for p in files.drain(MAX_FILES..) {
            out.refused
                .push((p, format!("more than {MAX_FILES} bundles on the stick")));
        }
    }
    for path in files {
        match check_head(&path, keys, installed, limits) {
            Ok(c) => out.candidates.push(c),
            Err(why) => out.refused.push((path, why)),
        }
    }
    out.candidates
        .sort_by(|a, b| cmp_version(&b.version, &a.version).then_with(|| a.path.cmp(&b.path)));
    out
}

fn check_head(
    path: &Path,
    keys: &TrustedKeys,
    installed: &Version,
    limits: &VerifyLimits,
) -> Result<Candidate, String> {
    let meta = fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file (links are not followed)".into());
    }
    let head = verify::read_head(path, limits).map_err(|e| format!("{} ({})", e, e.code()))?;
    if keys.is_empty() {
        return Err("no trusted update key is configured (no_trusted_key)".into());
    }
    if keys.verify(&head.manifest_bytes, &head.signature).is_none() {
        return Err(
            "the manifest signature does not verify against any trusted key (signature_invalid)"
                .into(),
        );
    }
    let m = Manifest::parse(&head.manifest_bytes).map_err(|e| format!("{e} (invalid_bundle)"))?;
    // Only images at the installed version: a provisioning stick.
    let order = cmp_version(&m.version, installed);
    if order.is_lt() || (order.is_eq() && !m.is_provisioning()) {
        return Err(format!(
            "version {} is not newer than the installed {installed} (version_not_newer)",
            m.version
        ));
    }
    if cmp_version(&m.min_version, installed).is_gt() {
        return Err(format!(
            "needs at least {} installed, this box runs {installed} (min_version_not_met)",
            m.min_version
        ));
    }
    Ok(Candidate {
        path: path.to_owned(),
        version: m.version,
        size: head.size,
    })
}

/// A bundle copied off the stick.
#[derive(Debug, Clone)]
pub struct Copied {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

/// Copies `src` (opened read-only, no symlink follow, never blocking on a
/// FIFO) into `dest_dir`
/// through a `.part` file, fsynced and renamed; hashes on the way. A read
/// error (stick pulled) or a size change leaves nothing behind.
pub fn copy(src: &Path, dest_dir: &Path, max_bytes: u64) -> io::Result<Copied> {
    let mut f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(src)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(io::Error::other(format!(
            "{} bytes; the limit is {max_bytes}",
            meta.len()
        )));
    }
    fs::create_dir_all(dest_dir)?;
    let name = src
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        })
        .unwrap_or_else(|| "bundle.araupdate".into());
    let dest = dest_dir.join(&name);
    let part = dest_dir.join(format!(".{name}.part"));
    let result = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            if size > meta.len() {
                return Err(io::Error::other("the file grew while it was copied"));
            }
            ctx.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        if size != meta.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("copied {size} of {} bytes (stick removed?)", meta.len()),
            ));
        }
        out.sync_all()?;
        fs::rename(&part, &dest)?;
        File::open(dest_dir)?.sync_all()?;
        Ok(Copied {
            path: dest.clone(),
            size,
            sha256: hex::encode(ctx.finish().as_ref()),
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&part);
    }
    result
}
