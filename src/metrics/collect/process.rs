//! The daemon's own process, for the standard `process_*` metrics: CPU
//! time, start time and virtual memory from `<proc>/self/stat`, resident
//! memory from `<proc>/self/status`, the open-files limit from
//! `<proc>/self/limits`, open descriptors by listing `<proc>/self/fd`, and
//! the boot time from `<proc>/stat`. Parsers are pure; [`read_self`] reads.

use std::path::Path;

use super::{CollectError, read_bytes};

/// Clock ticks per second of the times in `/proc/<pid>/stat`: the kernel
/// reports them in USER_HZ, which is 100 on every architecture Linux
/// builds for userspace today (as `sysconf(_SC_CLK_TCK)` answers).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says of this process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft `RLIMIT_NOFILE`; None when unlimited.
    pub max_fds: Option<u64>,
    /// Unix time the process started, seconds.
    pub start_time_seconds: f64,
}

/// The fields of `/proc/<pid>/stat` we use, in ticks and bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PidStat {
    pub utime_ticks: u64,
    pub stime_ticks: u64,
    /// Ticks after boot.
    pub start_ticks: u64,
    pub vsize_bytes: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) is in parentheses
/// and may hold spaces and parentheses itself: fields are counted from
/// the last `)`.
pub fn parse_pid_stat(bytes: &[u8]) -> Result<PidStat, CollectError> {
    const FILE: &str = "/proc/self/stat";
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| CollectError::malformed(FILE, "no `)` after the command name"))?;
    // rest[0] is field 3 (state): field n is rest[n - 3].
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    let field = |n: usize, what: &str| -> Result<u64, CollectError> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| CollectError::malformed(FILE, format!("field {n} ({what}) missing")))
    };
    Ok(PidStat {
        utime_ticks: field(14, "utime")?,
        stime_ticks: field(15, "stime")?,
        start_ticks: field(22, "starttime")?,
        vsize_bytes: field(23, "vsize")?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, bytes.
pub fn parse_status_rss(bytes: &[u8]) -> Result<u64, CollectError> {
    const FILE: &str = "/proc/self/status";
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| CollectError::malformed(FILE, "no `VmRSS: … kB` line"))
}

/// The soft limit of `Max open files` in `/proc/<pid>/limits`; None when
/// `unlimited`.
pub fn parse_max_open_files(bytes: &[u8]) -> Result<Option<u64>, CollectError> {
    const FILE: &str = "/proc/self/limits";
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    let soft = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .ok_or_else(|| CollectError::malformed(FILE, "no `Max open files` line"))?;
    match soft {
        "unlimited" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| CollectError::malformed(FILE, format!("soft limit {n:?}"))),
    }
}

/// `btime` of `/proc/stat`: the boot time, Unix seconds.
pub fn parse_boot_time(bytes: &[u8]) -> Result<u64, CollectError> {
    const FILE: &str = "/proc/stat";
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| CollectError::malformed(FILE, "no `btime` line"))
}

/// Reads this process's figures under `proc_root` (`/proc`).
pub fn read_self(proc_root: &Path) -> Result<ProcessStats, CollectError> {
    let me = proc_root.join("self");
    let stat_path = me.join("stat");
    let stat = parse_pid_stat(&read_bytes(&stat_path)?).map_err(|e| e.at(&stat_path))?;
    let status_path = me.join("status");
    let rss = parse_status_rss(&read_bytes(&status_path)?).map_err(|e| e.at(&status_path))?;
    let limits_path = me.join("limits");
    let max_fds =
        parse_max_open_files(&read_bytes(&limits_path)?).map_err(|e| e.at(&limits_path))?;
    let boot_path = proc_root.join("stat");
    let boot = parse_boot_time(&read_bytes(&boot_path)?).map_err(|e| e.at(&boot_path))?;
    let fd_dir = me.join("fd");
    let open_fds = std::fs::read_dir(&fd_dir)
        .map_err(|source| CollectError::Read {
            path: fd_dir,
            source,
        })?
        .count() as u64;
    Ok(ProcessStats {
        cpu_seconds: (stat.utime_ticks + stat.stime_ticks) as f64 / USER_HZ,
        resident_bytes: rss,
        virtual_bytes: stat.vsize_bytes,
        // The listing's own descriptor is among them while it is read.
        open_fds: open_fds.saturating_sub(1),
        max_fds,
        start_time_seconds: boot as f64 + stat.start_ticks as f64 / USER_HZ,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = b"4242 (ara (sul) d) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 123456 834101248 5120 18446744073709551615 1 1 0 0 0 0 0 4096 17003 0 0 0 17 3 0 0 0 0 0\n";
        let s = parse_pid_stat(stat).unwrap();
        assert_eq!(
            s,
            PidStat {
                utime_ticks: 250,
                stime_ticks: 75,
                start_ticks: 123456,
                vsize_bytes: 834101248,
            }
        );
        assert!(parse_pid_stat(b"4242 (x) S 1 2").is_err());
        assert!(parse_pid_stat(b"no parens").is_err());
    }

    #[test]
    fn status_limits_and_btime_are_read_in_base_units() {
        let status = b"Name:\tarasuld\nVmPeak:\t  900000 kB\nVmRSS:\t   20480 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss(status).unwrap(), 20480 * 1024);
        assert!(parse_status_rss(b"Name:\tx\n").is_err());
        let limits =
            b"Limit                     Soft Limit           Hard Limit           Units     \n\
Max cpu time              unlimited            unlimited            seconds   \n\
Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits).unwrap(), Some(1024));
        let unlimited =
            b"Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited).unwrap(), None);
        assert!(parse_max_open_files(b"Max open files x y files\n").is_err());
        let stat = b"cpu  1 2 3 4 5 6 7 0 0 0\nintr 1\nbtime 1767225600\nprocesses 9\n";
        assert_eq!(parse_boot_time(stat).unwrap(), 1_767_225_600);
        assert!(parse_boot_time(b"cpu 1 2 3\n").is_err());
    }

    #[test]
    fn this_process_is_read_from_the_real_proc() {
        let p = read_self(Path::new("/proc")).unwrap();
        assert!(p.resident_bytes > 1 << 20, "{p:?}");
        assert!(p.virtual_bytes >= p.resident_bytes);
        assert!(p.open_fds >= 3, "stdin, stdout, stderr at least: {p:?}");
        assert!(p.max_fds.is_none_or(|m| m >= p.open_fds));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            p.start_time_seconds <= now + 1.0 && p.start_time_seconds > now - 86_400.0 * 30.0,
            "{p:?}"
        );
    }
}
