//! Discrete NVIDIA GPUs through NVML. `libnvidia-ml.so.1` is opened at run
//! time, so the binary runs where it is absent: init failure only means the
//! backend is not available. Samples device 0 (the appliance has one GPU).

use nvml_wrapper::Nvml;
use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};

use super::{CollectError, GpuSample, round1};

/// Stable lowercase names for the throttle reasons worth reporting.
const THROTTLE_NAMES: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

/// The active throttle reasons as lowercase names, in a fixed order.
pub fn throttle_reason_names(reasons: ThrottleReasons) -> Vec<String> {
    THROTTLE_NAMES
        .iter()
        .filter(|(flag, _)| !flag.is_empty() && reasons.contains(*flag))
        .map(|(_, name)| (*name).to_string())
        .collect()
}

pub(super) struct NvmlGpu {
    nvml: Nvml,
    name: String,
}

impl NvmlGpu {
    /// Loads NVML and checks there is a device to sample. The error says why
    /// not, for the one log line that reports the backend choice.
    pub(super) fn init() -> Result<NvmlGpu, String> {
        let nvml = Nvml::init().map_err(|e| e.to_string())?;
        let count = nvml.device_count().map_err(|e| e.to_string())?;
        if count == 0 {
            return Err("NVML sees no GPU".to_string());
        }
        let name = nvml
            .device_by_index(0)
            .and_then(|d| d.name())
            .map_err(|e| format!("NVML device 0: {e}"))?;
        Ok(NvmlGpu { nvml, name })
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// Utilisation is required (it is the series); the rest is reported where
    /// the device supports it (GeForce cards lack some queries).
    pub(super) fn sample(&self) -> Result<GpuSample, CollectError> {
        let nvml_err = |what: &str, e: nvml_wrapper::error::NvmlError| {
            CollectError::Unavailable(format!("NVML {what}: {e}"))
        };
        let dev = self
            .nvml
            .device_by_index(0)
            .map_err(|e| nvml_err("device 0", e))?;
        let util = dev
            .utilization_rates()
            .map_err(|e| nvml_err("utilization", e))?;
        let mem = dev.memory_info().ok();
        Ok(GpuSample {
            backend: "nvml".to_string(),
            name: self.name.clone(),
            utilization_percent: round1(f64::from(util.gpu).clamp(0.0, 100.0)),
            memory_used_bytes: mem.as_ref().map(|m| m.used),
            memory_total_bytes: mem.as_ref().map(|m| m.total),
            temperature_c: dev.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
            power_mw: dev.power_usage().ok().map(f64::from),
            clock_mhz: dev.clock_info(Clock::Graphics).ok(),
            clock_min_mhz: None,
            clock_max_mhz: dev.max_clock_info(Clock::Graphics).ok(),
            memory_clock_mhz: dev.clock_info(Clock::Memory).ok(),
            throttle_reasons: dev
                .current_throttle_reasons()
                .map(throttle_reason_names)
                .unwrap_or_default(),
            rails: Vec::new(),
            board_power_mw: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_reasons_become_lowercase_names() {
        let r = ThrottleReasons::SW_POWER_CAP | ThrottleReasons::HW_THERMAL_SLOWDOWN;
        assert_eq!(
            throttle_reason_names(r),
            vec!["sw_power_cap", "hw_thermal_slowdown"]
        );
        assert!(throttle_reason_names(ThrottleReasons::NONE).is_empty());
    }

    #[test]
    fn nvml_absent_is_an_error_not_a_panic() {
        // This machine has no NVIDIA driver; where it has one, init succeeds.
        if let Err(e) = NvmlGpu::init() {
            assert!(!e.is_empty());
        }
    }
}
