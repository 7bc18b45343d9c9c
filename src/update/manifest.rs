//! The bundle manifest (`manifest.json`, format 1): its fields, strict
//! parsing (unknown fields refused) and the checks that do not need the
//! payload. Parsed only after the signature over its bytes has been checked.

use std::cmp::Ordering;
use std::collections::HashSet;

use chrono::{DateTime, Utc};
use semver::Version;
use serde::{Deserialize, Serialize};

/// The only bundle format this build reads and writes.
pub const FORMAT: u32 = 1;
/// Longest member name (ustar `name` field; the `prefix` field is not used).
pub const MAX_NAME_LEN: usize = 100;
/// Directory of the payload members inside the tar.
pub const PAYLOAD_DIR: &str = "payload/";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always 1 for this format.
    pub format: u32,
    pub version: Version,
    /// The oldest installed version this bundle may be applied on.
    pub min_version: Version,
    pub build_hash: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub release_notes: String,
    #[serde(default)]
    pub requires_reboot: bool,
    pub components: Components,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Components {
    #[serde(default)]
    pub images: Vec<ImageComponent>,
    /// LLM/embedding models for a runtime's store (an offline box gets its
    /// models from a stick).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelComponent>,
    #[serde(default)]
    pub migrations: Vec<MigrationComponent>,
    #[serde(default)]
    pub configs: Vec<ConfigComponent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<PackageComponent>,
}

/// A container image saved with `docker save` (a tar, loaded with `docker load`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageComponent {
    /// Service name in services.yaml whose container runs this image.
    pub service: String,
    /// Image reference the tarball carries (`repo:tag`).
    pub image: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// A model as its runtime stores it: a tar of its manifest and blobs
/// (`update::model_tar`), installed into the store of the catalog's
/// service with the role `service`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelComponent {
    /// `llm` or `embeddings`.
    pub service: String,
    /// The model's name (`llama3.2:1b`).
    pub name: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// An SQL migration, run in manifest order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationComponent {
    pub name: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// false for statements that cannot run in a transaction
    /// (e.g. `CREATE INDEX CONCURRENTLY`).
    #[serde(default = "yes")]
    pub transactional: bool,
}

/// A config file installed as `/etc/arasul/<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigComponent {
    pub name: String,
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

/// A new `arasuld` package (.deb).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageComponent {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

fn yes() -> bool {
    true
}

/// One payload member as the manifest declares it, in bundle order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadEntry {
    /// Member name in the tar (`payload/…`).
    pub file: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Parses and checks the manifest bytes (already signature-checked).
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let m: Manifest = serde_path_to_error::deserialize(&mut de)
            .map_err(|e| format!("manifest.json: {} (at {})", e.inner(), e.path()))?;
        de.end()
            .map_err(|e| format!("manifest.json: trailing data: {e}"))?;
        m.check()?;
        Ok(m)
    }

    /// Serialises the manifest as the bytes that get signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Only images and models: such a bundle may also be applied at the version it
    /// was made for, to provision a box (an offline first start from a USB
    /// stick) without changing its version.
    pub fn is_provisioning(&self) -> bool {
        let c = &self.components;
        !(c.images.is_empty() && c.models.is_empty())
            && c.migrations.is_empty()
            && c.configs.is_empty()
            && c.package.is_none()
    }

    /// The payload members in the order they must appear in the bundle:
    /// images, models, migrations, configs, package, each in manifest order.
    pub fn payload(&self) -> Vec<PayloadEntry> {
        let c = &self.components;
        let e = |file: &str, size: u64, sha256: &str| PayloadEntry {
            file: file.to_owned(),
            size,
            sha256: sha256.to_owned(),
        };
        let mut out = Vec::new();
        out.extend(c.images.iter().map(|i| e(&i.file, i.size, &i.sha256)));
        out.extend(c.models.iter().map(|m| e(&m.file, m.size, &m.sha256)));
        out.extend(c.migrations.iter().map(|i| e(&i.file, i.size, &i.sha256)));
        out.extend(c.configs.iter().map(|i| e(&i.file, i.size, &i.sha256)));
        out.extend(c.package.iter().map(|i| e(&i.file, i.size, &i.sha256)));
        out
    }

    /// Sum of the declared payload sizes.
    pub fn payload_bytes(&self) -> u64 {
        self.payload().iter().map(|p| p.size).sum()
    }

    fn check(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "manifest.json: format {} is not supported (this build reads format {FORMAT})",
                self.format
            ));
        }
        if cmp_version(&self.min_version, &self.version) == Ordering::Greater {
            return Err(format!(
                "manifest.json: min_version {} is above version {}",
                self.min_version, self.version
            ));
        }
        if self.build_hash.is_empty() || self.build_hash.len() > 128 {
            return Err("manifest.json: build_hash must be 1..128 characters".into());
        }
        let c = &self.components;
        let mut services = HashSet::new();
        for i in &c.images {
            if !is_ident(&i.service) {
                return Err(format!("manifest.json: bad service name {:?}", i.service));
            }
            if !services.insert(&i.service) {
                return Err(format!(
                    "manifest.json: service {:?} has two images",
                    i.service
                ));
            }
            if i.image.is_empty()
                || i.image.len() > 255
                || i.image.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(format!("manifest.json: bad image reference {:?}", i.image));
            }
        }
        let mut models = HashSet::new();
        for m in &c.models {
            if m.service != "llm" && m.service != "embeddings" {
                return Err(format!(
                    "manifest.json: model {:?}: service must be \"llm\" or \"embeddings\", not {:?}",
                    m.name, m.service
                ));
            }
            crate::ai::check_model_name(&m.name).map_err(|e| format!("manifest.json: {e}"))?;
            if !models.insert((&m.service, crate::ai::admission::full_name(&m.name))) {
                return Err(format!("manifest.json: model {:?} is listed twice", m.name));
            }
        }
        let mut names = HashSet::new();
        for m in &c.migrations {
            if !is_file_name(&m.name) || !names.insert(&m.name) {
                return Err(format!(
                    "manifest.json: bad or duplicate migration name {:?}",
                    m.name
                ));
            }
        }
        let mut names = HashSet::new();
        for m in &c.configs {
            if !is_file_name(&m.name) || !names.insert(&m.name) {
                return Err(format!(
                    "manifest.json: bad or duplicate config name {:?}",
                    m.name
                ));
            }
        }
        let mut files = HashSet::new();
        for p in self.payload() {
            check_payload_name(&p.file)?;
            if !files.insert(p.file.clone()) {
                return Err(format!("manifest.json: {} is listed twice", p.file));
            }
            if p.sha256.len() != 64
                || !p
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(format!(
                    "manifest.json: {}: sha256 must be 64 lowercase hex digits",
                    p.file
                ));
            }
        }
        Ok(())
    }
}

/// `payload/<name>`: name of letters, digits, `.`, `_`, `-`, not starting
/// with `.`, whole member name ≤ 100 bytes.
pub fn check_payload_name(file: &str) -> Result<(), String> {
    let ok = file.len() <= MAX_NAME_LEN && file.strip_prefix(PAYLOAD_DIR).is_some_and(is_file_name);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "manifest.json: payload file {file:?} must be \"payload/<name>\" (letters, digits, . _ -; at most {MAX_NAME_LEN} bytes)"
        ))
    }
}

fn is_file_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64 + 32
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Semver precedence (build metadata ignored: `1.2.0+a` is not newer than `1.2.0`).
pub fn cmp_version(a: &Version, b: &Version) -> Ordering {
    a.cmp_precedence(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            format: 1,
            version: Version::new(1, 2, 0),
            min_version: Version::new(1, 0, 0),
            build_hash: "abc".into(),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            release_notes: String::new(),
            requires_reboot: false,
            components: Components {
                images: vec![ImageComponent {
                    service: "llm".into(),
                    image: "arasul/llm:1.2".into(),
                    file: "payload/llm.tar".into(),
                    size: 3,
                    sha256: "0".repeat(64),
                }],
                ..Components::default()
            },
        }
    }

    #[test]
    fn manifest_round_trips_through_its_bytes() {
        let m = sample();
        assert_eq!(Manifest::parse(&m.to_bytes()).unwrap(), m);
    }

    #[test]
    fn unknown_field_and_unsafe_names_are_refused() {
        let mut v: serde_json::Value = serde_json::from_slice(&sample().to_bytes()).unwrap();
        v["extra"] = 1.into();
        let e = Manifest::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(e.contains("extra"), "{e}");
        for bad in [
            "../x",
            "/etc/x",
            "payload/../x",
            "payload/.x",
            "payload/a/b",
            "payload/",
        ] {
            let mut m = sample();
            m.components.images[0].file = bad.into();
            assert!(Manifest::parse(&m.to_bytes()).is_err(), "{bad}");
        }
        let mut m = sample();
        m.min_version = Version::new(2, 0, 0);
        assert!(
            Manifest::parse(&m.to_bytes())
                .unwrap_err()
                .contains("min_version")
        );
    }

    #[test]
    fn build_metadata_does_not_make_a_version_newer() {
        let a: Version = "1.2.0+b7".parse().unwrap();
        assert_eq!(cmp_version(&a, &Version::new(1, 2, 0)), Ordering::Equal);
        let rc: Version = "1.2.0-rc.1".parse().unwrap();
        assert_eq!(cmp_version(&rc, &Version::new(1, 2, 0)), Ordering::Less);
    }
}
