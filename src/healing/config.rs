//! The `healing:` config section: every threshold, window and cooldown of
//! SPEC §7, with the SPEC numbers as defaults. Parsing and validation only;
//! [`super::policy::decide`] reads it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealingConfig {
    /// Off: the loop still watches and records, but `decide` returns nothing.
    pub enabled: bool,
    /// The evaluation tick (the loop also runs on every relevant event).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    pub services: ServiceRules,
    pub overload: OverloadRules,
    pub disk: DiskRules,
    pub critical: CriticalRules,
    pub reboot: RebootRules,
    pub cooldowns: Cooldowns,
    /// What the disk cleanup of categories B/C may delete.
    pub cleanup: CleanupRules,
    /// The GPU reset command of category C (argv, e.g. `["nvidia-smi", "-r"]`);
    /// run only with every LLM service stopped. Empty: the step is skipped.
    pub gpu_reset_command: Vec<String>,
    /// How long the throttle and GPU reset commands may run before they are killed.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for HealingConfig {
    fn default() -> Self {
        HealingConfig {
            enabled: true,
            tick: Duration::from_secs(10),
            services: ServiceRules::default(),
            overload: OverloadRules::default(),
            disk: DiskRules::default(),
            critical: CriticalRules::default(),
            reboot: RebootRules::default(),
            cooldowns: Cooldowns::default(),
            cleanup: CleanupRules::default(),
            gpu_reset_command: Vec::new(),
            command_timeout: Duration::from_secs(60),
        }
    }
}

/// The disk cleanup only ever touches these, all under the configured
/// `paths.log_dir` / `paths.state_dir` (never following a symlink out).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CleanupRules {
    /// Rotated logs directly in `paths.log_dir`: `*.log.N` and `*.gz`.
    pub rotated_logs: bool,
    /// Dangling (untagged) Docker images labelled `io.arasul.project=<project>`.
    pub dangling_images: bool,
    /// Entries of `state_dir/updates` not modified for this long (never while
    /// an update is in progress).
    #[serde(with = "humantime_serde")]
    pub staging_max_age: Duration,
    /// Entries of `state_dir/backups` kept, newest first; older ones go.
    pub keep_backups: usize,
    /// Metrics rows older than `metrics.retention` are deleted at once.
    pub metrics_past_retention: bool,
}

impl Default for CleanupRules {
    fn default() -> Self {
        CleanupRules {
            rotated_logs: true,
            dangling_images: true,
            staging_max_age: Duration::from_secs(24 * 3600),
            keep_backups: 3,
            metrics_past_retention: true,
        }
    }
}

/// Category A: a service that is down.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceRules {
    /// Consecutive failed health probes before a running service counts as down.
    pub health_failures: u32,
    /// How long after a restart (or stop + start) the service is checked again.
    #[serde(with = "humantime_serde")]
    pub recheck_after: Duration,
    /// Delay before the first restart of a new round; doubles per round.
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Healthy this long and the backoff starts again from `backoff_initial`.
    #[serde(with = "humantime_serde")]
    pub backoff_reset_after: Duration,
    /// More restarts than this within `restart_window` marks the service failed.
    pub max_restarts: u32,
    #[serde(with = "humantime_serde")]
    pub restart_window: Duration,
}

impl Default for ServiceRules {
    fn default() -> Self {
        ServiceRules {
            health_failures: 3,
            recheck_after: Duration::from_secs(5),
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset_after: Duration::from_secs(600),
            max_restarts: 5,
            restart_window: Duration::from_secs(1800),
        }
    }
}

/// A value above `above` for at least `sustained`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SustainedAbove {
    pub above: f64,
    #[serde(with = "humantime_serde")]
    pub sustained: Duration,
}

impl SustainedAbove {
    pub const fn new(above: f64, sustained_secs: u64) -> Self {
        SustainedAbove {
            above,
            sustained: Duration::from_secs(sustained_secs),
        }
    }
}

/// Category B: overload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadRules {
    /// → unload the LLM models (`keep_alive: 0`).
    pub cpu_percent: SustainedAbove,
    /// → restart the workflow service (n8n).
    pub ram_percent: SustainedAbove,
    /// → reset the LLM session.
    pub gpu_percent: SustainedAbove,
    /// Hysteresis of the percent rules: once above, a rule only lets go
    /// below `above - percent_margin`.
    pub percent_margin: f64,
    /// → run the throttle command.
    pub temp_throttle: SustainedAbove,
    /// → restart the LLM.
    pub temp_restart_llm: SustainedAbove,
    /// Above this the LLM is stopped …
    pub temp_stop_llm_c: f64,
    /// … and started again only below this.
    pub temp_resume_llm_c: f64,
    /// Hysteresis of the temperature rules, in °C.
    pub temp_margin_c: f64,
    /// Still above `temp_stop_llm_c` this long after the LLM was stopped → category C.
    #[serde(with = "humantime_serde")]
    pub heat_escalate_after: Duration,
    /// The command run to throttle (e.g. `nvpmodel -m 1`); the worker runs it,
    /// the policy only asks for it. Empty: the throttle step is skipped.
    pub throttle_command: Vec<String>,
}

impl Default for OverloadRules {
    fn default() -> Self {
        OverloadRules {
            cpu_percent: SustainedAbove::new(90.0, 300),
            ram_percent: SustainedAbove::new(90.0, 120),
            gpu_percent: SustainedAbove::new(95.0, 120),
            percent_margin: 5.0,
            temp_throttle: SustainedAbove::new(83.0, 60),
            temp_restart_llm: SustainedAbove::new(85.0, 0),
            temp_stop_llm_c: 90.0,
            temp_resume_llm_c: 80.0,
            temp_margin_c: 3.0,
            heat_escalate_after: Duration::from_secs(120),
            throttle_command: Vec::new(),
        }
    }
}

/// Disk fill levels (percent of the data partition, reached at or above).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskRules {
    pub warn_percent: f64,
    pub cleanup_percent: f64,
    pub critical_percent: f64,
    pub reboot_percent: f64,
    /// A level is left only below its threshold minus this.
    pub margin_percent: f64,
    /// Still at the reboot level this long after a cleanup → category D.
    #[serde(with = "humantime_serde")]
    pub reboot_after_cleanup: Duration,
}

impl Default for DiskRules {
    fn default() -> Self {
        DiskRules {
            warn_percent: 80.0,
            cleanup_percent: 90.0,
            critical_percent: 95.0,
            reboot_percent: 97.0,
            margin_percent: 2.0,
            reboot_after_cleanup: Duration::from_secs(300),
        }
    }
}

/// Category C triggers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriticalRules {
    /// This many services going down within `service_failures_window` → C.
    pub service_failures: u32,
    #[serde(with = "humantime_serde")]
    pub service_failures_window: Duration,
    /// The database unreachable this long → C.
    #[serde(with = "humantime_serde")]
    pub db_lost_after: Duration,
    /// The Docker engine unreachable this long → C.
    #[serde(with = "humantime_serde")]
    pub docker_lost_after: Duration,
}

impl Default for CriticalRules {
    fn default() -> Self {
        CriticalRules {
            service_failures: 3,
            service_failures_window: Duration::from_secs(600),
            db_lost_after: Duration::from_secs(30),
            docker_lost_after: Duration::from_secs(30),
        }
    }
}

/// Category D: reboot. Off by default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RebootRules {
    pub enabled: bool,
    /// Reboots allowed per hour (counted by the caller, persisted across boots).
    pub max_per_hour: u32,
    /// This many critical events within `critical_events_window` → D.
    pub critical_events: u32,
    #[serde(with = "humantime_serde")]
    pub critical_events_window: Duration,
    /// GPU resets that left the GPU in error before it counts as permanently failing.
    pub gpu_resets_before_reboot: u32,
    /// How long active workflows get to finish before the reboot.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// A prepared reboot whose checks still fail after this is given up.
    #[serde(with = "humantime_serde")]
    pub prepare_timeout: Duration,
    /// The D-Bus address logind is reached on; unset: the system bus.
    pub bus_address: Option<String>,
}

impl Default for RebootRules {
    fn default() -> Self {
        RebootRules {
            enabled: false,
            max_per_hour: 2,
            critical_events: 3,
            critical_events_window: Duration::from_secs(1800),
            gpu_resets_before_reboot: 2,
            drain_timeout: Duration::from_secs(60),
            prepare_timeout: Duration::from_secs(300),
            bus_address: None,
        }
    }
}

/// The least time between two firings of the same action (per service where
/// the action names one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Cooldowns {
    #[serde(with = "humantime_serde")]
    pub unload_llm_models: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_workflow: Duration,
    #[serde(with = "humantime_serde")]
    pub reset_llm_session: Duration,
    #[serde(with = "humantime_serde")]
    pub throttle: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_llm: Duration,
    /// Between two stop requests while the LLM is held stopped (heat, GPU
    /// error) and still shows running.
    #[serde(with = "humantime_serde")]
    pub stop_llm: Duration,
    #[serde(with = "humantime_serde")]
    pub hard_restart: Duration,
    #[serde(with = "humantime_serde")]
    pub disk_cleanup: Duration,
    #[serde(with = "humantime_serde")]
    pub vacuum_analyze: Duration,
    #[serde(with = "humantime_serde")]
    pub gpu_reset: Duration,
    /// Repeats of the same warning or critical event (disk warning, GPU error,
    /// a refused reboot).
    #[serde(with = "humantime_serde")]
    pub repeat_event: Duration,
    /// Between two reboot requests.
    #[serde(with = "humantime_serde")]
    pub reboot: Duration,
}

impl Default for Cooldowns {
    fn default() -> Self {
        let min = |m: u64| Duration::from_secs(m * 60);
        Cooldowns {
            unload_llm_models: min(5),
            restart_workflow: min(10),
            reset_llm_session: min(5),
            throttle: min(5),
            restart_llm: min(10),
            stop_llm: Duration::from_secs(30),
            hard_restart: min(15),
            disk_cleanup: min(30),
            vacuum_analyze: min(60),
            gpu_reset: min(10),
            repeat_event: min(30),
            reboot: min(10),
        }
    }
}

impl HealingConfig {
    /// Rules serde cannot express, as (key, message) pairs with keys under
    /// `healing.` (the shape `config::validate` reports).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut bad = |key: &str, msg: &str| out.push((format!("healing.{key}"), msg.to_string()));
        let s = &self.services;
        for (key, d) in [
            ("tick", self.tick),
            ("services.recheck_after", s.recheck_after),
            ("services.backoff_initial", s.backoff_initial),
            ("services.restart_window", s.restart_window),
            (
                "critical.service_failures_window",
                self.critical.service_failures_window,
            ),
            (
                "reboot.critical_events_window",
                self.reboot.critical_events_window,
            ),
        ] {
            if d.is_zero() {
                bad(key, "must be greater than zero");
            }
        }
        if self.command_timeout.is_zero() {
            bad("command_timeout", "must be greater than zero");
        }
        if self.cleanup.keep_backups == 0 {
            bad("cleanup.keep_backups", "must be at least 1");
        }
        for (key, argv) in [
            ("gpu_reset_command", &self.gpu_reset_command),
            ("overload.throttle_command", &self.overload.throttle_command),
        ] {
            if argv.first().is_some_and(|p| p.trim().is_empty()) {
                bad(key, "the program (first element) must not be empty");
            }
        }
        if s.health_failures == 0 {
            bad("services.health_failures", "must be at least 1");
        }
        if s.backoff_max < s.backoff_initial {
            bad("services.backoff_max", "must not be below backoff_initial");
        }
        if self.critical.service_failures == 0 {
            bad("critical.service_failures", "must be at least 1");
        }
        if self.reboot.critical_events == 0 {
            bad("reboot.critical_events", "must be at least 1");
        }
        let o = &self.overload;
        for (key, v) in [
            ("overload.cpu_percent.above", o.cpu_percent.above),
            ("overload.ram_percent.above", o.ram_percent.above),
            ("overload.gpu_percent.above", o.gpu_percent.above),
            ("disk.warn_percent", self.disk.warn_percent),
            ("disk.cleanup_percent", self.disk.cleanup_percent),
            ("disk.critical_percent", self.disk.critical_percent),
            ("disk.reboot_percent", self.disk.reboot_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                bad(key, "must be between 0 and 100");
            }
        }
        for (key, v) in [
            ("overload.percent_margin", o.percent_margin),
            ("overload.temp_margin_c", o.temp_margin_c),
            ("disk.margin_percent", self.disk.margin_percent),
        ] {
            if v.is_nan() || v < 0.0 {
                bad(key, "must not be negative");
            }
        }
        let d = &self.disk;
        if !(d.warn_percent <= d.cleanup_percent
            && d.cleanup_percent <= d.critical_percent
            && d.critical_percent <= d.reboot_percent)
        {
            bad(
                "disk",
                "levels must rise: warn <= cleanup <= critical <= reboot",
            );
        }
        if !(o.temp_throttle.above <= o.temp_restart_llm.above
            && o.temp_restart_llm.above <= o.temp_stop_llm_c)
        {
            bad(
                "overload",
                "temperatures must rise: temp_throttle <= temp_restart_llm <= temp_stop_llm_c",
            );
        }
        if o.temp_resume_llm_c >= o.temp_stop_llm_c {
            bad(
                "overload.temp_resume_llm_c",
                "must be below temp_stop_llm_c",
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_spec_numbers_and_valid() {
        let c = HealingConfig::default();
        assert!(c.validate().is_empty(), "{:?}", c.validate());
        assert_eq!(c.services.health_failures, 3);
        assert_eq!(c.services.backoff_max, Duration::from_secs(300));
        assert_eq!(c.overload.cpu_percent, SustainedAbove::new(90.0, 300));
        assert!(!c.reboot.enabled);
        assert_eq!(c.reboot.max_per_hour, 2);
    }

    #[test]
    fn yaml_takes_humantime_and_rejects_unknown_keys() {
        let c: HealingConfig = serde_yaml::from_str(
            "services:\n  backoff_max: 2m\noverload:\n  cpu_percent: { above: 80, sustained: 30s }\nreboot:\n  enabled: true\n",
        )
        .unwrap();
        assert_eq!(c.services.backoff_max, Duration::from_secs(120));
        assert_eq!(c.services.backoff_initial, Duration::from_secs(10));
        assert_eq!(c.overload.cpu_percent, SustainedAbove::new(80.0, 30));
        assert!(c.reboot.enabled);
        assert!(serde_yaml::from_str::<HealingConfig>("services:\n  backof_max: 2m\n").is_err());
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = HealingConfig::default();
        c.disk.cleanup_percent = 99.0;
        c.services.backoff_max = Duration::from_secs(1);
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["healing.services.backoff_max", "healing.disk"]);
    }
}
