//! CPU utilisation from the aggregate `cpu` line of `/proc/stat`: jiffy
//! counters, and the busy share of their deltas between two readings.

use super::CollectError;

const FILE: &str = "/proc/stat";
const FIELDS: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// Jiffies since boot, summed over all CPUs. `guest`/`guest_nice` are left
/// out: the kernel already counts them inside `user`/`nice`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    pub fn total(&self) -> u64 {
        self.user
            .saturating_add(self.nice)
            .saturating_add(self.system)
            .saturating_add(self.idle)
            .saturating_add(self.iowait)
            .saturating_add(self.irq)
            .saturating_add(self.softirq)
            .saturating_add(self.steal)
    }

    /// Time the CPUs were not working: idle, and waiting on I/O.
    pub fn idle_all(&self) -> u64 {
        self.idle.saturating_add(self.iowait)
    }
}

/// Parses the aggregate `cpu ` line of `/proc/stat`. Needs all eight fields
/// from `user` to `steal` (every kernel since 2.6.11 has them); fewer means
/// the file was cut short.
pub fn parse_proc_stat(bytes: &[u8]) -> Result<CpuTimes, CollectError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("cpu ") || *l == "cpu")
        .ok_or_else(|| CollectError::malformed(FILE, "no aggregate `cpu` line"))?;
    let mut values = [0u64; 8];
    let mut fields = line.split_ascii_whitespace().skip(1);
    for (i, name) in FIELDS.iter().enumerate() {
        let raw = fields.next().ok_or_else(|| {
            CollectError::malformed(
                FILE,
                format!("`cpu` line has {i} counters, expected at least 8 (truncated?)"),
            )
        })?;
        values[i] = raw.parse().map_err(|_| {
            CollectError::malformed(
                FILE,
                format!("`cpu` field `{name}` is not a number: {raw:?}"),
            )
        })?;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// Busy share of the time between two readings, in percent (0..=100):
/// busy = total − idle − iowait. Equal counters (no time passed) give 0.0.
/// Counters that went backwards (iowait may, on NO_HZ kernels) count as 0.
pub fn cpu_percent(prev: &CpuTimes, cur: &CpuTimes) -> f64 {
    let total = cur.total().saturating_sub(prev.total());
    if total == 0 {
        return 0.0;
    }
    let idle = cur.idle_all().saturating_sub(prev.idle_all());
    let busy = total.saturating_sub(idle);
    (busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(user: u64, idle: u64) -> CpuTimes {
        CpuTimes {
            user,
            idle,
            ..CpuTimes::default()
        }
    }

    #[test]
    fn aggregate_line_is_parsed_and_guest_is_not_counted_twice() {
        let t = parse_proc_stat(b"cpu  10 1 5 100 3 2 4 6 50 50\ncpu0 10 1 5 100 3 2 4 6 50 50\n")
            .unwrap();
        assert_eq!(t.user, 10);
        assert_eq!(t.steal, 6);
        assert_eq!(t.total(), 131);
        assert_eq!(t.idle_all(), 103);
    }

    #[test]
    fn equal_counters_give_zero_percent() {
        let t = times(5, 5);
        assert_eq!(cpu_percent(&t, &t), 0.0);
    }

    #[test]
    fn counters_going_backwards_stay_within_bounds() {
        let prev = times(100, 100);
        let cur = CpuTimes {
            iowait: 0,
            ..times(150, 90)
        };
        let pct = cpu_percent(&prev, &cur);
        assert!((0.0..=100.0).contains(&pct), "{pct}");
        assert_eq!(cpu_percent(&cur, &prev), 0.0);
    }

    #[test]
    fn truncated_cpu_line_is_an_error_naming_the_file() {
        let err = parse_proc_stat(b"cpu  2255 34 2290\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/proc/stat"), "{msg}");
        assert!(msg.contains("3 counters"), "{msg}");
    }

    #[test]
    fn non_numeric_counter_is_an_error_naming_the_field() {
        let err = parse_proc_stat(b"cpu  1 2 x 4 5 6 7 8 0 0\n").unwrap_err();
        assert!(err.to_string().contains("`system`"), "{err}");
    }

    #[test]
    fn missing_aggregate_line_is_an_error() {
        assert!(parse_proc_stat(b"cpu0 1 2 3 4 5 6 7 8\nintr 0\n").is_err());
        assert!(parse_proc_stat(b"").is_err());
    }
}
