//! `Probe` against the fixture trees in `tests/fixtures/{x86,orin}`, and
//! against damaged copies of them.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};

use super::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn roots_at(base: &Path) -> ProbeRoots {
    ProbeRoots {
        proc_root: base.join("proc"),
        sys_root: base.join("sys"),
        etc_root: base.join("etc"),
        data_path: base.to_path_buf(),
    }
}

fn ts() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 8, 12, 0, 0).unwrap()
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// A writable copy of a fixture tree.
fn fixture_copy(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&fixture(name), tmp.path());
    tmp
}

fn series_errors<'a>(s: &'a Sample, series: &str) -> Vec<&'a str> {
    s.errors
        .iter()
        .filter(|e| e.series == series)
        .map(|e| e.message.as_str())
        .collect()
}

fn nvml_present() -> bool {
    nvml::NvmlGpu::init().is_ok()
}

#[test]
fn cpu_percent_from_two_real_stat_samples_matches_the_hand_computed_value() {
    let x86 = fixture("x86/proc");
    let prev = parse_proc_stat(&fs::read(x86.join("stat")).unwrap()).unwrap();
    let cur = parse_proc_stat(&fs::read(x86.join("stat.next")).unwrap()).unwrap();
    // Deltas over 8 CPUs × 100 jiffies: total 800, idle 613, iowait 8.
    assert_eq!(cur.total() - prev.total(), 800);
    assert_eq!(cur.idle - prev.idle, 613);
    assert_eq!(cur.iowait - prev.iowait, 8);
    let expected = (800.0 - 613.0 - 8.0) / 800.0 * 100.0;
    assert!((cpu_percent(&prev, &cur) - expected).abs() < 1e-9);
    assert!((expected - 22.375).abs() < 1e-9);
}

#[test]
fn orin_stat_has_twelve_cpus_summing_to_the_aggregate() {
    let text = fs::read_to_string(fixture("orin/proc/stat")).unwrap();
    let per_cpu: Vec<CpuTimes> = text
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .map(|l| parse_proc_stat(format!("cpu {}", &l[l.find(' ').unwrap()..]).as_bytes()).unwrap())
        .collect();
    assert_eq!(per_cpu.len(), 12);
    let agg = parse_proc_stat(text.as_bytes()).unwrap();
    assert_eq!(
        per_cpu.iter().map(CpuTimes::total).sum::<u64>(),
        agg.total()
    );
}

#[test]
fn meminfo_fixtures_give_used_and_percent() {
    let orin = parse_meminfo(&fs::read(fixture("orin/proc/meminfo")).unwrap()).unwrap();
    assert_eq!(orin.total_bytes, 64_335_836 * 1024);
    assert_eq!(orin.used_bytes(), (64_335_836 - 54_812_304) * 1024);
    assert!(
        (orin.percent() - 14.803).abs() < 0.001,
        "{}",
        orin.percent()
    );
}

#[test]
fn x86_probe_without_nvml_has_no_gpu_and_every_other_series() {
    if nvml_present() {
        return; // a machine with an NVIDIA driver picks NVML, rightly
    }
    let mut probe = Probe::new(roots_at(&fixture("x86")), GpuBackendChoice::Auto);
    assert_eq!(probe.gpu_backend(), "none");
    let s = probe.sample(ts());
    assert!(s.errors.is_empty(), "{:?}", s.errors);
    assert_eq!(s.ts, ts());
    // The fixture does not move between new() and sample(): no delta, no value.
    assert_eq!(s.cpu_percent, None);
    assert_eq!(s.ram_total_bytes, Some(16_318_332 * 1024));
    assert_eq!(s.ram_used_bytes, Some((16_318_332 - 11_220_084) * 1024));
    assert_eq!(s.ram_percent, Some(31.2));
    // thermal_zone2 (iwlwifi, interface down) has no readable temp: skipped.
    let zones: Vec<(&str, &str, f64)> = s
        .thermal_zones
        .iter()
        .map(|z| (z.zone.as_str(), z.kind.as_str(), z.celsius))
        .collect();
    assert_eq!(
        zones,
        vec![
            ("thermal_zone0", "acpitz", 27.8),
            ("thermal_zone1", "x86_pkg_temp", 52.0)
        ]
    );
    assert_eq!(s.temperature_c, Some(52.0));
    let (total, used, free) = (
        s.disk_total_bytes.unwrap(),
        s.disk_used_bytes.unwrap(),
        s.disk_free_bytes.unwrap(),
    );
    assert!(total > 0 && used <= total && free <= total);
    assert!((0.0..=100.0).contains(&s.disk_percent.unwrap()));
    assert_eq!(s.gpu, None);

    let p = probe.platform();
    assert_eq!(
        p,
        PlatformInfo {
            l4t: None,
            jetpack: None,
            board_model: None,
            os_pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
        }
    );
}

#[test]
fn second_sample_reports_cpu_percent_from_the_primed_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let proc_root = tmp.path().join("proc");
    fs::create_dir_all(&proc_root).unwrap();
    for f in ["stat", "meminfo"] {
        fs::copy(fixture("x86/proc").join(f), proc_root.join(f)).unwrap();
    }
    let roots = ProbeRoots {
        proc_root: proc_root.clone(),
        ..roots_at(&fixture("x86"))
    };
    let mut probe = Probe::new(roots, GpuBackendChoice::None);
    fs::copy(fixture("x86/proc/stat.next"), proc_root.join("stat")).unwrap();
    let s = probe.sample(ts());
    assert_eq!(s.cpu_percent, Some(22.4)); // 22.375 rounded
    // And the reading moves on: the same counters again give no value.
    assert_eq!(probe.sample(ts()).cpu_percent, None);
}

#[test]
fn orin_probe_uses_tegra_with_load_clocks_rails_and_platform() {
    let mut probe = Probe::new(roots_at(&fixture("orin")), GpuBackendChoice::Tegra);
    assert_eq!(probe.gpu_backend(), "tegra");
    let s = probe.sample(ts());
    assert!(s.errors.is_empty(), "{:?}", s.errors);

    // cv2-thermal reads -256000 (CV cluster powered off): skipped.
    assert_eq!(s.thermal_zones.len(), 8);
    assert!(s.thermal_zones.iter().all(|z| z.kind != "cv2-thermal"));
    assert_eq!(s.temperature_c, Some(46.6));
    assert_eq!(s.ram_percent, Some(14.8));

    let gpu = s.gpu.expect("tegra gpu sample");
    assert_eq!(gpu.backend, "tegra");
    assert_eq!(gpu.name, "ga10b");
    assert_eq!(gpu.utilization_percent, 37.2);
    assert_eq!(gpu.clock_mhz, Some(306));
    assert_eq!(gpu.clock_min_mhz, Some(306));
    assert_eq!(gpu.clock_max_mhz, Some(1301));
    assert_eq!(gpu.memory_clock_mhz, Some(3199));
    assert_eq!(gpu.temperature_c, Some(44.8));
    // Unified memory: the GPU's memory is system RAM.
    assert_eq!(gpu.memory_used_bytes, s.ram_used_bytes);
    assert_eq!(gpu.memory_total_bytes, s.ram_total_bytes);
    assert!(gpu.throttle_reasons.is_empty());

    // NC channel and the channel-7 shunt sum are left out.
    let rails: Vec<(&str, f64)> = gpu
        .rails
        .iter()
        .map(|r| (r.name.as_str(), r.power_mw))
        .collect();
    assert_eq!(
        rails,
        vec![
            ("VDD_GPU_SOC", 7948.0),     // 5072 mV × 1567 mA
            ("VDD_CPU_CV", 4022.0),      // 5072 mV × 793 mA
            ("VIN_SYS_5V0", 6148.0),     // 5056 mV × 1216 mA
            ("VDD_IN", 21396.0),         // 19104 mV × 1120 mA
            ("VDDQ_VDD2_1V8AO", 1234.0)  // 5056 mV × 244 mA
        ]
    );
    assert_eq!(gpu.power_mw, Some(7948.0));
    assert_eq!(gpu.board_power_mw, Some(21396.0));

    assert_eq!(
        probe.platform(),
        PlatformInfo {
            l4t: Some("36.4.3".into()),
            jetpack: Some("6.2".into()),
            board_model: Some("NVIDIA Jetson AGX Orin Developer Kit".into()),
            os_pretty_name: Some("Ubuntu 22.04.5 LTS".into()),
        }
    );
}

#[test]
fn orin_board_power_is_the_sum_without_vdd_in() {
    let tmp = fixture_copy("orin");
    fs::remove_dir_all(tmp.path().join("sys/bus/i2c/devices/1-0041")).unwrap();
    let mut probe = Probe::new(roots_at(tmp.path()), GpuBackendChoice::Tegra);
    let gpu = probe.sample(ts()).gpu.unwrap();
    assert_eq!(gpu.rails.len(), 3);
    assert_eq!(gpu.board_power_mw, Some(7948.0 + 4022.0 + 6148.0));
}

#[test]
fn auto_on_orin_picks_tegra_when_nvml_is_absent() {
    if nvml_present() {
        return;
    }
    let probe = Probe::new(roots_at(&fixture("orin")), GpuBackendChoice::Auto);
    assert_eq!(probe.gpu_backend(), "tegra");
}

#[test]
fn explicit_choices_that_are_unavailable_fall_back_to_none() {
    let mut none = Probe::new(roots_at(&fixture("orin")), GpuBackendChoice::None);
    assert_eq!(none.gpu_backend(), "none");
    assert_eq!(none.sample(ts()).gpu, None);

    let tegra_on_x86 = Probe::new(roots_at(&fixture("x86")), GpuBackendChoice::Tegra);
    assert_eq!(tegra_on_x86.gpu_backend(), "none");

    if !nvml_present() {
        let nvml = Probe::new(roots_at(&fixture("x86")), GpuBackendChoice::Nvml);
        assert_eq!(nvml.gpu_backend(), "none");
    }
}

#[test]
fn truncated_proc_stat_fails_only_the_cpu_series() {
    let tmp = fixture_copy("x86");
    let mut probe = Probe::new(roots_at(tmp.path()), GpuBackendChoice::None);
    fs::write(tmp.path().join("proc/stat"), "cpu  1608247 2233 3624").unwrap();
    let s = probe.sample(ts());
    assert_eq!(s.cpu_percent, None);
    let errs = series_errors(&s, "cpu");
    assert_eq!(errs.len(), 1, "{:?}", s.errors);
    assert!(
        errs[0].contains("proc/stat") && errs[0].contains("truncated"),
        "{}",
        errs[0]
    );
    assert_eq!(s.errors.len(), 1);
    assert!(s.ram_percent.is_some() && s.temperature_c.is_some() && s.disk_percent.is_some());
}

#[test]
fn meminfo_without_mem_available_fails_only_the_ram_series() {
    let tmp = fixture_copy("x86");
    let path = tmp.path().join("proc/meminfo");
    let text = fs::read_to_string(&path).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("MemAvailable:"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&path, without).unwrap();
    let s = Probe::new(roots_at(tmp.path()), GpuBackendChoice::None).sample(ts());
    assert_eq!(
        (s.ram_percent, s.ram_used_bytes, s.ram_total_bytes),
        (None, None, None)
    );
    let errs = series_errors(&s, "ram");
    assert_eq!(errs.len(), 1, "{:?}", s.errors);
    assert!(
        errs[0].contains("proc/meminfo") && errs[0].contains("MemAvailable"),
        "{}",
        errs[0]
    );
    assert_eq!(s.errors.len(), 1);
    assert!(s.temperature_c.is_some() && s.disk_percent.is_some());
}

#[test]
fn non_numeric_temperature_fails_only_the_temperature_series() {
    let tmp = fixture_copy("x86");
    let temp = tmp.path().join("sys/class/thermal/thermal_zone1/temp");
    fs::write(&temp, "hot\n").unwrap();
    let s = Probe::new(roots_at(tmp.path()), GpuBackendChoice::None).sample(ts());
    assert_eq!(s.temperature_c, None);
    assert!(s.thermal_zones.is_empty());
    let errs = series_errors(&s, "temperature");
    assert_eq!(errs.len(), 1, "{:?}", s.errors);
    assert!(
        errs[0].contains("thermal_zone1/temp") && errs[0].contains("\"hot\""),
        "{}",
        errs[0]
    );
    assert_eq!(s.errors.len(), 1);
    assert!(s.ram_percent.is_some() && s.disk_percent.is_some());
}

#[test]
fn garbled_tegra_load_fails_the_gpu_series_but_not_the_rest() {
    let tmp = fixture_copy("orin");
    let mut probe = Probe::new(roots_at(tmp.path()), GpuBackendChoice::Tegra);
    let load = tmp
        .path()
        .join("sys/class/devfreq/17000000.ga10b/device/load");
    fs::write(&load, "\n").unwrap();
    let s = probe.sample(ts());
    assert_eq!(s.gpu, None);
    assert_eq!(series_errors(&s, "gpu").len(), 1, "{:?}", s.errors);
    assert!(s.ram_percent.is_some() && s.temperature_c.is_some());
}

#[test]
fn unreadable_rail_is_listed_and_the_gpu_sample_stays() {
    let tmp = fixture_copy("orin");
    let mut probe = Probe::new(roots_at(tmp.path()), GpuBackendChoice::Tegra);
    fs::write(
        tmp.path()
            .join("sys/bus/i2c/devices/1-0040/hwmon/hwmon3/curr2_input"),
        "garbage",
    )
    .unwrap();
    let s = probe.sample(ts());
    let gpu = s.gpu.as_ref().unwrap();
    assert_eq!(gpu.rails.len(), 4);
    let errs = series_errors(&s, "gpu.power");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].contains("VDD_CPU_CV"), "{}", errs[0]);
}

#[test]
fn missing_data_path_fails_only_the_disk_series() {
    let roots = ProbeRoots {
        data_path: PathBuf::from("/nonexistent/arasul/data"),
        ..roots_at(&fixture("x86"))
    };
    let s = Probe::new(roots, GpuBackendChoice::None).sample(ts());
    assert_eq!(s.disk_total_bytes, None);
    assert_eq!(s.disk_percent, None);
    let errs = series_errors(&s, "disk");
    assert!(errs.len() == 1 && errs[0].contains("/nonexistent/arasul/data"));
    assert!(s.ram_percent.is_some());
}

#[test]
fn empty_roots_give_errors_for_cpu_and_ram_and_no_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let mut probe = Probe::new(roots_at(tmp.path()), GpuBackendChoice::Auto);
    let s = probe.sample(ts());
    assert_eq!(series_errors(&s, "cpu").len(), 1);
    assert_eq!(series_errors(&s, "ram").len(), 1);
    // No thermal class (a VM, a container) is normal, not an error.
    assert!(series_errors(&s, "temperature").is_empty());
    assert_eq!(s.temperature_c, None);
    assert!(s.disk_percent.is_some());
    assert_eq!(probe.platform(), PlatformInfo::default());
}

#[test]
fn sample_serialises_with_the_agreed_snake_case_names_and_round_trips() {
    let s = Probe::new(roots_at(&fixture("orin")), GpuBackendChoice::Tegra).sample(ts());
    let json = serde_json::to_value(&s).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "ts",
        "cpu_percent",
        "ram_percent",
        "ram_used_bytes",
        "ram_total_bytes",
        "temperature_c",
        "thermal_zones",
        "disk_total_bytes",
        "disk_used_bytes",
        "disk_free_bytes",
        "disk_percent",
        "gpu",
        "errors",
    ] {
        assert!(keys.contains(&key), "missing {key} in {keys:?}");
    }
    assert_eq!(json["ts"], "2025-01-08T12:00:00Z");
    assert_eq!(json["thermal_zones"][0]["kind"], "cpu-thermal");
    assert_eq!(json["gpu"]["backend"], "tegra");
    assert_eq!(json["gpu"]["utilization_percent"], 37.2);
    assert_eq!(json["gpu"]["rails"][0]["name"], "VDD_GPU_SOC");
    let back: Sample = serde_json::from_value(json).unwrap();
    assert_eq!(back, s);

    assert_eq!(
        serde_json::to_string(&GpuBackendChoice::Nvml).unwrap(),
        "\"nvml\""
    );
    let auto: GpuBackendChoice = serde_json::from_str("\"auto\"").unwrap();
    assert_eq!(auto, GpuBackendChoice::Auto);
}

#[test]
fn probe_can_move_to_a_blocking_thread() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Probe>();
}

#[test]
fn nvml_backend_samples_a_real_gpu_when_one_is_present() {
    if !nvml_present() {
        return; // no NVIDIA driver here; the GPU machine runs this for real
    }
    let mut probe = Probe::new(roots_at(&fixture("x86")), GpuBackendChoice::Auto);
    assert_eq!(probe.gpu_backend(), "nvml");
    let s = probe.sample(ts());
    println!("{}", serde_json::to_string_pretty(&s.gpu).unwrap());
    assert!(series_errors(&s, "gpu").is_empty(), "{:?}", s.errors);
    let gpu = s.gpu.expect("nvml gpu sample");
    assert_eq!(gpu.backend, "nvml");
    assert!(!gpu.name.is_empty());
    assert!((0.0..=100.0).contains(&gpu.utilization_percent));
    let (used, total) = (
        gpu.memory_used_bytes.unwrap(),
        gpu.memory_total_bytes.unwrap(),
    );
    assert!(total > 0 && used <= total);
    assert!(gpu.temperature_c.is_some_and(|t| t > 0.0 && t < 120.0));
    assert!(gpu.clock_mhz.is_some());
    assert!(gpu.rails.is_empty());
}
