//! Thermal zones: `<sys>/class/thermal/thermal_zone*/{type,temp}`, millidegrees
//! Celsius. A zone reading -256000 (Tegra's "sensor off") or failing to read
//! (a powered-down sensor) is offline and skipped; garbage in `temp` is an error.

use std::path::Path;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{CollectError, read_bytes, read_text, round1, trim_sysfs};

/// What Tegra thermal zones read while their sensor is powered off.
const OFFLINE_MILLIDEGREES: i64 = -256_000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ThermalReading {
    /// The sysfs directory name, e.g. `thermal_zone0`.
    pub zone: String,
    /// The zone's `type`, e.g. `x86_pkg_temp`, `gpu-thermal`.
    pub kind: String,
    pub celsius: f64,
}

/// Parses a `temp` file: millidegrees → °C (1 decimal), `None` when offline.
pub fn parse_millidegrees(text: &str) -> Result<Option<f64>, CollectError> {
    let raw = trim_sysfs(text);
    let milli: i64 = raw
        .parse()
        .map_err(|_| CollectError::malformed("temp", format!("not a number: {raw:?}")))?;
    if milli == OFFLINE_MILLIDEGREES {
        return Ok(None);
    }
    Ok(Some(round1(milli as f64 / 1000.0)))
}

/// Every online zone, in zone-number order. No thermal class at all (a VM, a
/// container) is an empty list, not an error.
pub fn read_thermal_zones(sys_root: &Path) -> Result<Vec<ThermalReading>, CollectError> {
    let dir = sys_root.join("class/thermal");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CollectError::Read { path: dir, source }),
    };
    let mut zones: Vec<(u32, String)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name.strip_prefix("thermal_zone")?.parse().ok()?;
            Some((n, name))
        })
        .collect();
    zones.sort_unstable();

    let mut readings = Vec::with_capacity(zones.len());
    for (_, zone) in zones {
        let zone_dir = dir.join(&zone);
        let temp_path = zone_dir.join("temp");
        let Ok(bytes) = read_bytes(&temp_path) else {
            continue; // offline sensors fail the read (EINVAL/ENODATA/EAGAIN)
        };
        let text = String::from_utf8_lossy(&bytes);
        let Some(celsius) = parse_millidegrees(&text).map_err(|e| e.at(&temp_path))? else {
            continue;
        };
        let kind = read_text(&zone_dir.join("type")).unwrap_or_default();
        readings.push(ThermalReading {
            zone,
            kind,
            celsius,
        });
    }
    Ok(readings)
}

/// The first zone whose type starts with `family` (case-insensitive), e.g.
/// `gpu` matches both `gpu-thermal` (JetPack 5/6) and `GPU-therm` (older).
pub fn zone_by_family<'a>(zones: &'a [ThermalReading], family: &str) -> Option<&'a ThermalReading> {
    zones.iter().find(|z| {
        z.kind
            .get(..family.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(family))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millidegrees_become_celsius_with_one_decimal() {
        assert_eq!(parse_millidegrees("47250\n").unwrap(), Some(47.3));
        assert_eq!(parse_millidegrees("-5000").unwrap(), Some(-5.0));
    }

    #[test]
    fn minus_256000_is_offline() {
        assert_eq!(parse_millidegrees("-256000\n").unwrap(), None);
    }

    #[test]
    fn non_numeric_temp_is_an_error() {
        let err = parse_millidegrees("N/A\n").unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn zone_family_matches_both_naming_styles() {
        let z = |kind: &str| ThermalReading {
            zone: "thermal_zone0".into(),
            kind: kind.into(),
            celsius: 1.0,
        };
        assert!(zone_by_family(&[z("gpu-thermal")], "gpu").is_some());
        assert!(zone_by_family(&[z("GPU-therm")], "gpu").is_some());
        assert!(zone_by_family(&[z("cpu-thermal")], "gpu").is_none());
        assert!(zone_by_family(&[z("g")], "gpu").is_none());
    }
}
