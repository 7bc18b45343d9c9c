//! The dependency policy (deny.toml) that scripts/test checks with
//! `cargo deny check licenses bans`: the committed file passes, and taking
//! out one of its allowances makes the real cargo-deny fail, so the step
//! would catch a crate under a licence not on the list, or a new duplicate.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `cargo deny check CHECKS` with `config`: (success, stderr). None when
/// cargo-deny is not installed (a failure with `CI=true`).
fn cargo_deny(config: &Path, checks: &[&str]) -> Option<(bool, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let installed = Command::new(&cargo)
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        let msg = "cargo-deny is not installed (scripts/test installs it: cargo install --locked cargo-deny)";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return None;
    }
    let out = Command::new(&cargo)
        .args(["deny", "--log-level", "error", "--manifest-path"])
        .arg(Path::new(ROOT).join("Cargo.toml"))
        .arg("--config")
        .arg(config)
        .arg("check")
        .args(checks)
        .output()
        .unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn the_committed_policy_passes_and_a_violation_fails() {
    let committed = Path::new(ROOT).join("deny.toml");
    let Some((ok, stderr)) = cargo_deny(&committed, &["licenses", "bans"]) else {
        return;
    };
    assert!(ok, "the committed deny.toml fails:\n{stderr}");

    let text = std::fs::read_to_string(&committed).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // MIT no longer allowed: the many MIT-only crates (axum, bytes, ...) fail.
    let no_mit = dir.path().join("no-mit.toml");
    let without: String = text
        .lines()
        .filter(|l| l.trim() != "\"MIT\",")
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(without, text, "deny.toml allows MIT on a line of its own");
    std::fs::write(&no_mit, without).unwrap();
    let (ok, stderr) = cargo_deny(&no_mit, &["licenses"]).unwrap();
    assert!(!ok, "a policy without MIT passed");
    assert!(stderr.contains("rejected"), "{stderr}");
    assert!(stderr.contains("license = \"MIT\""), "{stderr}");

    // Without today's skip list every existing duplicate is a new one.
    let no_skip = dir.path().join("no-skip.toml");
    let start = text.find("skip = [").expect("deny.toml has a skip list");
    let end = start + text[start..].find("\n]\n").unwrap() + 3;
    std::fs::write(&no_skip, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let (ok, stderr) = cargo_deny(&no_skip, &["bans"]).unwrap();
    assert!(!ok, "duplicates passed without the skip list");
    assert!(
        stderr.contains("found 2 duplicate entries for crate 'base64'"),
        "{stderr}"
    );
}
