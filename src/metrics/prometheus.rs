//! `GET /metrics` in the Prometheus text exposition format (0.0.4): the
//! latest sample plus the daemon's own counters. Pure: a function of what it
//! is given, checked by `promtool check metrics` in the tests.

use std::fmt::Write;

use super::collect::Sample;
use crate::tasks::{WorkerState, WorkerStatus};

pub struct Exposition<'a> {
    pub sample: Option<&'a Sample>,
    pub samples_taken: u64,
    pub samples_persisted: u64,
    pub samples_dropped: u64,
    pub samples_pending: u64,
    pub db_up: bool,
    pub stream_clients: usize,
    pub workers: &'a [WorkerStatus],
    pub version: &'a str,
    pub build_hash: &'a str,
    pub gpu_backend: &'a str,
    pub uptime_seconds: f64,
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }
    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let escaped = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.0, "{k}=\"{escaped}\"");
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {v}");
    }
    fn gauge(&mut self, name: &str, help: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.family(name, "gauge", help);
            self.value(name, &[], v);
        }
    }
}

pub fn render(e: &Exposition) -> String {
    let mut o = Out(String::with_capacity(4096));
    o.family(
        "arasul_build_info",
        "gauge",
        "Version and build of arasuld.",
    );
    o.value(
        "arasul_build_info",
        &[
            ("version", e.version),
            ("build_hash", e.build_hash),
            ("gpu_backend", e.gpu_backend),
        ],
        1.0,
    );
    o.gauge(
        "arasul_uptime_seconds",
        "Seconds since arasuld started.",
        Some(e.uptime_seconds),
    );
    if let Some(s) = e.sample {
        let b = |v: Option<u64>| v.map(|x| x as f64);
        o.gauge(
            "arasul_cpu_usage_percent",
            "CPU busy over the last interval, percent.",
            s.cpu_percent,
        );
        o.gauge(
            "arasul_memory_usage_percent",
            "RAM in use (total minus MemAvailable), percent.",
            s.ram_percent,
        );
        o.gauge(
            "arasul_memory_used_bytes",
            "RAM in use, bytes.",
            b(s.ram_used_bytes),
        );
        o.gauge(
            "arasul_memory_total_bytes",
            "RAM installed, bytes.",
            b(s.ram_total_bytes),
        );
        o.gauge(
            "arasul_temperature_max_celsius",
            "Hottest thermal zone, degrees Celsius.",
            s.temperature_c,
        );
        if !s.thermal_zones.is_empty() {
            o.family(
                "arasul_thermal_zone_celsius",
                "gauge",
                "Temperature of each thermal zone, degrees Celsius.",
            );
            for z in &s.thermal_zones {
                o.value(
                    "arasul_thermal_zone_celsius",
                    &[("zone", &z.zone), ("type", &z.kind)],
                    z.celsius,
                );
            }
        }
        o.gauge(
            "arasul_disk_usage_percent",
            "Data partition in use, percent.",
            s.disk_percent,
        );
        o.gauge(
            "arasul_disk_used_bytes",
            "Data partition in use, bytes.",
            b(s.disk_used_bytes),
        );
        o.gauge(
            "arasul_disk_total_bytes",
            "Data partition size, bytes.",
            b(s.disk_total_bytes),
        );
        if let Some(g) = &s.gpu {
            o.gauge(
                "arasul_gpu_usage_percent",
                "GPU utilisation, percent.",
                Some(g.utilization_percent),
            );
            o.gauge(
                "arasul_gpu_memory_used_bytes",
                "GPU memory in use, bytes.",
                b(g.memory_used_bytes),
            );
            o.gauge(
                "arasul_gpu_memory_total_bytes",
                "GPU memory, bytes.",
                b(g.memory_total_bytes),
            );
            o.gauge(
                "arasul_gpu_temperature_celsius",
                "GPU temperature, degrees Celsius.",
                g.temperature_c,
            );
            o.gauge(
                "arasul_gpu_power_watts",
                "GPU power draw, watts.",
                g.power_mw.map(|mw| mw / 1000.0),
            );
            o.gauge(
                "arasul_gpu_clock_hertz",
                "GPU clock, hertz.",
                g.clock_mhz.map(|m| m as f64 * 1e6),
            );
        }
        if !s.errors.is_empty() {
            o.family(
                "arasul_collector_error",
                "gauge",
                "1 for each series that failed in the last sample.",
            );
            for err in &s.errors {
                o.value("arasul_collector_error", &[("series", &err.series)], 1.0);
            }
        }
    }
    o.family(
        "arasul_metrics_samples_total",
        "counter",
        "Samples taken since start.",
    );
    o.value("arasul_metrics_samples_total", &[], e.samples_taken as f64);
    o.family(
        "arasul_metrics_persisted_total",
        "counter",
        "Samples written to PostgreSQL since start.",
    );
    o.value(
        "arasul_metrics_persisted_total",
        &[],
        e.samples_persisted as f64,
    );
    o.family(
        "arasul_metrics_dropped_total",
        "counter",
        "Samples lost because the buffer overflowed while the database was down.",
    );
    o.value(
        "arasul_metrics_dropped_total",
        &[],
        e.samples_dropped as f64,
    );
    o.gauge(
        "arasul_metrics_pending",
        "Samples waiting to be written to PostgreSQL.",
        Some(e.samples_pending as f64),
    );
    o.gauge(
        "arasul_database_up",
        "1 when PostgreSQL is reachable.",
        Some(if e.db_up { 1.0 } else { 0.0 }),
    );
    o.gauge(
        "arasul_live_stream_clients",
        "Connected WebSocket live-stream clients.",
        Some(e.stream_clients as f64),
    );
    o.family(
        "arasul_worker_up",
        "gauge",
        "1 while the named worker runs (or waits to restart).",
    );
    for w in e.workers {
        let up = matches!(w.state, WorkerState::Running | WorkerState::BackingOff);
        o.value(
            "arasul_worker_up",
            &[("worker", &w.name)],
            if up { 1.0 } else { 0.0 },
        );
    }
    o.family(
        "arasul_worker_errors_total",
        "counter",
        "Errors and panics of the named worker.",
    );
    for w in e.workers {
        o.value(
            "arasul_worker_errors_total",
            &[("worker", &w.name)],
            w.errors as f64,
        );
    }
    o.0
}
