//! Jetson (tegra) GPU without NVML: the integrated GPU found through devfreq,
//! its load in per-mille, clocks, the EMC rate where debugfs shows it, and the
//! INA3221 power rails. Paths are found once in `discover`; each sample only
//! reads them.

use std::path::{Path, PathBuf};

use super::thermal::zone_by_family;
use super::{
    CollectError, GpuSample, MemInfo, PowerRail, SeriesError, ThermalReading, read_text, round1,
    trim_sysfs,
};

/// `of_node/name` of the integrated GPU: Orin, Xavier, TX2, and the generic name.
pub const GPU_OF_NODE_NAMES: [&str; 4] = ["ga10b", "gv11b", "gp10b", "gpu"];

/// Rails whose reading is the whole board's input.
const BOARD_INPUT_RAILS: [&str; 2] = ["VDD_IN", "POM_5V_IN"];

/// The INA3221 driver's channel 7 is the sum of the shunt voltages, not a rail.
const SUM_CHANNEL: u32 = 7;

struct RailChannel {
    label: String,
    voltage: PathBuf,
    current: PathBuf,
}

pub(super) struct TegraGpu {
    name: String,
    devfreq_dir: PathBuf,
    device_dir: PathBuf,
    rails: Vec<RailChannel>,
    emc_rate: Option<PathBuf>,
}

/// Load file → percent. The file holds per-mille (0–1000).
pub fn parse_load_permille(text: &str) -> Result<f64, CollectError> {
    let raw = trim_sysfs(text);
    let permille: u64 = raw
        .parse()
        .map_err(|_| CollectError::malformed("load", format!("not a number: {raw:?}")))?;
    Ok((permille as f64 / 10.0).clamp(0.0, 100.0))
}

/// A devfreq `cur_freq`/`min_freq`/`max_freq` file (Hz).
pub fn parse_freq_hz(text: &str) -> Result<u64, CollectError> {
    let raw = trim_sysfs(text);
    raw.parse()
        .map_err(|_| CollectError::malformed("freq", format!("not a number of Hz: {raw:?}")))
}

/// The bpmp `clk/emc/rate` file (Hz) → MHz.
pub fn parse_emc_rate(text: &str) -> Result<u32, CollectError> {
    parse_freq_hz(text).map(hz_to_mhz)
}

fn hz_to_mhz(hz: u64) -> u32 {
    u32::try_from(hz.saturating_add(500_000) / 1_000_000).unwrap_or(u32::MAX)
}

/// One rail from its label and the `inK_input` (mV) and `currK_input` (mA) files.
pub fn parse_rail_reading(
    label: &str,
    millivolts: &str,
    milliamps: &str,
) -> Result<PowerRail, CollectError> {
    let num = |what: &str, text: &str| -> Result<i64, CollectError> {
        let raw = trim_sysfs(text);
        raw.parse().map_err(|_| {
            CollectError::malformed(
                format!("rail {label}"),
                format!("{what} is not a number: {raw:?}"),
            )
        })
    };
    let voltage_mv = num("voltage", millivolts)?;
    let current_ma = num("current", milliamps)?;
    Ok(PowerRail {
        name: label.to_string(),
        voltage_mv,
        current_ma,
        power_mw: (voltage_mv as f64 * current_ma as f64 / 1000.0).round(),
    })
}

/// The whole board: the `VDD_IN` (or `POM_5V_IN`) rail when present, else
/// the sum of the rails. `None` without rails.
pub fn board_power_mw(rails: &[PowerRail]) -> Option<f64> {
    if let Some(input) = rails
        .iter()
        .find(|r| BOARD_INPUT_RAILS.contains(&r.name.as_str()))
    {
        return Some(input.power_mw);
    }
    (!rails.is_empty()).then(|| rails.iter().map(|r| r.power_mw).sum())
}

fn sorted_dir(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

fn discover_rails(sys_root: &Path) -> Vec<RailChannel> {
    let mut rails = Vec::new();
    for (_, dev) in sorted_dir(&sys_root.join("bus/i2c/devices")) {
        if !read_text(&dev.join("name")).is_ok_and(|n| n.contains("ina3221")) {
            continue;
        }
        for (_, hwmon) in sorted_dir(&dev.join("hwmon")) {
            let mut channels: Vec<(u32, String)> = sorted_dir(&hwmon)
                .into_iter()
                .filter_map(|(file, path)| {
                    let k = file
                        .strip_prefix("in")?
                        .strip_suffix("_label")?
                        .parse()
                        .ok()?;
                    if k == SUM_CHANNEL {
                        return None;
                    }
                    let label = read_text(&path).ok()?;
                    (!label.is_empty() && !label.contains("NC")).then_some((k, label))
                })
                .collect();
            channels.sort();
            rails.extend(channels.into_iter().map(|(k, label)| RailChannel {
                label,
                voltage: hwmon.join(format!("in{k}_input")),
                current: hwmon.join(format!("curr{k}_input")),
            }));
        }
    }
    rails
}

impl TegraGpu {
    /// The first devfreq entry whose device tree node is a GPU, with its rails
    /// and EMC clock. `None` when there is no such entry (not a Jetson).
    pub(super) fn discover(sys_root: &Path) -> Option<TegraGpu> {
        let (entry_name, devfreq_dir, of_name) = sorted_dir(&sys_root.join("class/devfreq"))
            .into_iter()
            .find_map(|(entry, dir)| {
                let of_name = read_text(&dir.join("device/of_node/name")).ok()?;
                GPU_OF_NODE_NAMES
                    .contains(&of_name.as_str())
                    .then_some((entry, dir, of_name))
            })?;
        // `device` is a symlink into /sys/devices; `load` lives at its target.
        let device_dir = std::fs::canonicalize(devfreq_dir.join("device")).ok()?;
        // `17000000.ga10b` → `ga10b`: more telling than a node named `gpu`.
        let name = entry_name
            .rsplit_once('.')
            .map(|(_, n)| n)
            .filter(|n| !n.is_empty())
            .map_or(of_name, str::to_string);
        let emc = sys_root.join("kernel/debug/bpmp/debug/clk/emc/rate");
        let emc_rate = read_text(&emc).is_ok().then_some(emc);
        Some(TegraGpu {
            name,
            devfreq_dir,
            device_dir,
            rails: discover_rails(sys_root),
            emc_rate,
        })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Utilisation, clocks, rails. Only an unreadable or garbled `load` fails
    /// the whole GPU series; a bad clock or rail is listed in `errors` and left out.
    pub(super) fn sample(
        &self,
        mem: Option<&MemInfo>,
        zones: &[ThermalReading],
        errors: &mut Vec<SeriesError>,
    ) -> Result<GpuSample, CollectError> {
        let load_path = self.device_dir.join("load");
        let utilization_percent = match read_text(&load_path) {
            Ok(text) => round1(parse_load_permille(&text).map_err(|e| e.at(&load_path))?),
            // Absent while the GPU is rail-gated: it is idle, not broken.
            Err(e) if e.is_not_found() => 0.0,
            Err(e) => return Err(e),
        };

        let mut mhz = |path: PathBuf| -> Option<u32> {
            match read_text(&path).and_then(|t| parse_freq_hz(&t).map_err(|e| e.at(&path))) {
                Ok(hz) => Some(hz_to_mhz(hz)),
                Err(e) if e.is_not_found() => None,
                Err(e) => {
                    errors.push(SeriesError::new("gpu.clock", &e));
                    None
                }
            }
        };
        let clock_mhz = mhz(self.devfreq_dir.join("cur_freq"));
        let clock_min_mhz = mhz(self.devfreq_dir.join("min_freq"));
        let clock_max_mhz = mhz(self.devfreq_dir.join("max_freq"));
        let memory_clock_mhz = self.emc_rate.clone().and_then(&mut mhz);

        let mut rails = Vec::with_capacity(self.rails.len());
        for ch in &self.rails {
            let reading = read_text(&ch.voltage).and_then(|mv| {
                let ma = read_text(&ch.current)?;
                parse_rail_reading(&ch.label, &mv, &ma)
            });
            match reading {
                Ok(r) => rails.push(r),
                Err(e) => errors.push(SeriesError::new("gpu.power", &e)),
            }
        }
        let power_mw = rails
            .iter()
            .find(|r| r.name.contains("GPU"))
            .map(|r| r.power_mw);

        Ok(GpuSample {
            backend: "tegra".to_string(),
            name: self.name.clone(),
            utilization_percent,
            memory_used_bytes: mem.map(MemInfo::used_bytes),
            memory_total_bytes: mem.map(|m| m.total_bytes),
            temperature_c: zone_by_family(zones, "gpu").map(|z| z.celsius),
            power_mw,
            clock_mhz,
            clock_min_mhz,
            clock_max_mhz,
            memory_clock_mhz,
            throttle_reasons: Vec::new(),
            board_power_mw: board_power_mw(&rails),
            rails,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    /// A devfreq tree with one non-GPU entry and the GPU, `load` optional.
    fn devfreq_tree(load: Option<&str>) -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let df = tmp.path().join("class/devfreq");
        write(&df.join("15340000.vic/device/of_node/name"), "vic\0");
        let gpu = df.join("17000000.ga10b");
        write(&gpu.join("device/of_node/name"), "ga10b\0");
        write(&gpu.join("cur_freq"), "306000000\n");
        write(&gpu.join("min_freq"), "306000000\n");
        write(&gpu.join("max_freq"), "1300500000\n");
        if let Some(load) = load {
            write(&gpu.join("device/load"), load);
        }
        tmp
    }

    #[test]
    fn full_load_is_one_hundred_percent() {
        assert_eq!(parse_load_permille("1000\n").unwrap(), 100.0);
        assert_eq!(parse_load_permille("372\n").unwrap(), 37.2);
        assert_eq!(parse_load_permille("0").unwrap(), 0.0);
    }

    #[test]
    fn devfreq_gpu_is_found_by_its_device_tree_name_and_full_load_reads_100() {
        let tmp = devfreq_tree(Some("1000\n"));
        let gpu = TegraGpu::discover(tmp.path()).expect("gpu found");
        assert_eq!(gpu.name(), "ga10b");
        let mut errors = Vec::new();
        let s = gpu.sample(None, &[], &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.utilization_percent, 100.0);
        assert_eq!(s.clock_mhz, Some(306));
        assert_eq!(s.clock_max_mhz, Some(1301));
        assert_eq!(s.memory_clock_mhz, None);
        assert!(s.rails.is_empty());
        assert_eq!(s.board_power_mw, None);
    }

    #[test]
    fn missing_load_while_rail_gated_is_zero_percent_not_an_error() {
        let tmp = devfreq_tree(None);
        let gpu = TegraGpu::discover(tmp.path()).unwrap();
        let mut errors = Vec::new();
        let s = gpu.sample(None, &[], &mut errors).unwrap();
        assert_eq!(s.utilization_percent, 0.0);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn garbled_load_fails_the_gpu_series_naming_the_file() {
        let tmp = devfreq_tree(Some("busy\n"));
        let gpu = TegraGpu::discover(tmp.path()).unwrap();
        let err = gpu.sample(None, &[], &mut Vec::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("load") && msg.contains("busy"), "{msg}");
    }

    #[test]
    fn no_gpu_node_means_no_tegra_backend() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            &tmp.path()
                .join("class/devfreq/15340000.vic/device/of_node/name"),
            "vic\0",
        );
        assert!(TegraGpu::discover(tmp.path()).is_none());
        assert!(TegraGpu::discover(Path::new("/nonexistent")).is_none());
    }

    #[test]
    fn rail_power_is_millivolts_times_milliamps() {
        let r = parse_rail_reading("VDD_GPU_SOC", "5072\n", "1567\n").unwrap();
        assert_eq!(r.power_mw, 7948.0);
        let err = parse_rail_reading("VDD_IN", "5000", "n/a").unwrap_err();
        assert!(err.to_string().contains("VDD_IN"), "{err}");
    }

    #[test]
    fn board_power_is_vdd_in_when_present_else_the_sum() {
        let rail = |name: &str, power_mw: f64| PowerRail {
            name: name.into(),
            voltage_mv: 0,
            current_ma: 0,
            power_mw,
        };
        let with_input = [rail("VDD_GPU_SOC", 100.0), rail("VDD_IN", 900.0)];
        assert_eq!(board_power_mw(&with_input), Some(900.0));
        let pom = [rail("POM_5V_GPU", 100.0), rail("POM_5V_IN", 700.0)];
        assert_eq!(board_power_mw(&pom), Some(700.0));
        let without = [rail("VDD_GPU_SOC", 100.0), rail("VDD_CPU_CV", 50.0)];
        assert_eq!(board_power_mw(&without), Some(150.0));
        assert_eq!(board_power_mw(&[]), None);
    }
}
