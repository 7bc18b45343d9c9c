//! Stamps the binary with the git commit it was built from, or `unknown` when
//! there is no `.git` (a source tarball, a .deb build from an export).

use std::process::Command;

fn main() {
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string());
    let hash = std::env::var("ARASUL_BUILD_HASH").unwrap_or(hash);
    println!("cargo:rustc-env=ARASUL_BUILD_HASH={hash}");
    println!("cargo:rerun-if-env-changed=ARASUL_BUILD_HASH");
    for p in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    // The version the binary reports; CARGO_PKG_VERSION unless a test
    // package of another version is built (tests/deb.sh).
    let version = std::env::var("ARASUL_VERSION")
        .unwrap_or_else(|_| std::env::var("CARGO_PKG_VERSION").expect("set by cargo"));
    println!("cargo:rustc-env=ARASUL_VERSION={version}");
    println!("cargo:rerun-if-env-changed=ARASUL_VERSION");
    println!("cargo:rerun-if-changed=migrations");
}
