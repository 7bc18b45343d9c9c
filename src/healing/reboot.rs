//! Category D: the reboot itself, for the healing loop and for `POST
//! /api/system/reboot` (which asks the worker through its handle). Nothing reboots without the five safety checks of
//! SPEC §7: at most `max_per_hour` reboots in the last hour (counted in
//! Postgres, so the count survives the reboots and daemon restarts); the
//! database reachable and telemetry flushed; no update in progress; the disk
//! state recorded (with the rest of the state, in `reboot_state.json`); active
//! workflows given up to `drain_timeout`. Then logind is asked over D-Bus.
//! After the next start [`validate_after_start`] checks the saved state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::config::RebootRules;
use crate::db::Db;
use crate::docker::SupervisorHandle;
use crate::metrics::MetricsHub;

/// The state saved before a reboot, inside `paths.state_dir`.
pub const STATE_FILE: &str = "reboot_state.json";
/// Where it goes once validated after the next start.
pub const VALIDATED_FILE: &str = "reboot_state.validated.json";

/// What a reboot needs to reach.
#[derive(Clone)]
pub struct RebootCtx {
    pub rules: RebootRules,
    pub db: Db,
    pub metrics: Option<MetricsHub>,
    pub services: SupervisorHandle,
    /// No reboot while the updater is busy.
    pub update: crate::update::UpdateActivity,
    pub state_dir: PathBuf,
    pub proc_root: PathBuf,
}

/// A safety check that did not pass: `check` is stable snake_case.
#[derive(Clone, Debug, PartialEq)]
pub struct Refused {
    pub check: &'static str,
    pub message: String,
}

fn refuse(check: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        check,
        message: message.into(),
    }
}

/// Saved before the reboot, checked after the next start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SavedState {
    /// The `reboot_events` row.
    pub id: Option<i64>,
    pub reason: String,
    pub requested_at: DateTime<Utc>,
    /// The kernel's boot id before the reboot: a new one proves the reboot.
    pub boot_id: Option<String>,
    pub disk_percent: Option<f64>,
    pub disk_free_bytes: Option<u64>,
    /// Services that were running, each with its state.
    pub services: Vec<(String, String)>,
}

/// Reboots asked for within the last hour, from Postgres.
pub async fn reboots_last_hour(db: &Db) -> Result<u32, Refused> {
    let since = Utc::now() - chrono::Duration::hours(1);
    crate::db::healing::reboots_since(db.pool(), since)
        .await
        .map(|n| n.max(0) as u32)
        .map_err(|e| refuse("database_unavailable", format!("cannot count reboots: {e}")))
}

/// The checks that need no waiting: enabled, the hourly limit, no update,
/// the database up and telemetry flushed.
pub async fn quick_checks(ctx: &RebootCtx) -> Result<(), Refused> {
    if !ctx.rules.enabled {
        return Err(refuse(
            "reboot_disabled",
            "reboots are disabled (healing.reboot.enabled)",
        ));
    }
    if !ctx.db.status().up {
        return Err(refuse(
            "database_unavailable",
            "the database is not reachable",
        ));
    }
    let n = reboots_last_hour(&ctx.db).await?;
    if n >= ctx.rules.max_per_hour {
        return Err(refuse(
            "too_many_reboots",
            format!(
                "{n} reboots in the last hour (at most {})",
                ctx.rules.max_per_hour
            ),
        ));
    }
    if let Some(state) = ctx.update.in_progress() {
        return Err(refuse(
            "update_in_progress",
            format!("an update is in progress ({state})"),
        ));
    }
    if let Some(m) = &ctx.metrics
        && let Err(e) = m.flush(&ctx.db).await
    {
        return Err(refuse(
            "telemetry_not_flushed",
            format!("telemetry could not be written: {e}"),
        ));
    }
    Ok(())
}

/// Writes the state (with the disk figures) to `reboot_state.json`, durably.
pub async fn record_state(ctx: &RebootCtx, reason: &str) -> Result<SavedState, Refused> {
    let latest = ctx.metrics.as_ref().and_then(|m| m.latest());
    let state = SavedState {
        id: None,
        reason: reason.to_string(),
        requested_at: Utc::now(),
        boot_id: boot_id(&ctx.proc_root),
        disk_percent: latest.as_ref().and_then(|s| s.disk_percent),
        disk_free_bytes: latest.as_ref().and_then(|s| s.disk_free_bytes),
        services: ctx
            .services
            .services()
            .iter()
            .map(|s| {
                let st = serde_json::to_value(s.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (s.name.clone(), st)
            })
            .collect(),
    };
    save(&ctx.state_dir, &state)
        .map_err(|e| refuse("disk_state_not_recorded", format!("{STATE_FILE}: {e}")))?;
    Ok(state)
}

/// Waits until no workflow runs, at most `drain_timeout`; true when drained
/// (false: the time ran out, which lets the reboot go ahead).
pub async fn drain_workflows(ctx: &RebootCtx, beat: &(dyn Fn() + Sync)) -> bool {
    let deadline = tokio::time::Instant::now() + ctx.rules.drain_timeout;
    loop {
        beat();
        // An unreadable count cannot prove the workflows are done: wait.
        let running = crate::db::healing::running_workflows(ctx.db.pool())
            .await
            .unwrap_or(1);
        if running == 0 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Every check, the state saved and counted, then logind. `Ok`: logind
/// accepted the reboot, with the saved state. `drain`: wait for workflows
/// here (the healing loop has already waited).
pub async fn request(
    ctx: &RebootCtx,
    reason: &str,
    drain: bool,
    beat: &(dyn Fn() + Sync),
) -> Result<SavedState, Refused> {
    quick_checks(ctx).await?;
    let mut state = record_state(ctx, reason).await?;
    if drain && !drain_workflows(ctx, beat).await {
        tracing::warn!(
            "workflows still running after {:?}; rebooting anyway",
            ctx.rules.drain_timeout
        );
    }
    // Counted before the request, so a reboot that happens is always counted.
    let json = serde_json::to_value(&state).unwrap_or_default();
    let id = crate::db::healing::insert_reboot(ctx.db.pool(), state.requested_at, reason, &json)
        .await
        .map_err(|e| {
            refuse(
                "database_unavailable",
                format!("cannot count the reboot: {e}"),
            )
        })?;
    state.id = Some(id);
    save(&ctx.state_dir, &state)
        .map_err(|e| refuse("disk_state_not_recorded", format!("{STATE_FILE}: {e}")))?;
    tracing::warn!(reason, "asking logind to reboot");
    if let Err(e) = crate::os::logind::reboot(ctx.rules.bus_address.as_deref()).await {
        let _ =
            crate::db::healing::validate_reboot(ctx.db.pool(), id, &format!("not rebooted: {e}"))
                .await;
        let _ = std::fs::remove_file(ctx.state_dir.join(STATE_FILE));
        return Err(refuse("logind_failed", e));
    }
    Ok(state)
}

/// After a start: if a reboot state was saved, compare it with now and move
/// it aside. Returns (saved state, validation in words, whether it passed).
pub fn validate_after_start(
    state_dir: &Path,
    proc_root: &Path,
) -> Option<(SavedState, String, bool)> {
    let path = state_dir.join(STATE_FILE);
    let bytes = std::fs::read(&path).ok()?;
    let saved: SavedState = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::rename(&path, state_dir.join(VALIDATED_FILE));
            let note = SavedState {
                id: None,
                reason: "unknown".into(),
                requested_at: Utc::now(),
                boot_id: None,
                disk_percent: None,
                disk_free_bytes: None,
                services: Vec::new(),
            };
            return Some((note, format!("{STATE_FILE} unreadable: {e}"), false));
        }
    };
    let now = boot_id(proc_root);
    let (text, ok) = match (&saved.boot_id, &now) {
        (Some(before), Some(after)) if before != after => (
            format!(
                "rebooted for {}: new boot id; {} services were recorded before it",
                saved.reason,
                saved.services.len()
            ),
            true,
        ),
        (Some(_), Some(_)) => (
            format!(
                "reboot for {} requested at {} but the boot id is unchanged: the box did not reboot",
                saved.reason,
                saved.requested_at.to_rfc3339()
            ),
            false,
        ),
        _ => (
            format!(
                "reboot for {}: the boot id cannot be read, so the reboot is unconfirmed",
                saved.reason
            ),
            false,
        ),
    };
    let _ = std::fs::rename(&path, state_dir.join(VALIDATED_FILE));
    Some((saved, text, ok))
}

fn boot_id(proc_root: &Path) -> Option<String> {
    std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Atomic and durable: temp file, fsync, rename, fsync the directory.
fn save(dir: &Path, state: &SavedState) -> std::io::Result<()> {
    crate::os::fs::write_atomic(
        &dir.join(STATE_FILE),
        &serde_json::to_vec_pretty(state)?,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_tells_a_real_reboot_from_none() {
        let dir = tempfile::tempdir().unwrap();
        let proc = dir.path().join("proc");
        std::fs::create_dir_all(proc.join("sys/kernel/random")).unwrap();
        let set_boot = |id: &str| {
            std::fs::write(proc.join("sys/kernel/random/boot_id"), format!("{id}\n")).unwrap()
        };
        assert!(validate_after_start(dir.path(), &proc).is_none());
        set_boot("aaa");
        let state = SavedState {
            id: Some(1),
            reason: "test".into(),
            requested_at: Utc::now(),
            boot_id: boot_id(&proc),
            disk_percent: Some(50.0),
            disk_free_bytes: None,
            services: vec![("llm".into(), "healthy".into())],
        };
        save(dir.path(), &state).unwrap();
        let (_, text, ok) = validate_after_start(dir.path(), &proc).unwrap();
        assert!(!ok && text.contains("unchanged"), "{text}");
        // Moved aside: validated once.
        assert!(validate_after_start(dir.path(), &proc).is_none());
        save(dir.path(), &state).unwrap();
        set_boot("bbb");
        let (saved, text, ok) = validate_after_start(dir.path(), &proc).unwrap();
        assert!(ok, "{text}");
        assert_eq!(saved, state);
    }
}
