//! A model in a bundle: one tar (the bundle's own strict ustar subset) of
//! what an Ollama runtime keeps for it in its store, the manifest first
//! (`manifests/registry.ollama.ai/library/<model>/<tag>`), then each blob
//! it names (`blobs/sha256-<hex>`). The bundle hashes the tar as a whole;
//! installing checks every blob against the digest in its name again and
//! writes the manifest last, so the runtime never lists a model whose
//! blobs are not all there.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ring::digest;

use super::bundle::{BLOCK, BundleWriter, Header, padding, parse_header};
use crate::ai::admission::{Manifest, blob_file, full_name};

/// A blob being written is `.sha256-<hex>` + this until it is checked.
const PART: &str = ".arasul-part";

/// Largest model manifest read (they are about 1 KiB).
const MAX_MANIFEST: u64 = 1 << 20;

/// `manifests/registry.ollama.ai/library/<model>/<tag>` of a model name.
pub fn manifest_path(model: &str) -> String {
    let full = full_name(model);
    let (name, tag) = full.split_once(':').unwrap_or((&full, "latest"));
    format!("manifests/registry.ollama.ai/library/{name}/{tag}")
}

/// The model's manifest as the store holds it.
fn read_manifest(store: &Path, model: &str) -> anyhow::Result<(Vec<u8>, Manifest)> {
    let path = store.join(manifest_path(model));
    let bytes = fs::read(&path).with_context(|| {
        format!(
            "{model} is not in the model store {} (no {})",
            store.display(),
            path.display()
        )
    })?;
    let m: Manifest = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a model manifest", path.display()))?;
    Ok((bytes, m))
}

fn digests(m: &Manifest) -> Vec<String> {
    m.config
        .iter()
        .chain(m.layers.iter())
        .map(|l| l.digest.clone())
        .collect()
}

/// Whether `digest` is `sha256:` and 64 lowercase hex digits.
fn valid_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Writes the tar of `model` from `store` to `out`. Returns its size.
pub fn write_model(store: &Path, model: &str, out: &Path) -> anyhow::Result<u64> {
    let (bytes, m) = read_manifest(store, model)?;
    let f = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BundleWriter::new(BufWriter::with_capacity(1 << 20, f), 0);
    w.append_bytes(&manifest_path(model), &bytes)?;
    for d in digests(&m) {
        if !valid_digest(&d) {
            bail!("{model}: the manifest names a blob {d:?} that is not a sha256 digest");
        }
        let name = format!("blobs/{}", blob_file(&d));
        let path = store.join(&name);
        let mut src = File::open(&path).with_context(|| {
            format!("{model}: blob {} is missing from the store", path.display())
        })?;
        let size = src.metadata()?.len();
        w.append_reader(&name, size, &mut src)
            .with_context(|| format!("adding {}", path.display()))?;
    }
    let f = w
        .finish()?
        .into_inner()
        .map_err(|e| anyhow::anyhow!("writing {}: {}", out.display(), e.error()))?;
    f.sync_all()?;
    Ok(f.metadata()?.len())
}

/// Installs the model of `tar` into `store`: blobs first (each checked
/// against its digest; those already there are kept), the manifest last.
/// Returns the files it created (a rollback removes them). Nothing it
/// created stays when it fails.
pub fn install_model(tar: &Path, store: &Path, model: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    let res = install(tar, store, model, &mut created);
    if res.is_err() {
        for p in created.iter().rev() {
            let _ = fs::remove_file(p);
        }
        created.clear();
    }
    res.map(|()| created)
}

fn install(
    tar: &Path,
    store: &Path,
    model: &str,
    created: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    let want_manifest = manifest_path(model);
    let mut f = File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let blobs = store.join("blobs");
    fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;
    // Parts an install cut short by a crash left (one install runs at a time).
    for e in fs::read_dir(&blobs)?.flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(".sha256-") && n.ends_with(PART))
        {
            let _ = fs::remove_file(e.path());
        }
    }
    let mut manifest: Option<(Vec<u8>, Manifest)> = None;
    let mut seen = std::collections::BTreeSet::new();
    let mut block = [0u8; BLOCK];
    loop {
        f.read_exact(&mut block)
            .context("the model tar ends before its end marker")?;
        let h = match parse_header(&block).map_err(anyhow::Error::msg)? {
            Header::End => break,
            Header::File(h) => h,
        };
        if h.name == want_manifest {
            if manifest.is_some() || h.size > MAX_MANIFEST {
                bail!("{}: a second or oversized manifest", h.name);
            }
            let mut bytes = vec![0; h.size as usize];
            f.read_exact(&mut bytes)?;
            let m: Manifest = serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a model manifest", h.name))?;
            manifest = Some((bytes, m));
        } else if let Some(hex) = h.name.strip_prefix("blobs/sha256-") {
            let digest = format!("sha256:{hex}");
            if !valid_digest(&digest) {
                bail!("{}: not a blob name", h.name);
            }
            let target = blobs.join(format!("sha256-{hex}"));
            if target.exists() {
                f.seek(SeekFrom::Current(h.size as i64))?;
            } else {
                let part = blobs.join(format!(".sha256-{hex}{PART}"));
                copy_checked(&mut f, h.size, &part, hex).with_context(|| h.name.clone())?;
                fs::rename(&part, &target)?;
                created.push(target);
            }
            seen.insert(digest);
        } else {
            bail!(
                "{}: a model tar holds only {want_manifest} and blobs/sha256-<hex>",
                h.name
            );
        }
        f.seek(SeekFrom::Current(padding(h.size) as i64))?;
    }
    let Some((bytes, m)) = manifest else {
        bail!("the model tar has no {want_manifest}");
    };
    for d in digests(&m) {
        if !seen.contains(&d) && !blobs.join(blob_file(&d)).exists() {
            bail!("the manifest of {model} names blob {d}, which the tar does not carry");
        }
    }
    let target = store.join(&want_manifest);
    let existed = target.exists();
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir)?;
    }
    crate::os::fs::write_atomic(&target, &bytes, crate::os::fs::PRIVATE)?;
    if !existed {
        created.push(target);
    }
    Ok(())
}

/// Copies `size` bytes of `src` to `part`, refusing content whose sha256 is
/// not `hex`.
fn copy_checked(src: &mut File, size: u64, part: &Path, hex: &str) -> anyhow::Result<()> {
    let mut out = File::create(part).with_context(|| format!("creating {}", part.display()))?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut left = size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        src.read_exact(&mut buf[..n])?;
        ctx.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    let got = hex::encode(ctx.finish().as_ref());
    if got != hex {
        drop(out);
        let _ = fs::remove_file(part);
        bail!("its content hashes to sha256:{got}: corrupted");
    }
    out.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store holding `model` with two real blobs.
    fn store_with(dir: &Path, model: &str) -> (String, String) {
        let blob = |content: &[u8]| -> String {
            let h = hex::encode(digest::digest(&digest::SHA256, content).as_ref());
            fs::create_dir_all(dir.join("blobs")).unwrap();
            fs::write(dir.join(format!("blobs/sha256-{h}")), content).unwrap();
            format!("sha256:{h}")
        };
        let weights = blob(&vec![7u8; 300_000]);
        let config = blob(b"{\"model_format\":\"gguf\"}");
        let m = serde_json::json!({"schemaVersion": 2, "config": {"digest": config, "size": 24},
            "layers": [{"digest": weights, "size": 300_000, "mediaType": "application/vnd.ollama.image.model"}]});
        let p = dir.join(manifest_path(model));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, m.to_string()).unwrap();
        (weights, config)
    }

    #[test]
    fn a_model_goes_from_one_store_to_another_blobs_first_and_checked() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        let (weights, _) = store_with(src.path(), "llama3.2:1b");
        let tar = src.path().join("m.tar");
        write_model(src.path(), "llama3.2:1b", &tar).unwrap();
        let created = install_model(&tar, dst.path(), "llama3.2:1b").unwrap();
        assert_eq!(created.len(), 3, "{created:?}");
        assert_eq!(
            fs::read(dst.path().join(manifest_path("llama3.2:1b"))).unwrap(),
            fs::read(src.path().join(manifest_path("llama3.2:1b"))).unwrap()
        );
        assert!(dst.path().join("blobs").join(blob_file(&weights)).is_file());
        // Again: nothing new is created.
        assert!(
            install_model(&tar, dst.path(), "llama3.2:1b")
                .unwrap()
                .is_empty()
        );
        // Under another name the tar is refused.
        let e = install_model(&tar, dst.path(), "qwen2.5:7b").unwrap_err();
        assert!(format!("{e:#}").contains("holds only"), "{e:#}");
    }

    #[test]
    fn a_corrupted_blob_is_refused_and_nothing_stays() {
        let src = tempfile::tempdir().unwrap();
        let dst = tempfile::tempdir().unwrap();
        store_with(src.path(), "m:1b");
        let tar = src.path().join("m.tar");
        write_model(src.path(), "m:1b", &tar).unwrap();
        // Flip a byte in the middle of the weights.
        let mut bytes = fs::read(&tar).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0xff;
        fs::write(&tar, &bytes).unwrap();
        // A part a crashed install left behind goes with the next install.
        fs::create_dir_all(dst.path().join("blobs")).unwrap();
        fs::write(dst.path().join("blobs/.sha256-00.arasul-part"), b"half").unwrap();
        let e = install_model(&tar, dst.path(), "m:1b").unwrap_err();
        assert!(format!("{e:#}").contains("corrupted"), "{e:#}");
        let left: Vec<_> = walk(dst.path());
        assert!(
            left.is_empty(),
            "nothing stays, no old part either: {left:?}"
        );
    }

    #[test]
    fn a_model_missing_from_the_store_is_a_clear_error() {
        let src = tempfile::tempdir().unwrap();
        let e = write_model(src.path(), "nope:1b", &src.path().join("x.tar")).unwrap_err();
        assert!(
            format!("{e:#}").contains("nope:1b is not in the model store"),
            "{e:#}"
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
        out
    }
}
