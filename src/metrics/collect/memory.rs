//! RAM from `/proc/meminfo`: used = `MemTotal` − `MemAvailable`, the kernel's
//! own estimate of what can be handed out without swapping (not `MemFree`,
//! which counts the page cache as used).

use super::CollectError;

const FILE: &str = "/proc/meminfo";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemInfo {
    pub total_bytes: u64,
    pub available_bytes: u64,
}

impl MemInfo {
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.available_bytes)
    }

    pub fn percent(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        (self.used_bytes() as f64 * 100.0 / self.total_bytes as f64).clamp(0.0, 100.0)
    }
}

/// Parses `MemTotal` and `MemAvailable` (both `kB`, which the kernel means as KiB).
pub fn parse_meminfo(bytes: &[u8]) -> Result<MemInfo, CollectError> {
    let text =
        std::str::from_utf8(bytes).map_err(|_| CollectError::malformed(FILE, "not valid UTF-8"))?;
    let mut total = None;
    let mut available = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            _ => continue,
        };
        *slot = Some(parse_kib(key, rest)?);
        if total.is_some() && available.is_some() {
            break;
        }
    }
    let total_bytes = total.ok_or_else(|| CollectError::malformed(FILE, "no `MemTotal` line"))?;
    let available_bytes = available.ok_or_else(|| {
        CollectError::malformed(FILE, "no `MemAvailable` line (kernel older than 3.14?)")
    })?;
    if total_bytes == 0 {
        return Err(CollectError::malformed(FILE, "`MemTotal` is 0"));
    }
    Ok(MemInfo {
        total_bytes,
        available_bytes,
    })
}

fn parse_kib(key: &str, rest: &str) -> Result<u64, CollectError> {
    let mut parts = rest.split_ascii_whitespace();
    let raw = parts.next().unwrap_or("");
    let kib: u64 = raw
        .parse()
        .map_err(|_| CollectError::malformed(FILE, format!("`{key}` is not a number: {raw:?}")))?;
    match parts.next() {
        Some("kB") | None => Ok(kib.saturating_mul(1024)),
        Some(unit) => Err(CollectError::malformed(
            FILE,
            format!("`{key}` has unexpected unit {unit:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_is_total_minus_available_in_bytes() {
        let m =
            parse_meminfo(b"MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 750 kB\n").unwrap();
        assert_eq!(m.total_bytes, 1_024_000);
        assert_eq!(m.used_bytes(), 250 * 1024);
        assert_eq!(m.percent(), 25.0);
    }

    #[test]
    fn missing_mem_available_is_an_error_naming_the_field() {
        let err = parse_meminfo(b"MemTotal: 1000 kB\nMemFree: 100 kB\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/proc/meminfo") && msg.contains("MemAvailable"),
            "{msg}"
        );
    }

    #[test]
    fn non_numeric_value_is_an_error() {
        assert!(parse_meminfo(b"MemTotal: lots kB\nMemAvailable: 1 kB\n").is_err());
        assert!(parse_meminfo(b"MemTotal: 0 kB\nMemAvailable: 0 kB\n").is_err());
    }
}
