//! One backup archive: an uncompressed ustar file (the update bundle's
//! strict subset, `update::bundle`) whose first member is `manifest.json`
//! and whose other members are the items it lists, each with its size and
//! sha256. Written through a `.part` file that is fsynced and renamed, so a
//! crash or a full disk never leaves a half archive under the real name;
//! read back member by member (never whole in memory), every byte hashed.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::update::bundle::{BLOCK, BundleWriter, Header, padding, parse_header};

/// `format` of the archives this daemon writes and reads.
pub const FORMAT: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
/// Largest manifest read.
const MAX_MANIFEST: u64 = 4 << 20;

/// What one archive holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub format: u32,
    pub created: DateTime<Utc>,
    /// The box's name and the daemon's version that wrote it.
    pub host: String,
    pub version: String,
    pub items: Vec<Item>,
    /// Rows per table of the arasuld database, counted in the snapshot the
    /// dump was taken from (the verification compares against these).
    pub tables: BTreeMap<String, i64>,
    /// What was left out, and why (e.g. MinIO's data over its size limit).
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// One member of the archive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    /// `database`, `config`, `secrets`, `models`, `volume`.
    pub kind: String,
    /// The member's file name in the archive.
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// For a volume: the service it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// For a volume: the host directory it was copied from (and goes back to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub path: Option<PathBuf>,
}

/// sha256 (hex) and size of a file.
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        ctx.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), n))
}

/// Writes the archive `dest` from the manifest and the staged item files in
/// `staging` (named as `item.file`): `<dest>.part`, fsynced, renamed, the
/// directory fsynced. Returns the archive's size. Blocking.
pub fn write(dest: &Path, manifest: &Manifest, staging: &Path) -> anyhow::Result<u64> {
    let part = part_path(dest);
    let result = (|| {
        // It holds the secrets and the password hashes: the owner's alone.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&part)
            .with_context(|| format!("cannot create {}", part.display()))?;
        let mut w = BundleWriter::new(std::io::BufWriter::with_capacity(1 << 20, f), 0);
        let text = serde_json::to_vec_pretty(manifest)?;
        w.append_bytes(MANIFEST, &text)?;
        for item in &manifest.items {
            let src = staging.join(&item.file);
            let mut r =
                File::open(&src).with_context(|| format!("cannot open {}", src.display()))?;
            w.append_reader(&item.file, item.size, &mut r)
                .with_context(|| format!("writing {} into the archive", item.file))?;
        }
        let f = w
            .finish()?
            .into_inner()
            .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&part, dest)?;
        if let Some(dir) = dest.parent() {
            File::open(dir)?.sync_all()?;
        }
        anyhow::Ok(std::fs::metadata(dest)?.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

/// Reads the whole archive: the manifest first, then every member, each
/// hashed and compared with the manifest; every listed item must be there
/// once and nothing else. With `extract_to`, the members are written there
/// as they are read (the caller removes the dir when the check fails).
/// Blocking. An `Err` says what is wrong in words.
pub fn check(archive: &Path, extract_to: Option<&Path>) -> anyhow::Result<Manifest> {
    let f = File::open(archive).with_context(|| format!("cannot open {}", archive.display()))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut block = [0u8; BLOCK];
    let mut next = |r: &mut BufReader<File>| -> anyhow::Result<Option<(String, u64)>> {
        r.read_exact(&mut block)
            .context("the archive ends early (truncated)")?;
        match parse_header(&block).map_err(anyhow::Error::msg)? {
            Header::End => Ok(None),
            Header::File(h) => Ok(Some((h.name, h.size))),
        }
    };
    let Some((name, size)) = next(&mut r)? else {
        bail!("the archive is empty");
    };
    if name != MANIFEST {
        bail!("the archive does not start with {MANIFEST} (it starts with {name:?})");
    }
    if size > MAX_MANIFEST {
        bail!("{MANIFEST} is {size} bytes; refusing to read it");
    }
    let mut text = vec![0u8; size as usize];
    r.read_exact(&mut text)
        .context("the archive ends inside its manifest")?;
    skip(&mut r, padding(size))?;
    let manifest: Manifest =
        serde_json::from_slice(&text).context("the archive's manifest.json is not valid")?;
    if manifest.format != FORMAT {
        bail!(
            "the archive is of format {} (this daemon reads format {FORMAT})",
            manifest.format
        );
    }
    let mut wanted: BTreeMap<&str, &Item> = BTreeMap::new();
    for item in &manifest.items {
        crate::update::bundle::check_member_name(&item.file).map_err(anyhow::Error::msg)?;
        if item.file.contains('/') || wanted.insert(&item.file, item).is_some() {
            bail!("the manifest lists {:?} badly or twice", item.file);
        }
    }
    if let Some(dir) = extract_to {
        std::fs::create_dir_all(dir)?;
    }
    let mut buf = vec![0u8; 1 << 20];
    while let Some((name, size)) = next(&mut r)? {
        let item = wanted.remove(name.as_str()).with_context(|| {
            format!("the archive holds {name:?}, which its manifest does not list")
        })?;
        if size != item.size {
            bail!(
                "{name}: {size} bytes in the archive, {} in the manifest",
                item.size
            );
        }
        let mut out = match extract_to {
            Some(dir) => Some(std::io::BufWriter::new(File::create(dir.join(&name))?)),
            None => None,
        };
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        let mut left = size;
        while left > 0 {
            let k = left.min(buf.len() as u64) as usize;
            r.read_exact(&mut buf[..k])
                .with_context(|| format!("the archive ends inside {name}"))?;
            ctx.update(&buf[..k]);
            if let Some(o) = out.as_mut() {
                o.write_all(&buf[..k])?;
            }
            left -= k as u64;
        }
        if let Some(o) = out {
            o.into_inner()
                .map_err(|e| anyhow::anyhow!("{}", e.error()))?
                .sync_all()?;
        }
        let got = hex::encode(ctx.finish().as_ref());
        if got != item.sha256 {
            bail!(
                "{name} is corrupt: its sha256 is {got}, the manifest says {}",
                item.sha256
            );
        }
        skip(&mut r, padding(size))?;
    }
    if let Some(missing) = wanted.keys().next() {
        bail!("the archive lacks {missing}, which its manifest lists");
    }
    Ok(manifest)
}

fn skip(r: &mut impl Read, n: u64) -> anyhow::Result<()> {
    let got = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if got != n {
        bail!("the archive is truncated");
    }
    Ok(())
}

/// Reads only the manifest (listing a stick or a directory).
pub fn read_manifest(archive: &Path) -> anyhow::Result<Manifest> {
    let mut f = File::open(archive)?;
    let mut block = [0u8; BLOCK];
    f.read_exact(&mut block)?;
    match parse_header(&block).map_err(anyhow::Error::msg)? {
        Header::File(h) if h.name == MANIFEST && h.size <= MAX_MANIFEST => {
            let mut text = vec![0u8; h.size as usize];
            f.read_exact(&mut text)?;
            Ok(serde_json::from_slice(&text)?)
        }
        _ => bail!("{} is not a backup archive", archive.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, files: &[(&str, &[u8])]) -> Manifest {
        let mut items = Vec::new();
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
            let (sha256, size) = hash_file(&dir.join(name)).unwrap();
            items.push(Item {
                kind: "config".into(),
                file: (*name).into(),
                size,
                sha256,
                service: None,
                path: None,
            });
        }
        Manifest {
            format: FORMAT,
            created: Utc::now(),
            host: "box".into(),
            version: "1.0.0".into(),
            items,
            tables: BTreeMap::from([("t".into(), 3)]),
            skipped: Vec::new(),
        }
    }

    #[test]
    fn an_archive_reads_back_with_every_item_and_extracts_them() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("s");
        std::fs::create_dir(&staging).unwrap();
        let m = staged(&staging, &[("a.bin", b"hello"), ("b.tar", &[7u8; 1500])]);
        let dest = d.path().join("x.tar");
        let size = write(&dest, &m, &staging).unwrap();
        assert_eq!(size, std::fs::metadata(&dest).unwrap().len());
        assert!(!part_path(&dest).exists());
        let out = d.path().join("out");
        assert_eq!(check(&dest, Some(&out)).unwrap(), m);
        assert_eq!(std::fs::read(out.join("a.bin")).unwrap(), b"hello");
        assert_eq!(read_manifest(&dest).unwrap(), m);
    }

    #[test]
    fn one_flipped_byte_or_a_truncation_is_found() {
        let d = tempfile::tempdir().unwrap();
        let m = staged(d.path(), &[("a.bin", &[1u8; 3000])]);
        let dest = d.path().join("x.tar");
        write(&dest, &m, d.path()).unwrap();
        let mut bytes = std::fs::read(&dest).unwrap();
        let data_at = bytes.len() - 2 * BLOCK - 3000usize.next_multiple_of(BLOCK) + 100;
        bytes[data_at] ^= 1;
        std::fs::write(&dest, &bytes).unwrap();
        let e = check(&dest, None).unwrap_err().to_string();
        assert!(e.contains("a.bin is corrupt"), "{e}");
        bytes[data_at] ^= 1;
        bytes.truncate(bytes.len() - 3 * BLOCK);
        std::fs::write(&dest, &bytes).unwrap();
        let e = check(&dest, None).unwrap_err().to_string();
        assert!(e.contains("ends"), "{e}");
    }
}
