//! Pure collectors: every series is a function of the bytes read from `/proc`,
//! `/sys` and `/etc` under configurable roots, so tests feed fixture trees and
//! benches time the real thing. Owns no threads, channels or timers; the
//! sampler around it decides when to call [`Probe::sample`].

mod cpu;
pub(crate) mod disk;
mod memory;
mod net;
mod nvml;
mod platform;
pub mod process;
mod tegra;
mod thermal;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use cpu::{CpuTimes, cpu_percent, parse_proc_stat};
pub use disk::{DiskUsage, disk_usage};
pub use memory::{MemInfo, parse_meminfo};
pub use net::{NetInterface, network_interfaces};
pub use nvml::throttle_reason_names;
pub use platform::{
    jetpack_for_l4t, parse_device_tree_model, parse_nv_tegra_release, parse_os_release_pretty_name,
};
pub use tegra::{
    GPU_OF_NODE_NAMES, board_power_mw, parse_emc_rate, parse_freq_hz, parse_load_permille,
    parse_rail_reading,
};
pub use thermal::{ThermalReading, parse_millidegrees, read_thermal_zones, zone_by_family};

use nvml::NvmlGpu;
use tegra::TegraGpu;

/// Where the collectors read from. Production uses `/proc`, `/sys`, `/etc`;
/// tests point these at fixture trees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRoots {
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
    /// Any path on the data partition; `statvfs` of it gives the disk series.
    pub data_path: PathBuf,
}

impl ProbeRoots {
    /// The running system's roots, with the disk series taken from `data_path`.
    pub fn system(data_path: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
            etc_root: PathBuf::from("/etc"),
            data_path: data_path.into(),
        }
    }
}

/// Which GPU backend the operator asked for (config key).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuBackendChoice {
    /// NVML if it initialises and sees a device, else tegra if a devfreq GPU exists, else none.
    #[default]
    Auto,
    Nvml,
    Tegra,
    None,
}

/// Why a series could not be sampled. Messages name the file they came from.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{file}: {message}")]
    Malformed { file: String, message: String },
    #[error("{0}")]
    Unavailable(String),
}

impl CollectError {
    pub(crate) fn malformed(file: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Malformed {
            file: file.into(),
            message: message.into(),
        }
    }

    /// Pure parsers name the logical file (`/proc/stat`); once the real path is
    /// known (a fixture tree, another root) the message should carry that instead.
    pub(crate) fn at(self, path: &Path) -> Self {
        match self {
            Self::Malformed { message, .. } => Self::Malformed {
                file: path.display().to_string(),
                message,
            },
            other => other,
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        matches!(self, Self::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, CollectError> {
    std::fs::read(path).map_err(|source| CollectError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a small sysfs/proc text file, trimmed of whitespace and trailing NULs.
pub(crate) fn read_text(path: &Path) -> Result<String, CollectError> {
    let bytes = read_bytes(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| CollectError::malformed(path.display().to_string(), "not valid UTF-8"))?;
    Ok(trim_sysfs(text).to_string())
}

pub(crate) fn trim_sysfs(text: &str) -> &str {
    text.trim_matches(|c: char| c == '\0' || c.is_whitespace())
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A series that could not be sampled this time, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SeriesError {
    /// `cpu`, `ram`, `temperature`, `disk`, `gpu`; `gpu.clock` and `gpu.power`
    /// for a part of the GPU series that was left out while the rest is present.
    pub series: String,
    pub message: String,
}

impl SeriesError {
    fn new(series: &str, err: &CollectError) -> Self {
        Self {
            series: series.to_string(),
            message: err.to_string(),
        }
    }
}

/// One INA3221 power rail (Jetson).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PowerRail {
    /// The `inK_label`, e.g. `VDD_GPU_SOC`.
    pub name: String,
    pub voltage_mv: i64,
    pub current_ma: i64,
    /// voltage × current / 1000, rounded to whole mW.
    pub power_mw: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuSample {
    /// `nvml` or `tegra`.
    pub backend: String,
    /// NVML device name, or the tegra GPU (`ga10b`, `gv11b`, …).
    pub name: String,
    pub utilization_percent: f64,
    /// NVML: framebuffer memory. Tegra: memory is unified with the CPU, so this
    /// is system RAM (the same numbers as the `ram_*` series).
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_c: Option<f64>,
    /// NVML: board power of the GPU. Tegra: the rail feeding the GPU (`VDD_GPU_SOC`).
    pub power_mw: Option<f64>,
    /// Graphics clock now.
    pub clock_mhz: Option<u32>,
    /// Tegra only: the devfreq floor.
    pub clock_min_mhz: Option<u32>,
    pub clock_max_mhz: Option<u32>,
    /// NVML: memory clock. Tegra: EMC rate, where debugfs exposes it.
    pub memory_clock_mhz: Option<u32>,
    /// NVML clock throttle reasons, lowercase (`sw_power_cap`, `hw_thermal_slowdown`, …).
    pub throttle_reasons: Vec<String>,
    /// Tegra: every INA3221 rail (NC and the channel-7 sum left out).
    pub rails: Vec<PowerRail>,
    /// Tegra: the whole board, `VDD_IN` (or `POM_5V_IN`) when present, else the sum of rails.
    pub board_power_mw: Option<f64>,
}

/// One full sample of every series.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    pub ts: DateTime<Utc>,
    pub cpu_percent: Option<f64>,
    pub ram_percent: Option<f64>,
    pub ram_used_bytes: Option<u64>,
    pub ram_total_bytes: Option<u64>,
    /// Maximum over the online thermal zones.
    pub temperature_c: Option<f64>,
    pub thermal_zones: Vec<ThermalReading>,
    pub disk_total_bytes: Option<u64>,
    pub disk_used_bytes: Option<u64>,
    pub disk_free_bytes: Option<u64>,
    pub disk_percent: Option<f64>,
    /// `None` when there is no GPU backend: a normal state, not an error.
    pub gpu: Option<GpuSample>,
    pub errors: Vec<SeriesError>,
}

/// Static facts for `/api/system/info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PlatformInfo {
    /// e.g. `36.4.3`, from `nv_tegra_release`.
    pub l4t: Option<String>,
    /// e.g. `6.2`; `None` when the L4T release is not in the known table.
    pub jetpack: Option<String>,
    /// `/proc/device-tree/model`, e.g. `NVIDIA Jetson AGX Orin Developer Kit`.
    pub board_model: Option<String>,
    /// `PRETTY_NAME` from `os-release`.
    pub os_pretty_name: Option<String>,
}

enum GpuBackend {
    // NVML's table of function pointers is ~12 KB; keep it off the Probe.
    Nvml(Box<NvmlGpu>),
    Tegra(TegraGpu),
    None,
}

impl GpuBackend {
    fn name(&self) -> &'static str {
        match self {
            Self::Nvml(_) => "nvml",
            Self::Tegra(_) => "tegra",
            Self::None => "none",
        }
    }
}

/// Owns the roots, the previous CPU reading and the chosen GPU backend.
pub struct Probe {
    roots: ProbeRoots,
    prev_cpu: Option<CpuTimes>,
    gpu: GpuBackend,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("roots", &self.roots)
            .field("prev_cpu", &self.prev_cpu)
            .field("gpu_backend", &self.gpu.name())
            .finish()
    }
}

impl Probe {
    /// Chooses the GPU backend: `Auto` = NVML if it initialises and sees a
    /// device, else tegra if a devfreq GPU exists, else none. An explicit
    /// choice that is not available falls back to none. Logs one info line
    /// with the choice. Never fails.
    ///
    /// Also primes the CPU reading, so the first [`Probe::sample`] already has
    /// a `cpu_percent` when at least one jiffy has passed since.
    pub fn new(roots: ProbeRoots, gpu: GpuBackendChoice) -> Probe {
        let (backend, reason) = choose_gpu_backend(&roots, gpu);
        let gpu_name = match &backend {
            GpuBackend::Nvml(g) => g.name(),
            GpuBackend::Tegra(g) => g.name(),
            GpuBackend::None => "",
        };
        tracing::info!(
            requested = ?gpu,
            backend = backend.name(),
            gpu = gpu_name,
            reason = %reason,
            "GPU metrics backend chosen"
        );
        let prev_cpu = read_cpu_times(&roots.proc_root).ok();
        Probe {
            roots,
            prev_cpu,
            gpu: backend,
        }
    }

    /// `nvml`, `tegra` or `none`.
    pub fn gpu_backend(&self) -> &'static str {
        self.gpu.name()
    }

    pub fn roots(&self) -> &ProbeRoots {
        &self.roots
    }

    /// One full sample of every series. A series that fails (malformed,
    /// truncated or missing file) is `None` and its error is listed in
    /// `errors`; the rest are still sampled. Never panics.
    ///
    /// `cpu_percent` is `None` when there is no earlier reading or no jiffy
    /// has passed since it (two calls within ~10 ms): no delta, no value.
    pub fn sample(&mut self, ts: DateTime<Utc>) -> Sample {
        let mut errors = Vec::new();

        let cpu_percent = match read_cpu_times(&self.roots.proc_root) {
            Ok(cur) => {
                let pct = match &self.prev_cpu {
                    Some(prev) if cur.total() > prev.total() => {
                        Some(round1(cpu_percent(prev, &cur)))
                    }
                    _ => None,
                };
                self.prev_cpu = Some(cur);
                pct
            }
            Err(e) => {
                errors.push(SeriesError::new("cpu", &e));
                None
            }
        };

        let mem = match read_meminfo(&self.roots.proc_root) {
            Ok(m) => Some(m),
            Err(e) => {
                errors.push(SeriesError::new("ram", &e));
                None
            }
        };

        let thermal_zones = match read_thermal_zones(&self.roots.sys_root) {
            Ok(z) => z,
            Err(e) => {
                errors.push(SeriesError::new("temperature", &e));
                Vec::new()
            }
        };
        let temperature_c = thermal_zones
            .iter()
            .map(|z| z.celsius)
            .max_by(f64::total_cmp);

        let disk = match disk_usage(&self.roots.data_path) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(SeriesError::new("disk", &e));
                None
            }
        };

        let gpu = match &self.gpu {
            GpuBackend::None => None,
            GpuBackend::Nvml(g) => match g.sample() {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(SeriesError::new("gpu", &e));
                    None
                }
            },
            GpuBackend::Tegra(g) => match g.sample(mem.as_ref(), &thermal_zones, &mut errors) {
                Ok(s) => Some(s),
                Err(e) => {
                    errors.push(SeriesError::new("gpu", &e));
                    None
                }
            },
        };

        Sample {
            ts,
            cpu_percent,
            ram_percent: mem.as_ref().map(|m| round1(m.percent())),
            ram_used_bytes: mem.as_ref().map(|m| m.used_bytes()),
            ram_total_bytes: mem.as_ref().map(|m| m.total_bytes),
            temperature_c,
            thermal_zones,
            disk_total_bytes: disk.map(|d| d.total_bytes),
            disk_used_bytes: disk.map(|d| d.used_bytes),
            disk_free_bytes: disk.map(|d| d.free_bytes),
            disk_percent: disk.map(|d| round1(d.percent())),
            gpu,
            errors,
        }
    }

    /// Static facts for `/api/system/info`. Missing files give `None`
    /// (a non-Jetson box has no `nv_tegra_release`), never an error.
    pub fn platform(&self) -> PlatformInfo {
        let l4t = read_text(&self.roots.etc_root.join("nv_tegra_release"))
            .ok()
            .and_then(|t| parse_nv_tegra_release(&t).ok());
        let jetpack = l4t.as_deref().and_then(jetpack_for_l4t).map(str::to_string);
        let board_model = read_bytes(&self.roots.proc_root.join("device-tree/model"))
            .ok()
            .and_then(|b| parse_device_tree_model(&b));
        let os_pretty_name = read_text(&self.roots.etc_root.join("os-release"))
            .ok()
            .and_then(|t| parse_os_release_pretty_name(&t));
        PlatformInfo {
            l4t,
            jetpack,
            board_model,
            os_pretty_name,
        }
    }
}

fn choose_gpu_backend(roots: &ProbeRoots, choice: GpuBackendChoice) -> (GpuBackend, String) {
    let try_nvml = || NvmlGpu::init().map(|g| GpuBackend::Nvml(Box::new(g)));
    let try_tegra = || {
        TegraGpu::discover(&roots.sys_root)
            .map(GpuBackend::Tegra)
            .ok_or_else(|| "no devfreq GPU under the sys root".to_string())
    };
    match choice {
        GpuBackendChoice::None => (GpuBackend::None, "disabled by configuration".into()),
        GpuBackendChoice::Nvml => match try_nvml() {
            Ok(b) => (b, "requested".into()),
            Err(e) => (GpuBackend::None, format!("NVML unavailable: {e}")),
        },
        GpuBackendChoice::Tegra => match try_tegra() {
            Ok(b) => (b, "requested".into()),
            Err(e) => (GpuBackend::None, e),
        },
        GpuBackendChoice::Auto => match try_nvml() {
            Ok(b) => (b, "NVML initialised".into()),
            Err(nvml_err) => match try_tegra() {
                Ok(b) => (
                    b,
                    format!("NVML unavailable ({nvml_err}); devfreq GPU found"),
                ),
                Err(tegra_err) => (
                    GpuBackend::None,
                    format!("NVML unavailable ({nvml_err}); {tegra_err}"),
                ),
            },
        },
    }
}

fn read_cpu_times(proc_root: &Path) -> Result<CpuTimes, CollectError> {
    let path = proc_root.join("stat");
    parse_proc_stat(&read_bytes(&path)?).map_err(|e| e.at(&path))
}

fn read_meminfo(proc_root: &Path) -> Result<MemInfo, CollectError> {
    let path = proc_root.join("meminfo");
    parse_meminfo(&read_bytes(&path)?).map_err(|e| e.at(&path))
}

#[cfg(test)]
mod tests;
