//! What a `docker save` tarball says it holds: for an image reference, the
//! image IDs a `docker load` of it can give that reference. The updater
//! checks the loaded tag against these, so a tag that already existed on
//! the box (or came from another member) is never taken for the bundle's
//! image.
//!
//! Both layouts `docker save` writes are read: the legacy one
//! (`manifest.json` with `Config: "<hex>.json"`) and the OCI one (Docker 25
//! and later: `Config: "blobs/sha256/<hex>"`, and `index.json`, whose
//! manifest digest is the image ID under the containerd image store). Only
//! headers are read; layer data is skipped with seeks.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::bundle::{BLOCK, padding};

/// Largest `manifest.json` / `index.json` read (they are a few KiB).
const MAX_INDEX: u64 = 4 << 20;

#[derive(Deserialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct OciDescriptor {
    digest: String,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The image IDs (`sha256:<hex>`) that `reference` may have once `tarball`
/// is loaded. An error when the tarball does not carry `reference` at all.
pub fn image_ids_for(tarball: &Path, reference: &str) -> anyhow::Result<Vec<String>> {
    let mut f =
        File::open(tarball).with_context(|| format!("cannot open {}", tarball.display()))?;
    let mut manifest = None;
    let mut index = None;
    let mut block = [0u8; BLOCK];
    loop {
        if f.read_exact(&mut block).is_err() || block.iter().all(|b| *b == 0) {
            break;
        }
        let name_end = block[..100].iter().position(|b| *b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&block[..name_end]).into_owned();
        let size = octal(&block[124..136]).context("a member header has a bad size field")?;
        let wanted = block[156] == b'0' || block[156] == 0;
        let name = name.trim_start_matches("./");
        if wanted && (name == "manifest.json" || name == "index.json") {
            if size > MAX_INDEX {
                bail!("{name} in the image tarball is {size} bytes");
            }
            let mut text = vec![0u8; size as usize];
            f.read_exact(&mut text)
                .with_context(|| format!("cannot read {name} from the image tarball"))?;
            f.seek(SeekFrom::Current(padding(size) as i64))?;
            if name == "manifest.json" {
                manifest = Some(text);
            } else {
                index = Some(text);
            }
        } else {
            f.seek(SeekFrom::Current((size + padding(size)) as i64))?;
        }
    }
    let manifest =
        manifest.context("the image tarball has no manifest.json (not a docker save)")?;
    let entries: Vec<SaveEntry> =
        serde_json::from_slice(&manifest).context("the image tarball's manifest.json")?;
    let mut ids = Vec::new();
    for e in &entries {
        if e.repo_tags.iter().flatten().any(|t| t == reference) {
            let hex = e
                .config
                .strip_prefix("blobs/sha256/")
                .or_else(|| e.config.strip_suffix(".json"))
                .unwrap_or(&e.config);
            ids.push(format!("sha256:{hex}"));
        }
    }
    if ids.is_empty() {
        let tags: Vec<&String> = entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten())
            .collect();
        bail!("the image tarball does not carry {reference} (it carries {tags:?})");
    }
    if let Some(index) = index {
        let index: OciIndex =
            serde_json::from_slice(&index).context("the image tarball's index.json")?;
        for m in index.manifests {
            let named = m
                .annotations
                .get("io.containerd.image.name")
                .is_some_and(|n| n == reference || n.ends_with(&format!("/{reference}")));
            if named {
                ids.push(m.digest);
            }
        }
    }
    Ok(ids)
}

fn octal(field: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::update::bundle::BundleWriter;

    fn tarball(members: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = BundleWriter::new(std::fs::File::create(f.path()).unwrap(), 0);
        for (name, data) in members {
            w.append_bytes(name, data).unwrap();
        }
        w.finish().unwrap();
        f
    }

    #[test]
    fn the_legacy_layout_names_the_config_digest_of_the_tagged_image() {
        let f = tarball(&[
            ("aaaa/layer.tar", b"layer bytes"),
            (
                "manifest.json",
                br#"[{"Config":"abc123.json","RepoTags":["app:v2"],"Layers":["aaaa/layer.tar"]},
                    {"Config":"def456.json","RepoTags":["other:v9"],"Layers":[]}]"#,
            ),
        ]);
        assert_eq!(
            image_ids_for(f.path(), "app:v2").unwrap(),
            vec!["sha256:abc123"]
        );
        let err = image_ids_for(f.path(), "app:v3").unwrap_err().to_string();
        assert!(err.contains("does not carry app:v3"), "{err}");
        assert!(err.contains("other:v9"), "{err}");
    }

    #[test]
    fn the_oci_layout_adds_the_manifest_digest() {
        let f = tarball(&[
            ("blobs/sha256/abc", b"{}"),
            (
                "index.json",
                br#"{"schemaVersion":2,"manifests":[{"digest":"sha256:m1","annotations":{"io.containerd.image.name":"docker.io/library/app:v2"}}]}"#,
            ),
            (
                "manifest.json",
                br#"[{"Config":"blobs/sha256/abc","RepoTags":["app:v2"],"Layers":[]}]"#,
            ),
        ]);
        assert_eq!(
            image_ids_for(f.path(), "app:v2").unwrap(),
            vec!["sha256:abc", "sha256:m1"]
        );
    }

    #[test]
    fn a_tarball_without_a_manifest_is_refused() {
        let f = tarball(&[("layer.tar", b"x")]);
        let err = image_ids_for(f.path(), "app:v2").unwrap_err().to_string();
        assert!(err.contains("no manifest.json"), "{err}");
    }
}
