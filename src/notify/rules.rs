//! The decisions, as pure functions of the time: de-duplication with a
//! closing summary, quiet hours, retry backoff. The worker around them only
//! stores and sends.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};

use super::config::QuietHours;
use super::{Alert, Severity};

/// Per cause: when its window closes and how often it came again inside it.
#[derive(Debug, Default)]
pub struct Dedup {
    open: HashMap<String, Window>,
}

#[derive(Debug)]
struct Window {
    opened: DateTime<Utc>,
    closes: DateTime<Utc>,
    repeats: u32,
    last: Alert,
}

impl Dedup {
    /// Whether `alert` is sent: the first of its cause in `window` is; a
    /// repeat is only counted.
    pub fn admit(&mut self, alert: &Alert, now: DateTime<Utc>, window: Duration) -> bool {
        if let Some(w) = self.open.get_mut(&alert.cause)
            && now < w.closes
        {
            w.repeats += 1;
            w.last = alert.clone();
            return false;
        }
        let closes = now + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        self.open.insert(
            alert.cause.clone(),
            Window {
                opened: now,
                closes,
                repeats: 0,
                last: alert.clone(),
            },
        );
        true
    }

    /// Remembers `alert` as sent at `at` (an outbox entry from before a
    /// restart), so its cause stays quiet for the rest of its window.
    pub fn seed(&mut self, alert: &Alert, at: DateTime<Utc>, window: Duration) {
        let closes = at + chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
        let w = self.open.entry(alert.cause.clone()).or_insert(Window {
            opened: at,
            closes,
            repeats: 0,
            last: alert.clone(),
        });
        if closes > w.closes {
            w.opened = at;
            w.closes = closes;
        }
    }

    /// Closes the windows that ended by `now`: a summary for each that saw
    /// repeats (the most severe of them is the worst of the repeats).
    pub fn close_due(&mut self, now: DateTime<Utc>) -> Vec<Alert> {
        let mut out = Vec::new();
        self.open.retain(|_, w| {
            if now < w.closes {
                return true;
            }
            if w.repeats > 0 {
                let times = if w.repeats == 1 { "time" } else { "times" };
                out.push(Alert {
                    severity: w.last.severity,
                    kind: w.last.kind.clone(),
                    cause: w.last.cause.clone(),
                    title: format!("{} (happened {} more {times})", w.last.title, w.repeats),
                    body: format!(
                        "After the first notice at {}, this happened {} more {times} until {}. The last one said:\n{}",
                        w.opened.format("%Y-%m-%d %H:%M UTC"),
                        w.repeats,
                        w.closes.format("%Y-%m-%d %H:%M UTC"),
                        w.last.body
                    ),
                });
            }
            false
        });
        out.sort_by(|a, b| a.cause.cmp(&b.cause));
        out
    }

    /// When the next window closes.
    pub fn next_close(&self) -> Option<DateTime<Utc>> {
        self.open.values().map(|w| w.closes).min()
    }
}

/// Until when an alert of `severity` raised at `now` waits: the end of the
/// quiet hours (in `tz`) if it falls inside them; never for CRITICAL.
pub fn held_until<Tz: TimeZone>(
    quiet: Option<&QuietHours>,
    severity: Severity,
    now: DateTime<Utc>,
    tz: &Tz,
) -> Option<DateTime<Utc>> {
    let q = quiet?;
    if severity == Severity::Critical {
        return None;
    }
    let local = now.with_timezone(tz).naive_local();
    let t = local.time();
    let inside = if q.start < q.end {
        t >= q.start && t < q.end
    } else {
        t >= q.start || t < q.end
    };
    if !inside {
        return None;
    }
    let day = if t < q.end {
        local.date()
    } else {
        local.date().succ_opt()?
    };
    let end = day.and_time(q.end);
    match tz.from_local_datetime(&end).earliest() {
        Some(e) => Some(e.with_timezone(&Utc)),
        // The end falls into a DST gap: an hour later exists.
        None => Some(now + chrono::Duration::hours(1)),
    }
}

/// The wait before try number `attempts + 1`, after `attempts` failed ones.
pub fn backoff(initial: Duration, max: Duration, attempts: u32) -> Duration {
    let factor = 1u32
        .checked_shl(attempts.saturating_sub(1))
        .unwrap_or(u32::MAX);
    initial.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::FixedOffset;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn alert(cause: &str, body: &str) -> Alert {
        Alert::new(
            Severity::Critical,
            "service_failed",
            cause,
            "Service n8n failed",
            body,
        )
    }

    #[test]
    fn the_same_cause_is_sent_once_per_window_then_summarised() {
        let mut d = Dedup::default();
        let hour = Duration::from_secs(3600);
        let t0 = at("2026-12-06T10:00:00Z");
        assert!(d.admit(&alert("a", "1"), t0, hour));
        assert!(!d.admit(&alert("a", "2"), at("2026-12-06T10:10:00Z"), hour));
        assert!(!d.admit(&alert("a", "3"), at("2026-12-06T10:20:00Z"), hour));
        // Another cause has its own window.
        assert!(d.admit(&alert("b", "x"), at("2026-12-06T10:30:00Z"), hour));
        assert!(d.close_due(at("2026-12-06T10:59:59Z")).is_empty());
        assert_eq!(d.next_close(), Some(at("2026-12-06T11:00:00Z")));
        let s = d.close_due(at("2026-12-06T11:00:00Z"));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].cause, "a");
        assert_eq!(s[0].title, "Service n8n failed (happened 2 more times)");
        assert!(s[0].body.ends_with("said:\n3"), "{}", s[0].body);
        // "b" had no repeats: its window closes without a word.
        assert!(d.close_due(at("2026-12-06T11:30:00Z")).is_empty());
        assert_eq!(d.next_close(), None);
        // After the window the cause is news again.
        assert!(d.admit(&alert("a", "4"), at("2026-12-06T11:01:00Z"), hour));
    }

    #[test]
    fn what_was_sent_before_a_restart_keeps_its_cause_quiet() {
        let mut d = Dedup::default();
        let hour = Duration::from_secs(3600);
        d.seed(&alert("a", "1"), at("2026-12-06T10:00:00Z"), hour);
        assert!(!d.admit(&alert("a", "2"), at("2026-12-06T10:30:00Z"), hour));
        assert!(d.admit(&alert("b", "1"), at("2026-12-06T10:30:00Z"), hour));
        assert_eq!(d.close_due(at("2026-12-06T11:00:00Z")).len(), 1);
        assert!(d.admit(&alert("a", "3"), at("2026-12-06T11:00:01Z"), hour));
    }

    #[test]
    fn quiet_hours_hold_non_critical_alerts_until_they_end() {
        let q: QuietHours = "22:00-07:00".parse().unwrap();
        let berlin = FixedOffset::east_opt(3600).unwrap();
        // 23:30 local: held until 07:00 local the next morning.
        let late = at("2026-12-06T22:30:00Z");
        assert_eq!(
            held_until(Some(&q), Severity::Warning, late, &berlin),
            Some(at("2026-12-07T06:00:00Z"))
        );
        // 03:00 local: held until 07:00 the same day.
        assert_eq!(
            held_until(
                Some(&q),
                Severity::Info,
                at("2026-12-07T02:00:00Z"),
                &berlin
            ),
            Some(at("2026-12-07T06:00:00Z"))
        );
        // Critical goes at once; outside the hours nothing waits.
        assert_eq!(
            held_until(Some(&q), Severity::Critical, late, &berlin),
            None
        );
        assert_eq!(
            held_until(
                Some(&q),
                Severity::Warning,
                at("2026-12-06T12:00:00Z"),
                &berlin
            ),
            None
        );
        assert_eq!(held_until(None, Severity::Warning, late, &berlin), None);
        // A span within one day: 12:00-13:00.
        let lunch: QuietHours = "12:00-13:00".parse().unwrap();
        assert_eq!(
            held_until(
                Some(&lunch),
                Severity::Warning,
                at("2026-12-06T12:15:00Z"),
                &Utc
            ),
            Some(at("2026-12-06T13:00:00Z"))
        );
        assert_eq!(
            held_until(
                Some(&lunch),
                Severity::Warning,
                at("2026-12-06T13:00:00Z"),
                &Utc
            ),
            None
        );
    }

    #[test]
    fn retries_back_off_doubling_up_to_the_cap() {
        let (i, m) = (Duration::from_secs(10), Duration::from_secs(60));
        let waits: Vec<u64> = (1..=6).map(|n| backoff(i, m, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 60, 60, 60]);
        assert_eq!(backoff(i, m, 500), m);
    }
}
