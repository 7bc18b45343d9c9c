//! The overall status level of SPEC §4, as a pure function of what the
//! daemon knows. The service and self-healing parts join when those land.

use serde::Serialize;

use super::collect::Sample;
use super::ring::{Ring, Series};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Ok,
    Warning,
    Critical,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reason {
    pub level: Level,
    /// Stable, snake_case: `cpu_sustained`, `disk_high`, `temperature_critical`, `database_down`, `no_sample`, `service_restarted`.
    pub code: String,
    /// In words, for the owner.
    pub message: String,
}

pub const CPU_WARN_PERCENT: f64 = 80.0;
pub const CPU_WARN_WINDOW_MS: i64 = 5 * 60 * 1000;
pub const DISK_WARN_PERCENT: f64 = 80.0;
pub const TEMP_CRITICAL_C: f64 = 85.0;

/// Level and reasons, worst first.
pub fn evaluate(
    latest: Option<&Sample>,
    ring: &Ring,
    db_up: bool,
    now_ms: i64,
) -> (Level, Vec<Reason>) {
    let mut reasons = Vec::new();
    let mut add = |level, code: &str, message: String| {
        reasons.push(Reason {
            level,
            code: code.into(),
            message,
        })
    };
    if !db_up {
        add(
            Level::Critical,
            "database_down",
            "The database is not reachable; measurements are kept in memory until it returns."
                .into(),
        );
    }
    match latest {
        None => add(
            Level::Warning,
            "no_sample",
            "No measurement has been taken yet.".into(),
        ),
        Some(s) => {
            if let Some(t) = s.temperature_c
                && t > TEMP_CRITICAL_C
            {
                add(
                    Level::Critical,
                    "temperature_critical",
                    format!("The box is too hot: {t:.1} °C (limit {TEMP_CRITICAL_C} °C)."),
                );
            }
            if let Some(d) = s.disk_percent
                && d > DISK_WARN_PERCENT
            {
                add(
                    Level::Warning,
                    "disk_high",
                    format!("The disk is {d:.0} % full (warning above {DISK_WARN_PERCENT} %)."),
                );
            }
        }
    }
    if ring.sustained_above(Series::Cpu, CPU_WARN_PERCENT, CPU_WARN_WINDOW_MS, now_ms) {
        add(
            Level::Warning,
            "cpu_sustained",
            format!("The processor has been above {CPU_WARN_PERCENT} % for more than 5 minutes."),
        );
    }
    combine(reasons)
}

/// Reasons from the supervised services: a critical service down (not
/// stopped on purpose) is CRITICAL, any other service down is a WARNING.
pub fn service_reasons(services: &[crate::docker::ServiceStatus]) -> Vec<Reason> {
    use crate::docker::ServiceState as S;
    services
        .iter()
        .filter(|s| !s.stopped_on_purpose)
        .filter(|s| {
            !matches!(
                s.state,
                S::Healthy | S::Starting | S::Restarting | S::Stopped
            )
        })
        .map(|s| {
            let state = serde_json::to_value(s.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            Reason {
                level: if s.critical {
                    Level::Critical
                } else {
                    Level::Warning
                },
                code: if s.critical {
                    "critical_service_down"
                } else {
                    "service_down"
                }
                .into(),
                message: format!("The {} service is down ({state}).", s.name),
            }
        })
        .collect()
}

/// How long a restart keeps the status at WARNING (SPEC §4).
pub const RESTART_WARN_SECS: i64 = 10 * 60;

/// A WARNING for each service arasuld restarted in the last 10 minutes;
/// `why(name)` gives the cause in words where the self-healing trail has it.
pub fn restart_reasons(
    services: &[crate::docker::ServiceStatus],
    now: chrono::DateTime<chrono::Utc>,
    why: impl Fn(&str) -> Option<String>,
) -> Vec<Reason> {
    services
        .iter()
        .filter_map(|s| {
            let at = s.last_restart_at?;
            let ago = (now - at).num_seconds();
            if !(0..RESTART_WARN_SECS).contains(&ago) {
                return None;
            }
            let when = if ago < 60 {
                "less than a minute ago".to_string()
            } else {
                format!("{} min ago", ago / 60)
            };
            let cause = match why(&s.name) {
                Some(w) => format!(" by self-healing: {w}"),
                None => String::new(),
            };
            Some(Reason {
                level: Level::Warning,
                code: "service_restarted".into(),
                message: format!("The {} service was restarted {when}{cause}.", s.name),
            })
        })
        .collect()
}

/// Merges reason lists: worst first, and the level they add up to.
pub fn combine(mut reasons: Vec<Reason>) -> (Level, Vec<Reason>) {
    reasons.sort_by_key(|r| std::cmp::Reverse(r.level));
    let level = reasons.first().map_or(Level::Ok, |r| r.level);
    (level, reasons)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn sample(ms: i64, cpu: f64, temp: f64, disk: f64) -> Sample {
        Sample {
            ts: Utc.timestamp_millis_opt(ms).unwrap(),
            cpu_percent: Some(cpu),
            ram_percent: Some(10.0),
            ram_used_bytes: None,
            ram_total_bytes: None,
            temperature_c: Some(temp),
            thermal_zones: vec![],
            disk_total_bytes: None,
            disk_used_bytes: None,
            disk_free_bytes: None,
            disk_percent: Some(disk),
            gpu: None,
            errors: vec![],
        }
    }

    #[test]
    fn levels_follow_the_spec_rules() {
        let mut ring = Ring::new(1000);
        let s = sample(0, 10.0, 50.0, 40.0);
        ring.push(&s);
        assert_eq!(evaluate(Some(&s), &ring, true, 0).0, Level::Ok);
        assert_eq!(evaluate(Some(&s), &ring, false, 0).0, Level::Critical);

        let hot = sample(0, 10.0, 86.0, 40.0);
        let (level, reasons) = evaluate(Some(&hot), &ring, true, 0);
        assert_eq!(level, Level::Critical);
        assert_eq!(reasons[0].code, "temperature_critical");

        let full = sample(0, 10.0, 50.0, 81.0);
        assert_eq!(evaluate(Some(&full), &ring, true, 0).0, Level::Warning);

        // CPU above 80 % for 6 minutes → warning; for 4 minutes → still OK.
        let mut busy = Ring::new(1000);
        for i in 0..=360 {
            busy.push(&sample(i * 1000, 95.0, 50.0, 40.0));
        }
        let last = sample(360_000, 95.0, 50.0, 40.0);
        let (level, reasons) = evaluate(Some(&last), &busy, true, 360_000);
        assert_eq!(level, Level::Warning);
        assert_eq!(reasons[0].code, "cpu_sustained");
        assert_eq!(
            evaluate(Some(&last), &busy, true, 240_000 + 1000).0,
            Level::Ok
        );
    }

    #[test]
    fn a_critical_service_down_is_critical_unless_stopped_on_purpose() {
        use crate::docker::{Role, ServiceState, ServiceStatus};
        let svc = |name: &str, critical, state, on_purpose| ServiceStatus {
            critical,
            stopped_on_purpose: on_purpose,
            ..crate::docker::test_status(name, Role::Other, state, None)
        };
        let ok = [svc("llm", true, ServiceState::Healthy, false)];
        assert!(service_reasons(&ok).is_empty());
        let down = [
            svc("llm", true, ServiceState::Unhealthy, false),
            svc("n8n", false, ServiceState::ImageMissing, false),
            svc("minio", false, ServiceState::Stopped, true),
        ];
        let (level, reasons) = combine(service_reasons(&down));
        assert_eq!(level, Level::Critical);
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].message, "The llm service is down (unhealthy).");
        assert_eq!(reasons[1].code, "service_down");
    }

    #[test]
    fn a_restart_in_the_last_10_minutes_is_a_warning_with_its_cause() {
        use crate::docker::{Role, ServiceState, ServiceStatus};
        let now = Utc::now();
        let svc = |name: &str, restarted: Option<i64>| ServiceStatus {
            critical: true,
            restart_count: 1,
            last_restart_at: restarted.map(|s| now - chrono::Duration::seconds(s)),
            since: now,
            ..crate::docker::test_status(name, Role::Other, ServiceState::Healthy, None)
        };
        let list = [
            svc("llm", Some(150)),
            svc("n8n", Some(10 * 60 + 1)),
            svc("minio", None),
            svc("embed", Some(5)),
        ];
        let why = |n: &str| (n == "llm").then(|| "it had exited (code 137)".to_string());
        let (level, reasons) = combine(restart_reasons(&list, now, why));
        assert_eq!(level, Level::Warning);
        let messages: Vec<&str> = reasons.iter().map(|r| r.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "The llm service was restarted 2 min ago by self-healing: it had exited (code 137).",
                "The embed service was restarted less than a minute ago.",
            ]
        );
        assert!(reasons.iter().all(|r| r.code == "service_restarted"));
    }
}
