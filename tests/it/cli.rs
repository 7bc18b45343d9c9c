//! The command line as an admin and systemd meet it: exit statuses, where
//! errors and log lines go, and the documentation that describes it (the
//! generated man page, the README's command list) held to the real binary.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";

fn run(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("ARASUL_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_invalid_config_exits_78_and_a_usage_error_still_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("arasuld.yaml");
    std::fs::write(&path, "http:\n  listen: [\n").unwrap();
    let path = path.to_str().unwrap();

    // The daemon itself: EX_CONFIG, the error once on stderr, nothing started.
    let (code, stdout, stderr) = run(&["--config", path, "serve"], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert_eq!(code, Some(arasuld::cli::EX_CONFIG.into()));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.matches("nothing was started").count(), 1, "{stderr}");

    // An ARASUL_* variable that names no key is a config error too.
    let good = TestConfig::new(CLOSED_DB, "");
    let (code, _, stderr) = run(
        &["--config", good.path().to_str().unwrap(), "serve"],
        &[("ARASUL_HTTP__LISTN", "127.0.0.1:1")],
    );
    assert_eq!(code, Some(78), "{stderr}");

    // A file named with --config that is not there.
    let missing = dir.path().join("nope.yaml");
    let (code, _, stderr) = run(&["--config", missing.to_str().unwrap()], &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");

    // clap's usage errors keep their own status.
    for args in [&["frobnicate"][..], &["--no-such-flag"], &["admin"]] {
        let (code, _, stderr) = run(args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
    }
}

#[test]
fn a_fatal_daemon_error_is_logged_once_and_exits_1() {
    // The port is taken: serve fails after logging is set up.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cfg = TestConfig::new(CLOSED_DB, "");
    let (code, stdout, stderr) = run(
        &["--config", cfg.path().to_str().unwrap(), "serve"],
        &[("ARASUL_HTTP__LISTEN", &format!("127.0.0.1:{port}"))],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let both = format!("{stdout}{stderr}");
    assert_eq!(
        both.matches("cannot listen on").count(),
        1,
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("cannot listen on"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
}

#[test]
fn a_failing_command_reports_on_stderr_once() {
    // `admin init-secrets` as the postinst runs it (stdout to /dev/null):
    // the reason must be on stderr.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let cfg = TestConfig::new(CLOSED_DB, "");
    let (code, stdout, stderr) = run(
        &[
            "--config",
            cfg.path().to_str().unwrap(),
            "admin",
            "init-secrets",
        ],
        &[(
            "ARASUL_PATHS__SECRETS_DIR",
            file.join("secrets").to_str().unwrap(),
        )],
    );
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let reason = stderr
        .lines()
        .find(|l| l.starts_with("arasuld: "))
        .unwrap_or_else(|| panic!("no error on stderr: {stderr}"));
    assert!(!stdout.contains(&reason["arasuld: ".len()..]), "{stdout}");
    assert_eq!(stderr.matches(reason).count(), 1, "{stderr}");
}

/// Starts the daemon with stdout and stderr apart, waits for a stdout line
/// containing `needle`, stops it; returns that line and all of stderr.
fn first_stdout_line(cfg: &TestConfig, envs: &[(&str, &str)], needle: &str) -> (String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(["--config", cfg.path().to_str().unwrap(), "serve"])
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(&needle) {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(Duration::from_secs(30));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let line = line.expect("the line on stdout within 30 s");
    assert_eq!(status.code(), Some(0));
    (line, errs.join().unwrap())
}

#[test]
fn without_the_journal_log_lines_go_to_stdout_with_time_level_and_fields() {
    let cfg = TestConfig::new(CLOSED_DB, "");
    let (line, stderr) = first_stdout_line(&cfg, &[], "database unreachable");
    // `2026-01-01T00:00:00.000000Z  WARN database unreachable error=… retry_in=…`
    let (time, rest) = line.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(time).is_ok(),
        "no time stamp: {line}"
    );
    assert!(
        rest.trim_start()
            .starts_with("WARN database unreachable error="),
        "{line}"
    );
    assert!(rest.contains(" retry_in="), "{line}");
    assert!(!stderr.contains("database unreachable"), "{stderr}");

    // A JOURNAL_STREAM inherited with other stdio (here: a file's device
    // and inode, not our stdout's) changes nothing.
    let other = std::fs::metadata(cfg.path()).unwrap();
    let stream = {
        use std::os::unix::fs::MetadataExt;
        format!("{}:{}", other.dev(), other.ino())
    };
    let (line, _) = first_stdout_line(&cfg, &[("JOURNAL_STREAM", &stream)], "database unreachable");
    let (time, _) = line.split_once(' ').unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(time).is_ok(), "{line}");
}

/// Every command path the binary offers, from its own `--help` pages:
/// `["serve"]`, `["admin", "key", "create"]`, … (leaves only; `help` and
/// hidden commands are not offered).
fn commands_from_help(prefix: &[String]) -> Vec<Vec<String>> {
    let mut args: Vec<&str> = prefix.iter().map(String::as_str).collect();
    args.push("--help");
    let (code, help, stderr) = run(&args, &[]);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    let subs: Vec<String> = help
        .lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect();
    if subs.is_empty() {
        return vec![prefix.to_vec()];
    }
    subs.into_iter()
        .flat_map(|s| {
            let mut p = prefix.to_vec();
            p.push(s);
            commands_from_help(&p)
        })
        .collect()
}

#[test]
fn the_readme_lists_every_command_and_only_real_ones() {
    let offered: BTreeSet<Vec<String>> = commands_from_help(&[]).into_iter().collect();
    assert!(offered.contains(&vec!["admin".to_string(), "init-secrets".to_string()]));
    assert!(offered.iter().any(|c| c[0] == "bundle"));

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("## Command line")
        .nth(1)
        .and_then(|s| s.split("```\n").nth(1))
        .expect("README has a ``` block under ## Command line");
    let mut listed = BTreeSet::new();
    for line in block.lines() {
        let usage = line.split(" #").next().unwrap();
        let mut words = usage.split_whitespace();
        assert_eq!(words.next(), Some("arasuld"), "{line}");
        // The command is the bare words after `arasuld` and any leading
        // optional flags ([--config PATH]); arguments follow.
        let mut path = Vec::new();
        let mut in_group = false;
        for w in words {
            if path.is_empty() && (in_group || w.starts_with("[-")) {
                in_group = !w.ends_with(']');
                continue;
            }
            if w.chars().all(|c| c.is_ascii_lowercase() || c == '-') && !w.starts_with('-') {
                path.push(w.to_string());
            } else {
                break;
            }
        }
        if !path.is_empty() {
            listed.insert(path);
        }
    }
    let missing: Vec<_> = offered.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&offered).collect();
    assert!(
        missing.is_empty(),
        "commands missing from README's list: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "README lists commands the binary lacks: {unknown:?}"
    );
}

#[test]
fn the_man_page_is_generated_with_every_command_and_exit_status() {
    let mut page = Vec::new();
    let mut child = Command::new(bin())
        .arg("print-man-page")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdout.take().unwrap().read_to_end(&mut page).unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(&page[..2], &[0x1f, 0x8b], "gzip");
    let out = crate::common::with_stdin(Command::new("gzip").arg("-dc"), &page);
    assert!(out.status.success());
    let roff = String::from_utf8(out.stdout).unwrap().replace("\\-", "-");
    assert!(roff.contains(".TH ARASULD 1 "), "{roff}");
    for path in commands_from_help(&[]) {
        let heading = format!(".SS \"arasuld {}\"", path.join(" "));
        assert!(roff.contains(&heading), "no {heading} in the man page");
    }
    assert!(
        !roff.contains("print-man-page"),
        "the hidden command is not documented"
    );
    for code in ["0", "1", "2", "78"] {
        assert!(
            roff.contains(&format!(".TP\n\\fB{code}\\fR\n")),
            "exit status {code}"
        );
    }
}
