//! Disk usage of the data partition from `statvfs`, computed the way `df`
//! does: the percentage is of what non-root users can reach (used + avail),
//! so the root-reserved blocks do not hide a nearly full disk.

use std::path::Path;

use super::CollectError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskUsage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// Available to unprivileged users (`f_bavail`), as `df` shows it.
    pub free_bytes: u64,
}

impl DiskUsage {
    /// From the raw `statvfs` counters (in units of `f_frsize`).
    pub fn from_statvfs(blocks: u64, bfree: u64, bavail: u64, frsize: u64) -> Self {
        Self {
            total_bytes: blocks.saturating_mul(frsize),
            used_bytes: blocks.saturating_sub(bfree).saturating_mul(frsize),
            free_bytes: bavail.saturating_mul(frsize),
        }
    }

    /// used / (used + avail), like `df`'s `Use%` (unrounded).
    pub fn percent(&self) -> f64 {
        let reachable = self.used_bytes.saturating_add(self.free_bytes);
        if reachable == 0 {
            return 0.0;
        }
        (self.used_bytes as f64 * 100.0 / reachable as f64).clamp(0.0, 100.0)
    }
}

/// `statvfs` of any path on the partition.
pub fn disk_usage(path: &Path) -> Result<DiskUsage, CollectError> {
    let st = rustix::fs::statvfs(path).map_err(|e| CollectError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    Ok(DiskUsage::from_statvfs(
        st.f_blocks,
        st.f_bfree,
        st.f_bavail,
        st.f_frsize,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_counts_reserved_blocks_like_df() {
        // 1000 blocks, 300 free of which 250 reachable by users: used 700, df says 700/950.
        let d = DiskUsage::from_statvfs(1000, 300, 250, 4096);
        assert_eq!(d.total_bytes, 4_096_000);
        assert_eq!(d.used_bytes, 700 * 4096);
        assert_eq!(d.free_bytes, 250 * 4096);
        assert!((d.percent() - 73.684).abs() < 0.001, "{}", d.percent());
    }

    #[test]
    fn empty_filesystem_is_zero_percent() {
        assert_eq!(DiskUsage::from_statvfs(0, 0, 0, 4096).percent(), 0.0);
    }

    #[test]
    fn real_path_has_a_size_and_missing_path_is_an_error() {
        let d = disk_usage(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert!(d.total_bytes > 0 && d.used_bytes <= d.total_bytes);
        let err = disk_usage(Path::new("/nonexistent/arasul-data")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/arasul-data"),
            "{err}"
        );
    }
}
