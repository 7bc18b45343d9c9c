//! Runs the configured commands of self-healing (throttle, GPU reset): an
//! argv (no shell), a timeout after which the process is killed, and the
//! result in words for the audit trail.

use std::process::Stdio;
use std::time::Duration;

/// How much of the command's output is kept in an error message.
const OUTPUT_TAIL: usize = 300;

/// Runs `argv` and waits at most `timeout`. Ok when it exits 0; otherwise
/// an error saying how it ended (exit code or signal, the tail of stderr,
/// or the timeout).
pub async fn run_command(argv: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command configured".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program:?}: {e}"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        // Dropping the future drops the child, which kills it.
        Err(_) => return Err(format!("{program:?} killed after the {timeout:?} timeout")),
        Ok(Err(e)) => return Err(format!("{program:?}: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stderr = stderr.trim();
    let tail: String = {
        let start = stderr.len().saturating_sub(OUTPUT_TAIL);
        let start = (start..=stderr.len())
            .find(|&i| stderr.is_char_boundary(i))
            .unwrap_or(stderr.len());
        stderr[start..].to_string()
    };
    let how = match out.status.code() {
        Some(c) => format!("exited with code {c}"),
        None => "was killed by a signal".to_string(),
    };
    if tail.is_empty() {
        Err(format!("{program:?} {how}"))
    } else {
        Err(format!("{program:?} {how}: {tail}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn success_failure_and_timeout_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let script = format!("echo x > {}", marker.display());
        run_command(&argv(&["sh", "-c", &script]), Duration::from_secs(10))
            .await
            .unwrap();
        assert!(marker.exists());

        let e = run_command(
            &argv(&["sh", "-c", "echo boom >&2; exit 7"]),
            Duration::from_secs(10),
        )
        .await
        .unwrap_err();
        assert!(
            e.contains("exited with code 7") && e.contains("boom"),
            "{e}"
        );

        let late = dir.path().join("late");
        let script = format!("sleep 2; echo x > {}", late.display());
        let e = run_command(&argv(&["sh", "-c", &script]), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("timeout"), "{e}");
        std::thread::sleep(Duration::from_secs(3));
        assert!(!late.exists(), "the timed-out command was not killed");

        let e = run_command(&argv(&["/nonexistent/cmd"]), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(e.contains("cannot run"), "{e}");
        assert!(run_command(&[], Duration::from_secs(1)).await.is_err());
    }
}
