//! Installing a bundle's `arasuld` package. The daemon runs as `arasul` and
//! cannot install packages: it writes a request into
//! `state_dir/updates/package/`, which a root-owned systemd path unit
//! (`arasuld-package.path`) turns into one run of `arasuld install-package`
//! (`arasuld-package.service`: oneshot, root, nothing else).
//!
//! The helper takes the request as a pointer only, never as trusted: it
//! copies the staged manifest, signature and package into its own root-only
//! store, checks the signature against the root-owned keys, the package's
//! sha256 against the signed manifest, and its `Package`/`Version` fields;
//! it keeps the installed package (repacked from dpkg's database) for a
//! rollback, installs with apt (admin config edits kept), and writes the
//! outcome back. The package's postinst restarts the daemon, whose new
//! binary resumes the run (`verifying`); a rollback asks for `restore`,
//! which installs the kept package again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::bundle::{MANIFEST_NAME, SIGNATURE_NAME};
use crate::os::fs::write_atomic;

/// Under `state_dir`: where the daemon and the helper meet.
pub const DIR: &str = "updates/package";
pub const REQUEST: &str = "request.json";
pub const OUTCOME: &str = "outcome.json";
/// The helper's own store (root, 0700): verified copies and kept packages.
pub const STORE: &str = "/var/lib/arasuld-packages";
/// The package this helper installs, and nothing else.
const PACKAGE: &str = "arasuld";
/// In the store: the package the last install replaced (repacked).
const KEPT: &str = "previous.deb";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The package of the bundle staged in `staging_dir`.
    Install,
    /// The package kept when `version` was replaced.
    Restore,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub run: String,
    pub action: Action,
    /// The version to end up with.
    pub version: String,
    /// The staged bundle (install only).
    #[serde(default)]
    pub staging_dir: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub run: String,
    pub action: Action,
    pub ok: bool,
    pub message: String,
    pub at: DateTime<Utc>,
}

pub fn request_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR).join(REQUEST)
}

pub fn outcome_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR).join(OUTCOME)
}

/// The daemon's side: asks for `req` (an outcome of an earlier request is
/// removed first, so the next one read is this one's).
pub fn ask(state_dir: &Path, req: &Request) -> anyhow::Result<()> {
    let dir = state_dir.join(DIR);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match std::fs::remove_file(outcome_path(state_dir)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(anyhow!("cannot remove the last package outcome: {e}")),
    }
    write_atomic(
        &request_path(state_dir),
        &serde_json::to_vec_pretty(req)?,
        None,
    )
    .context("cannot write the package request")
}

/// The daemon's side: the helper's answer to the request of run `run`.
pub fn outcome_for(state_dir: &Path, run: &str, action: Action) -> Option<Outcome> {
    let bytes = std::fs::read(outcome_path(state_dir)).ok()?;
    let o: Outcome = serde_json::from_slice(&bytes).ok()?;
    (o.run == run && o.action == action).then_some(o)
}

/// The version of the installed arasuld package, as dpkg records it (None
/// where arasuld was not installed from a package).
pub fn installed_version() -> Option<String> {
    dpkg_query(&["-W", "-f", "${Status} ${Version}", PACKAGE])
        .ok()?
        .strip_prefix("install ok installed ")
        .map(str::to_string)
}

/// `arasuld install-package`: carries out the pending request, if any, and
/// writes its outcome. Errors are the outcome's message; `Err` only when
/// not even the outcome could be written.
pub fn run_helper(state_dir: &Path, keys_dir: &Path, store: &Path) -> anyhow::Result<bool> {
    let path = request_path(state_dir);
    let req: Request = match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(anyhow!("cannot read {}: {e}", path.display())),
    };
    // Taken: the path unit must not start the helper again for it.
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    let result = carry_out(&req, keys_dir, store);
    let outcome = Outcome {
        run: req.run.clone(),
        action: req.action,
        ok: result.is_ok(),
        message: match &result {
            Ok(m) => m.clone(),
            Err(e) => format!("{e:#}"),
        },
        at: Utc::now(),
    };
    eprintln!(
        "arasuld install-package: {} {} for run {}: {}",
        if outcome.ok { "done" } else { "failed" },
        match req.action {
            Action::Install => "install",
            Action::Restore => "restore",
        },
        req.run,
        outcome.message
    );
    let out = outcome_path(state_dir);
    write_atomic(&out, &serde_json::to_vec_pretty(&outcome)?, None)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(outcome.ok)
}

fn carry_out(req: &Request, keys_dir: &Path, store: &Path) -> anyhow::Result<String> {
    create_private_dir(store)?;
    let installed = || {
        dpkg_query(&["-W", "-f", "${Version}", PACKAGE])
            .context("arasuld is not installed as a package")
    };
    match req.action {
        Action::Install => {
            let staging = req
                .staging_dir
                .as_deref()
                .context("an install request names no staged bundle")?;
            let deb = verified_copy(staging, keys_dir, store, &req.version)?;
            let installed = installed()?;
            if !dpkg_newer(&req.version, &installed)? {
                bail!(
                    "the bundle's package {} is not newer than the installed {installed}",
                    req.version
                );
            }
            // The one package a rollback reinstalls: the one this install
            // replaces (an earlier update's is not needed any more).
            let kept = store.join(KEPT);
            repack_installed(store, &kept)
                .with_context(|| format!("keeping the installed {installed} for a rollback"))?;
            apt_install(&deb)?;
            Ok(format!(
                "installed {PACKAGE} {} (kept {installed} for a rollback)",
                req.version
            ))
        }
        Action::Restore => {
            let installed = installed()?;
            let kept = store.join(KEPT);
            if !kept.is_file() {
                bail!(
                    "no kept package to reinstall ({} is missing)",
                    kept.display()
                );
            }
            let (_, version) = deb_fields(&kept)?;
            if installed == version {
                return Ok(format!("{PACKAGE} {installed} is installed already"));
            }
            apt_install(&kept)?;
            Ok(format!("reinstalled {PACKAGE} {version}"))
        }
    }
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != rustix::process::geteuid().as_raw() {
        bail!("{} is not a directory of this user", dir.display());
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Copies the staged manifest, signature and package into the store (never
/// read twice from the daemon's dir), then checks them there. Returns the
/// package's path in the store.
fn verified_copy(
    staging: &Path,
    keys_dir: &Path,
    store: &Path,
    version: &str,
) -> anyhow::Result<PathBuf> {
    let read_small = |name: &str| -> anyhow::Result<Vec<u8>> {
        let f = open_no_follow(&staging.join(name))?;
        let mut buf = Vec::new();
        f.take(1 << 20)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading the staged {name}"))?;
        Ok(buf)
    };
    let manifest_bytes = read_small(MANIFEST_NAME)?;
    let sig = read_small(SIGNATURE_NAME)?;
    only_root_can_write(keys_dir)?;
    let keys = super::TrustedKeys::load(keys_dir)
        .map_err(|e| anyhow!("trusted keys: {}: {}", e.path.display(), e.reason))?;
    let signer = keys
        .verify(&manifest_bytes, &sig)
        .context("the staged manifest's signature does not verify with the trusted keys")?;
    let manifest = super::Manifest::parse(&manifest_bytes).map_err(|e| anyhow!(e))?;
    if manifest.version.to_string() != version {
        bail!(
            "the staged manifest is for {}, the request for {version}",
            manifest.version
        );
    }
    let pkg = manifest
        .components
        .package
        .context("the staged bundle carries no package")?;
    let deb = store.join("incoming.deb");
    let mut src = open_no_follow(&staging.join(&pkg.file))?;
    let mut dst = std::fs::File::create(&deb)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        dst.write_all(&buf[..n])?;
        size += n as u64;
    }
    dst.sync_all()?;
    let sum = hex::encode(ctx.finish().as_ref());
    if sum != pkg.sha256 || size != pkg.size {
        bail!("the staged package does not match the signed manifest (sha256 or size)");
    }
    let (_, deb_version) = deb_fields(&deb)?;
    if deb_version != version {
        bail!("the bundle's package is version {deb_version:?}, the bundle {version}");
    }
    eprintln!("arasuld install-package: signed by {}", signer.key);
    Ok(deb)
}

/// `Package` and `Version` of a .deb; refused unless it is arasuld.
fn deb_fields(deb: &Path) -> anyhow::Result<(String, String)> {
    let fields = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(deb)
        .args(["Package", "Version"])
        .output()
        .context("dpkg-deb")?;
    let text = String::from_utf8_lossy(&fields.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap_or_default()
            .to_string()
    };
    if !fields.status.success() || field("Package") != PACKAGE {
        bail!(
            "{} is not a package of {PACKAGE} (Package: {:?})",
            deb.display(),
            field("Package")
        );
    }
    Ok((field("Package"), field("Version")))
}

/// The keys that let a package be installed as root must be root's: the
/// dir and each key file owned by this user (root), written by no one else.
fn only_root_can_write(keys_dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let me = rustix::process::geteuid().as_raw();
    let check = |p: &Path| -> anyhow::Result<()> {
        let m = std::fs::symlink_metadata(p).with_context(|| format!("{}", p.display()))?;
        if m.uid() != me || m.mode() & 0o022 != 0 || m.file_type().is_symlink() {
            bail!(
                "{} may be changed by another user (owner {}, mode {:o}): its keys are not trusted for installing a package",
                p.display(),
                m.uid(),
                m.mode() & 0o7777
            );
        }
        Ok(())
    };
    check(keys_dir)?;
    for e in std::fs::read_dir(keys_dir)?.flatten() {
        if e.file_name().to_string_lossy().ends_with(".pem") {
            check(&e.path())?;
        }
    }
    Ok(())
}

fn open_no_follow(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))
}

fn dpkg_query(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("dpkg-query")
        .args(args)
        .output()
        .context("dpkg-query")?;
    if !out.status.success() {
        bail!(
            "dpkg-query {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn dpkg_newer(a: &str, b: &str) -> anyhow::Result<bool> {
    Ok(Command::new("dpkg")
        .args(["--compare-versions", a, "gt", b])
        .status()
        .context("dpkg --compare-versions")?
        .success())
}

fn apt_install(deb: &Path) -> anyhow::Result<()> {
    let out = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args([
            "install",
            "-y",
            "-q",
            "--allow-downgrades",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confold",
        ])
        .arg(deb)
        .output()
        .context("apt-get")?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = text.lines().rev().take(5).collect();
        bail!(
            "apt-get install {} failed: {}",
            deb.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// Rebuilds the installed package from dpkg's database (its control stanza,
/// maintainer scripts, conffiles list and files as installed), as
/// `dpkg-repack` does: the package a rollback reinstalls.
fn repack_installed(store: &Path, out: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let root = store.join("repack");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("DEBIAN"))?;
    let status = dpkg_query(&["-s", PACKAGE])?;
    std::fs::write(root.join("DEBIAN/control"), control_of_status(&status))?;
    let conffiles = conffiles_of_status(&status);
    if !conffiles.is_empty() {
        std::fs::write(root.join("DEBIAN/conffiles"), conffiles.join("\n") + "\n")?;
    }
    for script in ["preinst", "postinst", "prerm", "postrm"] {
        // dpkg-query names where dpkg keeps them (lintian: never read its
        // database directly).
        let Ok(path) = dpkg_query(&["--control-path", PACKAGE, script]) else {
            continue;
        };
        let src = PathBuf::from(path.trim());
        if !path.trim().is_empty() && src.is_file() {
            let dst = root.join("DEBIAN").join(script);
            std::fs::copy(&src, &dst)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    for line in dpkg_query(&["-L", PACKAGE])?.lines() {
        let path = Path::new(line.trim());
        let Ok(rel) = path.strip_prefix("/") else {
            continue;
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let dst = root.join(rel);
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            continue; // listed, but removed by hand: nothing to keep
        };
        // A listed directory may be a link on this system (merged /usr:
        // /lib -> usr/lib): in the package it is a directory.
        if path.is_dir() {
            std::fs::create_dir_all(&dst)?;
        } else if meta.file_type().is_symlink() {
            std::fs::create_dir_all(dst.parent().expect("under root"))?;
            let _ = std::fs::remove_file(&dst);
            std::os::unix::fs::symlink(std::fs::read_link(path)?, &dst)?;
        } else if meta.is_file() {
            std::fs::create_dir_all(dst.parent().expect("under root"))?;
            std::fs::copy(path, &dst)?;
            std::fs::set_permissions(&dst, meta.permissions())?;
        }
    }
    let tmp = out.with_extension("deb.tmp");
    let built = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&tmp)
        .output()
        .context("dpkg-deb --build")?;
    if !built.status.success() {
        bail!(
            "dpkg-deb --build: {}",
            String::from_utf8_lossy(&built.stderr).trim()
        );
    }
    std::fs::rename(&tmp, out)?;
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}

/// dpkg's status stanza as a control file: without what only the status
/// database has (`Status`, `Conffiles` and its continuation lines).
fn control_of_status(status: &str) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in status.lines() {
        if line.starts_with(' ') || line.starts_with('\t') {
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let key = line.split(':').next().unwrap_or_default();
        skipping = matches!(key, "Status" | "Conffiles" | "Config-Version");
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The paths of the status stanza's `Conffiles` (dpkg keeps them there, not
/// as a control file): without those marked obsolete.
fn conffiles_of_status(status: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in status.lines() {
        if !line.starts_with(' ') {
            inside = line.starts_with("Conffiles:");
            continue;
        }
        if inside {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(path) = words.first()
                && !words[1..].contains(&"obsolete")
            {
                out.push(path.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conffiles_come_from_the_status_stanza() {
        let status = "Package: arasuld\nConffiles:\n /etc/arasul/arasuld.yaml 0123\n /etc/old.conf 4567 obsolete\n /etc/logrotate.d/arasuld 89ab\nDescription: x\n more\n";
        assert_eq!(
            conffiles_of_status(status),
            ["/etc/arasul/arasuld.yaml", "/etc/logrotate.d/arasuld"]
        );
    }

    #[test]
    fn the_status_stanza_becomes_a_control_file() {
        let status = "Package: arasuld\nStatus: install ok installed\nPriority: optional\nVersion: 0.1.0\nConffiles:\n /etc/arasul/arasuld.yaml 0123\n /etc/arasul/services.yaml 4567\nDescription: Control plane\n of the appliance\n";
        assert_eq!(
            control_of_status(status),
            "Package: arasuld\nPriority: optional\nVersion: 0.1.0\nDescription: Control plane\n of the appliance\n"
        );
    }

    #[test]
    fn a_request_and_its_outcome_meet_in_the_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let req = Request {
            run: "r1".into(),
            action: Action::Install,
            version: "0.2.0".into(),
            staging_dir: Some("/x".into()),
        };
        ask(d.path(), &req).unwrap();
        let back: Request =
            serde_json::from_slice(&std::fs::read(request_path(d.path())).unwrap()).unwrap();
        assert_eq!(back, req);
        assert_eq!(outcome_for(d.path(), "r1", Action::Install), None);
        let o = Outcome {
            run: "r1".into(),
            action: Action::Install,
            ok: false,
            message: "no".into(),
            at: Utc::now(),
        };
        write_atomic(
            &outcome_path(d.path()),
            &serde_json::to_vec(&o).unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            outcome_for(d.path(), "r1", Action::Install),
            Some(o.clone())
        );
        assert_eq!(outcome_for(d.path(), "r2", Action::Install), None);
        assert_eq!(outcome_for(d.path(), "r1", Action::Restore), None);
        // A new request clears the old outcome.
        ask(d.path(), &req).unwrap();
        assert_eq!(outcome_for(d.path(), "r1", Action::Install), None);
    }

    #[test]
    fn a_missing_request_is_nothing_to_do() {
        let d = tempfile::tempdir().unwrap();
        assert!(run_helper(d.path(), d.path(), &d.path().join("store")).unwrap());
    }
}
