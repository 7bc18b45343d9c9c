//! Notifications: alerts about the box (a failed service, an update's
//! outcome, a full disk, a locked-out admin) reach the owner by webhook,
//! ntfy or e-mail. Whoever raises an alert calls [`Notifier::alert`], which
//! never waits: the `notifications` worker de-duplicates, holds non-critical
//! alerts through quiet hours, keeps an outbox (PostgreSQL, or a spool file
//! while the database is down) and delivers with retries and backoff.
//!
//! Nothing here may delay healing, updates or the API: a channel is only
//! ever awaited inside the worker's own delivery tasks.

pub mod channels;
pub mod config;
pub mod rules;
pub mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};

use crate::healing::record::EventKind;

pub use config::{ChannelConfig, NotifyConfig};
pub use worker::{NotifyDeps, spawn};

/// How bad it is, as the healing records have it; channels name the least
/// they want (`min_severity`).
pub use crate::healing::record::Severity;

/// One thing the owner should hear about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Alert {
    pub severity: Severity,
    /// Stable machine name, e.g. `service_failed`.
    pub kind: String,
    /// The de-duplication key, e.g. `service_failed:n8n`: the same cause
    /// within `notify.dedup_window` is sent once, then summarised.
    pub cause: String,
    pub title: String,
    pub body: String,
}

impl Alert {
    pub fn new(
        severity: Severity,
        kind: &str,
        cause: impl Into<String>,
        title: impl Into<String>,
        body: impl Into<String>,
    ) -> Alert {
        Alert {
            severity,
            kind: kind.to_owned(),
            cause: cause.into(),
            title: title.into(),
            body: body.into(),
        }
    }
}

/// Alerts waiting for the worker at most; beyond that new ones are dropped
/// (and counted) rather than making anyone wait.
const QUEUE: usize = 1024;

/// The cheap handle every part of the daemon holds. `alert` never awaits.
#[derive(Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<Alert>>,
    dropped: Arc<AtomicU64>,
}

/// The worker's end of the queue; it outlives restarts of the worker.
#[derive(Clone)]
pub struct AlertInbox(Arc<Mutex<mpsc::Receiver<Alert>>>);

impl Notifier {
    /// A handle and the inbox the `notifications` worker reads.
    pub fn new() -> (Notifier, AlertInbox) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (
            Notifier {
                tx: Some(tx),
                dropped: Arc::default(),
            },
            AlertInbox(Arc::new(Mutex::new(rx))),
        )
    }

    /// A handle that sends nowhere (tests, tools without a worker).
    pub fn detached() -> Notifier {
        Notifier {
            tx: None,
            dropped: Arc::default(),
        }
    }

    /// Queues `alert` for the worker and returns at once.
    pub fn alert(&self, alert: Alert) {
        let Some(tx) = &self.tx else {
            return;
        };
        match tx.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(a)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(kind = %a.kind, dropped = n, "notification queue full: alert dropped");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Alerts dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::detached()
    }
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field("attached", &self.tx.is_some())
            .finish()
    }
}

/// The alert a self-healing record is worth, if any: every CRITICAL event
/// (a service marked failed among them), the disk reaching the cleanup level
/// (90 % by default) and the heat rules (throttling, the LLM restarted or
/// stopped for heat).
pub fn from_healing(
    kind: &EventKind,
    severity: Severity,
    service: Option<&str>,
    description: &str,
) -> Option<Alert> {
    let event_type = kind.as_str();
    let subject = service.map(|s| format!(" ({s})")).unwrap_or_default();
    let title = match kind {
        EventKind::ServiceFailed => format!("Service {} failed", service.unwrap_or("?")),
        EventKind::DiskCleanup => "Disk almost full".to_owned(),
        EventKind::HeatResolved => return None,
        EventKind::HeatThrottle
        | EventKind::HeatRestartLlm
        | EventKind::HeatStopLlm
        | EventKind::HeatCritical => "The box is running hot".to_owned(),
        _ if severity == Severity::Critical => {
            format!("Self-healing: {}{subject}", event_type.replace('_', " "))
        }
        _ => return None,
    };
    // A failed service is critical however the record was rated.
    let severity = match kind {
        EventKind::ServiceFailed => Severity::Critical,
        _ => severity.max(Severity::Warning),
    };
    let cause = match service {
        Some(s) => format!("{event_type}:{s}"),
        None => event_type.to_owned(),
    };
    Some(Alert::new(severity, event_type, cause, title, description))
}

/// The alert a metrics sample is worth when the GPU slows itself down for
/// heat (NVML's thermal throttle reasons); None otherwise. Raised on every
/// reading while it lasts: the de-dup window makes it one message and a
/// summary.
pub fn gpu_throttle(sample: &crate::metrics::collect::Sample) -> Option<Alert> {
    let gpu = sample.gpu.as_ref()?;
    let thermal: Vec<&str> = gpu
        .throttle_reasons
        .iter()
        .map(String::as_str)
        .filter(|r| r.contains("thermal"))
        .collect();
    if thermal.is_empty() {
        return None;
    }
    let temp = gpu
        .temperature_c
        .map_or_else(String::new, |t| format!(" at {t:.0} °C"));
    Some(Alert::new(
        Severity::Warning,
        "gpu_thermal_throttle",
        "gpu_thermal_throttle",
        "The GPU is throttling for heat",
        format!(
            "{} slows itself down{temp} ({}): AI answers take longer. Check the airflow around the box.",
            if gpu.name.is_empty() {
                "The GPU"
            } else {
                gpu.name.as_str()
            },
            thermal.join(", ")
        ),
    ))
}

/// The alert an update run's final state is worth (`done`, `rolled_back`,
/// `failed`); None for any other state.
pub fn update_outcome(state: &str, version: &str, from: &str, step: &str) -> Option<Alert> {
    let (severity, title, body) = match state {
        "done" => (
            Severity::Info,
            format!("Update to {version} installed"),
            format!("The box was updated from {from} to {version}."),
        ),
        "rolled_back" => (
            Severity::Warning,
            format!("Update to {version} rolled back"),
            format!(
                "The update to {version} did not succeed and the box is back on {from}: {step}"
            ),
        ),
        "failed" => (
            Severity::Critical,
            format!("Update to {version} failed"),
            format!(
                "The update to {version} failed and could not be rolled back; the box needs a look: {step}"
            ),
        ),
        _ => return None,
    };
    let kind = format!("update_{state}");
    Some(Alert::new(
        severity,
        &kind,
        format!("{kind}:{version}"),
        title,
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healing_records_worth_an_alert_become_one_and_the_rest_do_not() {
        use EventKind as K;
        use Severity::{Critical, Info, Warning};
        let a = from_healing(
            &K::ServiceFailed,
            Warning,
            Some("n8n"),
            "6 restarts within 30m",
        )
        .unwrap();
        assert_eq!(a.severity, Severity::Critical);
        assert_eq!(a.kind, "service_failed");
        assert_eq!(a.cause, "service_failed:n8n");
        assert_eq!(a.title, "Service n8n failed");
        let disk = from_healing(&K::DiskCleanup, Warning, None, "disk 91.0 % full").unwrap();
        assert_eq!(
            (disk.severity, disk.cause.as_str()),
            (Severity::Warning, "disk_cleanup")
        );
        let hot = from_healing(&K::HeatThrottle, Info, None, "hot").unwrap();
        assert_eq!(
            (hot.severity, hot.kind.as_str()),
            (Warning, "heat_throttle")
        );
        assert!(from_healing(&K::HeatResolved, Info, None, "cool again").is_none());
        assert!(from_healing(&K::ServiceRestart, Warning, Some("n8n"), "x").is_none());
        assert!(from_healing(&K::DiskLevel, Warning, None, "80 %").is_none());
        let hard = from_healing(&K::HardRestart, Critical, None, "x").unwrap();
        assert_eq!(hard.title, "Self-healing: hard restart");
        // A kind another version wrote still alerts when it is critical.
        let other = K::Other("disk_critical".into());
        assert_eq!(
            from_healing(&other, Critical, None, "x").unwrap().cause,
            "disk_critical"
        );
    }

    #[test]
    fn a_gpu_slowing_down_for_heat_is_an_alert_and_a_power_cap_is_not() {
        let sample = |reasons: &[&str]| -> crate::metrics::collect::Sample {
            serde_json::from_value(serde_json::json!({
                "ts": "2026-12-06T10:00:00Z", "thermal_zones": [], "errors": [],
                "gpu": {"backend": "nvml", "name": "RTX 4000", "utilization_percent": 99.0,
                        "temperature_c": 91.0, "throttle_reasons": reasons, "rails": []},
            }))
            .unwrap()
        };
        let a = gpu_throttle(&sample(&["sw_power_cap", "hw_thermal_slowdown"])).unwrap();
        assert_eq!(
            (a.severity, a.cause.as_str()),
            (Severity::Warning, "gpu_thermal_throttle")
        );
        assert!(
            a.body
                .starts_with("RTX 4000 slows itself down at 91 °C (hw_thermal_slowdown)"),
            "{}",
            a.body
        );
        assert!(gpu_throttle(&sample(&["sw_power_cap"])).is_none());
        assert!(gpu_throttle(&sample(&[])).is_none());
    }

    #[tokio::test]
    async fn alert_never_waits_even_when_nobody_reads() {
        let (n, _inbox) = Notifier::new();
        let a = Alert::new(Severity::Info, "test", "test", "t", "b");
        for _ in 0..QUEUE + 10 {
            n.alert(a.clone());
        }
        assert_eq!(n.dropped(), 10);
        Notifier::detached().alert(a);
    }
}
