//! Will a model fit? Before a pull starts (and before a model is loaded),
//! its download is compared with the free space of the runtime's model
//! store and its memory need with the memory the runtime can have. A model
//! that cannot fit is refused with the numbers, in English or German.
//!
//! Where the numbers come from:
//! - the download: the registry's manifest (the sum of its layers, less the
//!   blobs the store already has), else the curated list `assets/models.yaml`;
//! - the memory need: the curated list, else the weights plus 15 % and
//!   512 MiB (the KV cache of a default context and the runner);
//! - the free space: `statvfs` of the store's host directory (the catalog's
//!   volume for the runtime's `/root/.ollama`), less `models.disk_margin`;
//! - the memory room: what the kernel calls available, plus what the
//!   runtime's loaded models hold now (the runtime unloads them for a new
//!   one), less `models.memory_reserve`, at most the runtime's
//!   `memory_limit`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::docker::catalog::ServiceSpec;

/// The curated models, shipped with the daemon (`assets/models.yaml`).
const CURATED: &str = include_str!("../../assets/models.yaml");

/// One model of the curated list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CuratedModel {
    pub name: String,
    /// `llm` or `embeddings`: which runtime it belongs in.
    pub role: String,
    /// Bytes the runtime downloads.
    pub download: u64,
    /// Bytes it needs loaded (weights, default context, runner).
    pub memory: u64,
    pub en: String,
    pub de: String,
    /// Offered first by the setup wizard.
    #[serde(default)]
    pub recommended: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CuratedFile {
    models: Vec<CuratedModel>,
}

/// The curated list; the shipped file is checked by a unit test.
pub fn curated() -> Vec<CuratedModel> {
    serde_yaml::from_str::<CuratedFile>(CURATED)
        .map(|f| f.models)
        .unwrap_or_default()
}

/// `llama3.2` → `llama3.2:latest`, as the runtime names it.
pub fn full_name(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

pub fn curated_entry(name: &str) -> Option<CuratedModel> {
    let n = full_name(name);
    curated().into_iter().find(|m| full_name(&m.name) == n)
}

/// Memory a model needs loaded when nothing better is known.
pub fn memory_estimate(weights: u64) -> u64 {
    weights + weights * 15 / 100 + (512 << 20)
}

/// What a model asks of the box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footprint {
    /// Bytes still to download (blobs the store has are not counted).
    pub download: u64,
    pub memory: u64,
}

/// What the box can give the runtime right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// Free bytes of the model store's file system.
    pub disk_free: u64,
    /// Kept free on that file system (`models.disk_margin`).
    pub disk_margin: u64,
    /// Memory the runtime may use for the model.
    pub memory: u64,
    /// The runtime's `memory_limit`, when that is what bounds `memory`.
    pub memory_limit: Option<u64>,
}

/// Why a model does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Shortfall {
    Disk {
        need: u64,
        free: u64,
        margin: u64,
    },
    Memory {
        need: u64,
        room: u64,
        limit: Option<u64>,
    },
}

/// A refusal: the model and every reason it does not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub model: String,
    pub shortfalls: Vec<Shortfall>,
}

/// The page language of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    De,
}

impl Lang {
    /// From `Accept-Language`: German when it is preferred over English.
    pub fn from_accept_language(h: Option<&str>) -> Lang {
        let Some(h) = h else { return Lang::En };
        let mut best = (Lang::En, -1.0_f32);
        for part in h.split(',') {
            let mut it = part.split(';');
            let tag = it.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q=").map(str::to_string))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            let lang = if tag == "de" || tag.starts_with("de-") {
                Lang::De
            } else if tag == "en" || tag.starts_with("en-") || tag == "*" {
                Lang::En
            } else {
                continue;
            };
            if q > best.1 {
                best = (lang, q);
            }
        }
        best.0
    }
}

/// Bytes as people read them: `4.7 GB` / `4,7 GB` (powers of 1000).
pub fn human_bytes(n: u64, lang: Lang) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    let s = if u == 0 {
        format!("{n}")
    } else {
        format!("{v:.1}")
    };
    let s = if lang == Lang::De {
        s.replace('.', ",")
    } else {
        s
    };
    format!("{s} {}", UNITS[u])
}

impl Shortfall {
    pub fn message(&self, model: &str, lang: Lang) -> String {
        let b = |n: u64| human_bytes(n, lang);
        match (self, lang) {
            (Shortfall::Disk { need, free, margin }, Lang::En) => format!(
                "{model} needs {} of disk space for its download, but the model store has {} free{}",
                b(*need),
                b(*free),
                if *margin == 0 {
                    String::new()
                } else {
                    format!(" ({} of it is kept free)", b(*margin))
                }
            ),
            (Shortfall::Disk { need, free, margin }, Lang::De) => format!(
                "{model} braucht {} Speicherplatz für den Download, im Modellspeicher sind aber nur {} frei{}",
                b(*need),
                b(*free),
                if *margin == 0 {
                    String::new()
                } else {
                    format!(" (davon bleiben {} als Reserve frei)", b(*margin))
                }
            ),
            (Shortfall::Memory { need, room, limit }, Lang::En) => {
                let why = match limit {
                    Some(l) if l == room => {
                        format!("the runtime's memory limit is {}", b(*l))
                    }
                    _ => format!("about {} are available to it", b(*room)),
                };
                format!(
                    "{model} needs about {} of memory to run, but {why}",
                    b(*need)
                )
            }
            (Shortfall::Memory { need, room, limit }, Lang::De) => {
                let why = match limit {
                    Some(l) if l == room => {
                        format!("die Laufzeit darf höchstens {} belegen", b(*l))
                    }
                    _ => format!("verfügbar sind nur etwa {}", b(*room)),
                };
                format!(
                    "{model} braucht etwa {} Arbeitsspeicher, aber {why}",
                    b(*need)
                )
            }
        }
    }

    /// The API's error code for it.
    pub fn code(&self) -> &'static str {
        match self {
            Shortfall::Disk { .. } => "insufficient_disk",
            Shortfall::Memory { .. } => "insufficient_memory",
        }
    }
}

impl Refusal {
    /// Every reason, in one sentence each.
    pub fn message(&self, lang: Lang) -> String {
        let parts: Vec<String> = self
            .shortfalls
            .iter()
            .map(|s| s.message(&self.model, lang))
            .collect();
        parts.join(". ") + "."
    }

    /// The code of the first reason (disk before memory).
    pub fn code(&self) -> &'static str {
        self.shortfalls
            .first()
            .map_or("insufficient_disk", Shortfall::code)
    }
}

/// The verdict: Ok, or every reason the model does not fit.
pub fn check(model: &str, need: Footprint, room: Room) -> Result<(), Refusal> {
    let mut shortfalls = Vec::new();
    let usable = room.disk_free.saturating_sub(room.disk_margin);
    if need.download > usable {
        shortfalls.push(Shortfall::Disk {
            need: need.download,
            free: room.disk_free,
            margin: room.disk_margin,
        });
    }
    if need.memory > room.memory {
        shortfalls.push(Shortfall::Memory {
            need: need.memory,
            room: room.memory,
            limit: room.memory_limit,
        });
    }
    if shortfalls.is_empty() {
        Ok(())
    } else {
        Err(Refusal {
            model: model.to_string(),
            shortfalls,
        })
    }
}

/// The models directory inside the runtime's container.
fn container_models_dir(spec: &ServiceSpec) -> String {
    spec.env
        .get("OLLAMA_MODELS")
        .cloned()
        .unwrap_or_else(|| "/root/.ollama/models".into())
}

/// The runtime's model store on the host: the bind mount that holds its
/// models directory. `None` for a named volume (Docker keeps that).
pub fn store_dir(spec: &ServiceSpec) -> Option<PathBuf> {
    let inside = container_models_dir(spec);
    spec.volumes.iter().find_map(|v| {
        let mut parts = v.split(':');
        let host = parts.next()?;
        let container = parts.next()?.trim_end_matches('/');
        if !host.starts_with('/') {
            return None;
        }
        let rest = inside.strip_prefix(container)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        Some(Path::new(host).join(rest.trim_start_matches('/')))
    })
}

/// The directory whose file system holds the store: the store itself, or
/// its nearest existing parent (before the first pull creates it).
pub fn existing_ancestor(dir: &Path) -> PathBuf {
    let mut p = dir.to_path_buf();
    while !p.exists() {
        match p.parent() {
            Some(up) if up != p => p = up.to_path_buf(),
            _ => break,
        }
    }
    p
}

/// `sha256:abc…` → the blob's file name in the store (`sha256-abc…`).
pub fn blob_file(digest: &str) -> String {
    digest.replacen(':', "-", 1)
}

/// A layer of a registry manifest.
#[derive(Clone, Debug, Deserialize)]
pub struct Layer {
    pub digest: String,
    pub size: u64,
}

/// An OCI/Docker v2 manifest, as Ollama's registry serves models.
#[derive(Clone, Debug, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub config: Option<Layer>,
    pub layers: Vec<Layer>,
}

impl Manifest {
    fn blobs(&self) -> impl Iterator<Item = &Layer> {
        self.config.iter().chain(self.layers.iter())
    }

    /// The weights: the largest layer.
    pub fn weights(&self) -> u64 {
        self.layers.iter().map(|l| l.size).max().unwrap_or(0)
    }

    /// Bytes still to download into `store` (blobs already there are skipped).
    pub fn missing_bytes(&self, store: Option<&Path>) -> u64 {
        self.blobs()
            .filter(|l| store.is_none_or(|s| !s.join("blobs").join(blob_file(&l.digest)).exists()))
            .map(|l| l.size)
            .sum()
    }
}

/// The manifest's URL: `{registry}/v2/library/{model}/manifests/{tag}`.
pub fn manifest_url(registry: &str, model: &str) -> String {
    let full = full_name(model);
    let (name, tag) = full.split_once(':').unwrap_or((&full, "latest"));
    format!(
        "{}/v2/library/{name}/manifests/{tag}",
        registry.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GB: u64 = 1_000_000_000;

    #[test]
    fn the_shipped_curated_list_parses_and_names_valid_models() {
        let list = curated();
        assert!(list.len() >= 5, "{list:?}");
        for m in &list {
            crate::ai::check_model_name(&m.name).unwrap();
            assert!(m.role == "llm" || m.role == "embeddings", "{m:?}");
            assert!(m.download > 0 && m.memory > m.download, "{m:?}");
            assert!(!m.en.is_empty() && !m.de.is_empty());
        }
        assert!(list.iter().any(|m| m.recommended && m.role == "llm"));
        assert!(list.iter().any(|m| m.recommended && m.role == "embeddings"));
    }

    #[test]
    fn a_model_that_fits_passes_and_one_that_does_not_gets_every_reason() {
        let room = Room {
            disk_free: 20 * GB,
            disk_margin: 2 * GB,
            memory: 16 * GB,
            memory_limit: None,
        };
        let small = Footprint {
            download: 2 * GB,
            memory: 3 * GB,
        };
        assert_eq!(check("llama3.2:3b", small, room), Ok(()));
        // 19 GB of 20 free, but 2 are kept: refused.
        let big = Footprint {
            download: 19 * GB,
            memory: 43 * GB,
        };
        let r = check("llama3.1:70b", big, room).unwrap_err();
        assert_eq!(r.code(), "insufficient_disk");
        assert_eq!(r.shortfalls.len(), 2);
        assert_eq!(
            r.message(Lang::En),
            "llama3.1:70b needs 19.0 GB of disk space for its download, but the model store has 20.0 GB free (2.0 GB of it is kept free). \
             llama3.1:70b needs about 43.0 GB of memory to run, but about 16.0 GB are available to it."
        );
        assert_eq!(
            r.message(Lang::De),
            "llama3.1:70b braucht 19,0 GB Speicherplatz für den Download, im Modellspeicher sind aber nur 20,0 GB frei (davon bleiben 2,0 GB als Reserve frei). \
             llama3.1:70b braucht etwa 43,0 GB Arbeitsspeicher, aber verfügbar sind nur etwa 16,0 GB."
        );
        let limited = Room {
            memory: 8 * GB,
            memory_limit: Some(8 * GB),
            ..room
        };
        let r = check(
            "x",
            Footprint {
                download: 0,
                memory: 9 * GB,
            },
            limited,
        )
        .unwrap_err();
        assert_eq!(r.code(), "insufficient_memory");
        assert!(
            r.message(Lang::En).contains("memory limit is 8.0 GB"),
            "{}",
            r.message(Lang::En)
        );
    }

    #[test]
    fn accept_language_picks_german_only_when_preferred() {
        assert_eq!(Lang::from_accept_language(None), Lang::En);
        assert_eq!(
            Lang::from_accept_language(Some("de-DE,de;q=0.9,en;q=0.8")),
            Lang::De
        );
        assert_eq!(
            Lang::from_accept_language(Some("en-US,en;q=0.9,de;q=0.8")),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language(Some("fr,de;q=0.5")), Lang::De);
        assert_eq!(Lang::from_accept_language(Some("fr")), Lang::En);
    }

    #[test]
    fn the_store_is_the_bind_mount_that_holds_the_models_directory() {
        let spec = |vols: &[&str], env: &[(&str, &str)]| -> ServiceSpec {
            let mut s: ServiceSpec = serde_yaml::from_str("name: llm\nimage: x").unwrap();
            s.volumes = vols.iter().map(|v| v.to_string()).collect();
            s.env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            s
        };
        assert_eq!(
            store_dir(&spec(&["/var/lib/arasul/ollama:/root/.ollama"], &[])),
            Some(PathBuf::from("/var/lib/arasul/ollama/models"))
        );
        assert_eq!(
            store_dir(&spec(
                &["/data/m:/models:rw"],
                &[("OLLAMA_MODELS", "/models")]
            )),
            Some(PathBuf::from("/data/m"))
        );
        assert_eq!(store_dir(&spec(&["ollama:/root/.ollama"], &[])), None);
        assert_eq!(store_dir(&spec(&["/x:/root/.oll"], &[])), None);
    }

    #[test]
    fn blobs_already_in_the_store_are_not_downloaded_again() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
        std::fs::write(dir.path().join("blobs/sha256-aa"), b"").unwrap();
        let m: Manifest = serde_json::from_str(
            r#"{"schemaVersion":2,"config":{"digest":"sha256:cc","size":10},
                "layers":[{"digest":"sha256:aa","size":1000},{"digest":"sha256:bb","size":100}]}"#,
        )
        .unwrap();
        assert_eq!(m.weights(), 1000);
        assert_eq!(m.missing_bytes(None), 1110);
        assert_eq!(m.missing_bytes(Some(dir.path())), 110);
        assert_eq!(
            manifest_url("http://r:1/", "llama3.2"),
            "http://r:1/v2/library/llama3.2/manifests/latest"
        );
        assert_eq!(
            manifest_url("https://registry.ollama.ai", "qwen2.5:7b"),
            "https://registry.ollama.ai/v2/library/qwen2.5/manifests/7b"
        );
    }

    #[test]
    fn bytes_read_as_people_write_them() {
        assert_eq!(human_bytes(999, Lang::En), "999 B");
        assert_eq!(human_bytes(1_321_098_329, Lang::En), "1.3 GB");
        assert_eq!(human_bytes(1_321_098_329, Lang::De), "1,3 GB");
        assert_eq!(memory_estimate(1_000_000_000), 1_150_000_000 + (512 << 20));
    }
}
