//! `GET /metrics` in the Prometheus text exposition format (0.0.4): the
//! latest sample, the daemon's own process, its workers, the supervised
//! services, and the counters of what it did (see [`super::counters`]).
//! Pure: a function of what it is given, checked by `promtool check
//! metrics` in the tests. Conventions: base units (`_bytes`, `_seconds`,
//! `_ratio` in 0..1), `_total` on counters, one HELP and TYPE per family,
//! and `arasul_collector_up{series}` always there for each series sampled.

use std::fmt::Write;

use super::collect::Sample;
use super::collect::process::ProcessStats;
use super::counters::{CounterFamily, HTTP_BUCKETS, HttpRouteStats};
use crate::docker::{ServiceState, ServiceStatus};
use crate::tasks::{WorkerKind, WorkerState, WorkerStatus};

pub struct Exposition<'a> {
    pub sample: Option<&'a Sample>,
    pub samples_taken: u64,
    pub samples_persisted: u64,
    pub samples_dropped: u64,
    pub samples_pending: u64,
    pub db_up: bool,
    pub stream_clients: usize,
    pub workers: &'a [WorkerStatus],
    pub services: &'a [ServiceStatus],
    /// None: `/proc/self` could not be read (`collector_up{series="process"} 0`).
    pub process: Option<&'a ProcessStats>,
    pub http: &'a [HttpRouteStats],
    pub counters: &'a [CounterFamily],
    pub version: &'a str,
    pub build_hash: &'a str,
    pub gpu_backend: &'a str,
    /// Unix time the daemon started, seconds.
    pub start_time_seconds: f64,
}

/// A sample's value: counts stay integers, anything else is a float.
#[derive(Clone, Copy)]
enum Num {
    Int(u64),
    Float(f64),
}

impl From<u64> for Num {
    fn from(v: u64) -> Num {
        Num::Int(v)
    }
}
impl From<f64> for Num {
    fn from(v: f64) -> Num {
        Num::Float(v)
    }
}
impl From<bool> for Num {
    fn from(v: bool) -> Num {
        Num::Int(u64::from(v))
    }
}

/// A float as the format spells it: `+Inf`, `-Inf`, `NaN`, else decimal.
fn float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn value(&mut self, name: &str, labels: &[(&str, &str)], v: impl Into<Num>) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"");
                for c in val.chars() {
                    match c {
                        '\\' => self.0.push_str("\\\\"),
                        '"' => self.0.push_str("\\\""),
                        '\n' => self.0.push_str("\\n"),
                        c => self.0.push(c),
                    }
                }
                self.0.push('"');
            }
            self.0.push('}');
        }
        self.0.push(' ');
        match v.into() {
            Num::Int(n) => {
                let _ = write!(self.0, "{n}");
            }
            Num::Float(f) => float(&mut self.0, f),
        }
        self.0.push('\n');
    }

    /// A family of one unlabelled sample, left out when there is no value.
    fn single(&mut self, name: &str, kind: &str, help: &str, v: Option<impl Into<Num>>) {
        if let Some(v) = v {
            self.family(name, kind, help);
            self.value(name, &[], v);
        }
    }

    /// A family with one sample per item, left out when there are none.
    fn each<T>(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        items: &[T],
        mut sample: impl FnMut(&mut Self, &T),
    ) {
        if items.is_empty() {
            return;
        }
        self.family(name, kind, help);
        for it in items {
            sample(self, it);
        }
    }
}

/// A percentage as a ratio in 0..1.
fn ratio(percent: Option<f64>) -> Option<f64> {
    percent.map(|p| p / 100.0)
}

pub fn render(e: &Exposition) -> String {
    let mut o = Out(String::with_capacity(16 * 1024));
    build_and_process(&mut o, e);
    node(&mut o, e);
    pipeline(&mut o, e);
    workers(&mut o, e.workers);
    services(&mut o, e.services);
    for f in e.counters {
        counter_family(&mut o, f);
    }
    http(&mut o, e.http);
    o.0
}

fn build_and_process(o: &mut Out, e: &Exposition) {
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
        1u64,
    );
    o.single(
        "arasul_start_time_seconds",
        "gauge",
        "When arasuld started, Unix time in seconds.",
        Some(e.start_time_seconds),
    );
    let Some(p) = e.process else { return };
    o.single(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        Some(p.cpu_seconds),
    );
    o.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        Some(p.resident_bytes),
    );
    o.single(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        Some(p.virtual_bytes),
    );
    o.single(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        Some(p.open_fds),
    );
    o.single(
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        p.max_fds,
    );
    o.single(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        Some(p.start_time_seconds),
    );
}

/// The series the sampler reads with this GPU backend (`gpu.clock` and
/// `gpu.power` are parts of the tegra GPU that can fail alone).
fn sampled_series(gpu_backend: &str) -> &'static [&'static str] {
    match gpu_backend {
        "tegra" => &[
            "cpu",
            "ram",
            "temperature",
            "disk",
            "gpu",
            "gpu.clock",
            "gpu.power",
        ],
        "nvml" => &["cpu", "ram", "temperature", "disk", "gpu"],
        _ => &["cpu", "ram", "temperature", "disk"],
    }
}

fn node(o: &mut Out, e: &Exposition) {
    o.family(
        "arasul_collector_up",
        "gauge",
        "1 when the series was read in the last sample (0: it failed, or no sample yet); process: the daemon's own /proc/self.",
    );
    let failed = |series: &str| {
        e.sample
            .is_none_or(|s| s.errors.iter().any(|err| err.series == series))
    };
    let known = sampled_series(e.gpu_backend);
    for series in known {
        o.value(
            "arasul_collector_up",
            &[("series", series)],
            !failed(series),
        );
    }
    // A failing series this list does not name is still shown.
    if let Some(s) = e.sample {
        let mut extra: Vec<&str> = s
            .errors
            .iter()
            .map(|err| err.series.as_str())
            .filter(|series| !known.contains(series) && *series != "process")
            .collect();
        extra.sort_unstable();
        extra.dedup();
        for series in extra {
            o.value("arasul_collector_up", &[("series", series)], false);
        }
    }
    o.value(
        "arasul_collector_up",
        &[("series", "process")],
        e.process.is_some(),
    );

    let Some(s) = e.sample else { return };
    o.single(
        "arasul_cpu_usage_ratio",
        "gauge",
        "CPU busy over the last sampling interval, 0 to 1.",
        ratio(s.cpu_percent),
    );
    o.single(
        "arasul_memory_usage_ratio",
        "gauge",
        "RAM in use (total minus MemAvailable), 0 to 1.",
        ratio(s.ram_percent),
    );
    o.single(
        "arasul_memory_used_bytes",
        "gauge",
        "RAM in use (total minus MemAvailable), bytes.",
        s.ram_used_bytes,
    );
    o.single(
        "arasul_memory_total_bytes",
        "gauge",
        "RAM installed, bytes.",
        s.ram_total_bytes,
    );
    o.single(
        "arasul_temperature_max_celsius",
        "gauge",
        "Hottest thermal zone, degrees Celsius.",
        s.temperature_c,
    );
    o.each(
        "arasul_thermal_zone_celsius",
        "gauge",
        "Temperature of each thermal zone, degrees Celsius.",
        &s.thermal_zones,
        |o, z| {
            o.value(
                "arasul_thermal_zone_celsius",
                &[("zone", &z.zone), ("type", &z.kind)],
                z.celsius,
            )
        },
    );
    o.single(
        "arasul_disk_usage_ratio",
        "gauge",
        "Data partition in use, 0 to 1.",
        ratio(s.disk_percent),
    );
    o.single(
        "arasul_disk_used_bytes",
        "gauge",
        "Data partition in use, bytes.",
        s.disk_used_bytes,
    );
    o.single(
        "arasul_disk_available_bytes",
        "gauge",
        "Data partition free for unprivileged users, bytes.",
        s.disk_free_bytes,
    );
    o.single(
        "arasul_disk_total_bytes",
        "gauge",
        "Data partition size, bytes.",
        s.disk_total_bytes,
    );
    let Some(g) = &s.gpu else { return };
    o.single(
        "arasul_gpu_usage_ratio",
        "gauge",
        "GPU utilisation, 0 to 1.",
        ratio(Some(g.utilization_percent)),
    );
    o.single(
        "arasul_gpu_memory_used_bytes",
        "gauge",
        "GPU memory in use, bytes.",
        g.memory_used_bytes,
    );
    o.single(
        "arasul_gpu_memory_total_bytes",
        "gauge",
        "GPU memory, bytes.",
        g.memory_total_bytes,
    );
    o.single(
        "arasul_gpu_temperature_celsius",
        "gauge",
        "GPU temperature, degrees Celsius.",
        g.temperature_c,
    );
    o.single(
        "arasul_gpu_power_watts",
        "gauge",
        "GPU power draw, watts.",
        g.power_mw.map(|mw| mw / 1000.0),
    );
    o.single(
        "arasul_gpu_clock_hertz",
        "gauge",
        "GPU clock, hertz.",
        g.clock_mhz.map(|m| u64::from(m) * 1_000_000),
    );
}

fn pipeline(o: &mut Out, e: &Exposition) {
    o.single(
        "arasul_metrics_samples_total",
        "counter",
        "Samples taken since start.",
        Some(e.samples_taken),
    );
    o.single(
        "arasul_metrics_persisted_total",
        "counter",
        "Samples written to PostgreSQL since start.",
        Some(e.samples_persisted),
    );
    o.single(
        "arasul_metrics_dropped_total",
        "counter",
        "Samples lost because the buffer overflowed while the database was down.",
        Some(e.samples_dropped),
    );
    o.single(
        "arasul_metrics_pending",
        "gauge",
        "Samples waiting to be written to PostgreSQL.",
        Some(e.samples_pending),
    );
    o.single(
        "arasul_database_up",
        "gauge",
        "1 when PostgreSQL is reachable.",
        Some(e.db_up),
    );
    o.single(
        "arasul_live_stream_clients",
        "gauge",
        "Connected WebSocket live-stream clients.",
        Some(e.stream_clients as u64),
    );
}

fn workers(o: &mut Out, workers: &[WorkerStatus]) {
    o.each(
        "arasul_worker_up",
        "gauge",
        "1 while the named worker runs (or waits to restart).",
        workers,
        |o, w| {
            let up = matches!(w.state, WorkerState::Running | WorkerState::BackingOff);
            o.value("arasul_worker_up", &[("worker", &w.name)], up)
        },
    );
    o.each(
        "arasul_worker_errors_total",
        "counter",
        "Errors and panics of the named worker.",
        workers,
        |o, w| {
            o.value(
                "arasul_worker_errors_total",
                &[("worker", &w.name)],
                w.errors,
            )
        },
    );
    o.each(
        "arasul_worker_restarts_total",
        "counter",
        "Restarts of the named worker after an error.",
        workers,
        |o, w| {
            o.value(
                "arasul_worker_restarts_total",
                &[("worker", &w.name)],
                w.restarts,
            )
        },
    );
    o.each(
        "arasul_worker_heartbeat_age_seconds",
        "gauge",
        "Seconds since the worker last showed progress; core workers must beat (the systemd watchdog depends on them).",
        workers,
        |o, w| {
            let kind = match w.kind {
                WorkerKind::Core => "core",
                WorkerKind::Auxiliary => "auxiliary",
            };
            o.value(
                "arasul_worker_heartbeat_age_seconds",
                &[("worker", &w.name), ("kind", kind)],
                w.heartbeat_age_ms as f64 / 1000.0,
            )
        },
    );
}

fn services(o: &mut Out, services: &[ServiceStatus]) {
    o.each(
        "arasul_service_up",
        "gauge",
        "1 when the supervised service runs and passes its health check.",
        services,
        |o, s| {
            o.value(
                "arasul_service_up",
                &[("service", &s.name)],
                s.state == ServiceState::Healthy,
            )
        },
    );
    o.each(
        "arasul_service_state",
        "gauge",
        "1 for the state the supervised service is in, 0 for the others.",
        services,
        |o, s| {
            for state in ServiceState::ALL {
                o.value(
                    "arasul_service_state",
                    &[("service", &s.name), ("state", state.as_str())],
                    s.state == state,
                );
            }
        },
    );
    o.each(
        "arasul_service_stopped_on_purpose",
        "gauge",
        "1 when the service was stopped through the API or config: nothing restarts it, and it is not down.",
        services,
        |o, s| {
            o.value(
                "arasul_service_stopped_on_purpose",
                &[("service", &s.name)],
                s.stopped_on_purpose,
            )
        },
    );
    o.each(
        "arasul_service_restarts_total",
        "counter",
        "Restarts of the service that arasuld made or saw Docker make.",
        services,
        |o, s| {
            o.value(
                "arasul_service_restarts_total",
                &[("service", &s.name)],
                u64::from(s.restart_count),
            )
        },
    );
    let exited: Vec<(&str, i64, bool)> = services
        .iter()
        .filter_map(|s| Some((s.name.as_str(), s.last_exit_code?, s.oom_killed)))
        .collect();
    o.each(
        "arasul_service_last_exit_code",
        "gauge",
        "Exit code of the service's container while it is exited (137: killed).",
        &exited,
        |o, (name, code, _)| {
            o.value(
                "arasul_service_last_exit_code",
                &[("service", name)],
                *code as f64,
            )
        },
    );
    o.each(
        "arasul_service_oom_killed",
        "gauge",
        "1 when the service's exited container was ended by the out-of-memory killer.",
        &exited,
        |o, (name, _, oom)| o.value("arasul_service_oom_killed", &[("service", name)], *oom),
    );
}

fn counter_family(o: &mut Out, f: &CounterFamily) {
    o.each(f.name, "counter", f.help, &f.rows, |o, (values, n)| {
        let labels: Vec<(&str, &str)> = f
            .labels
            .iter()
            .copied()
            .zip(values.iter().copied())
            .collect();
        o.value(f.name, &labels, *n)
    });
}

fn http(o: &mut Out, routes: &[HttpRouteStats]) {
    let seen: Vec<&HttpRouteStats> = routes
        .iter()
        .filter(|r| r.cumulative_buckets.last().is_some_and(|&n| n > 0))
        .collect();
    const REQUESTS: &str = "arasul_http_requests_total";
    const DURATION: &str = "arasul_http_request_duration_seconds";
    const BUCKET: &str = "arasul_http_request_duration_seconds_bucket";
    const SUM: &str = "arasul_http_request_duration_seconds_sum";
    const COUNT: &str = "arasul_http_request_duration_seconds_count";
    o.each(
        REQUESTS,
        "counter",
        "HTTP requests answered, by route class and status code (a code without its own label counts as its class, 4xx).",
        &seen,
        |o, r| {
            for (code, n) in &r.requests {
                o.value(
                    REQUESTS,
                    &[("route", r.route.as_str()), ("code", code)],
                    *n,
                );
            }
        },
    );
    o.each(
        DURATION,
        "histogram",
        "Time from a request's arrival to its response head, by route class, seconds.",
        &seen,
        |o, r| {
            let route = r.route.as_str();
            let mut le = String::new();
            for (i, n) in r.cumulative_buckets.iter().enumerate() {
                le.clear();
                float(
                    &mut le,
                    HTTP_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY),
                );
                o.value(BUCKET, &[("route", route), ("le", &le)], *n);
            }
            o.value(SUM, &[("route", route)], r.sum_seconds);
            let count = r.cumulative_buckets.last().copied().unwrap_or(0);
            o.value(COUNT, &[("route", route)], count);
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::collect::{GpuSample, SeriesError, ThermalReading};
    use crate::metrics::counters::{HttpRoute, HttpStats, LabelledCounter};
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    fn sample() -> Sample {
        Sample {
            ts: chrono::Utc::now(),
            cpu_percent: Some(12.5),
            ram_percent: Some(40.0),
            ram_used_bytes: Some(4 << 30),
            ram_total_bytes: Some(10 << 30),
            temperature_c: Some(51.0),
            thermal_zones: vec![ThermalReading {
                zone: "thermal_zone0".into(),
                kind: "cpu \"big\"\\cluster".into(),
                celsius: 51.0,
            }],
            disk_total_bytes: Some(100 << 30),
            disk_used_bytes: Some(95 << 30),
            disk_free_bytes: Some(5 << 30),
            disk_percent: Some(95.0),
            gpu: Some(GpuSample {
                backend: "tegra".into(),
                name: "ga10b".into(),
                utilization_percent: 30.0,
                memory_used_bytes: None,
                memory_total_bytes: None,
                temperature_c: Some(48.5),
                power_mw: Some(4500.0),
                clock_mhz: Some(918),
                clock_min_mhz: None,
                clock_max_mhz: None,
                memory_clock_mhz: None,
                throttle_reasons: vec![],
                rails: vec![],
                board_power_mw: None,
            }),
            errors: vec![SeriesError {
                series: "gpu.power".into(),
                message: "no rail".into(),
            }],
        }
    }

    fn worker(name: &str, kind: WorkerKind, state: WorkerState) -> WorkerStatus {
        WorkerStatus {
            name: name.into(),
            kind,
            state,
            errors: 2,
            restarts: 1,
            last_error: None,
            last_error_at: None,
            started_at: None,
            heartbeat_age_ms: 1500,
        }
    }

    /// An exposition with every family present.
    fn full() -> String {
        let s = sample();
        let workers = [
            worker("supervisor", WorkerKind::Core, WorkerState::Running),
            worker("backups", WorkerKind::Auxiliary, WorkerState::Finished),
        ];
        let services = [
            ServiceStatus {
                restart_count: 3,
                last_exit_code: Some(137),
                ..crate::docker::test_status(
                    "llm",
                    crate::docker::Role::Llm,
                    ServiceState::Unhealthy,
                    None,
                )
            },
            crate::docker::test_status(
                "n8n",
                crate::docker::Role::Workflow,
                ServiceState::Healthy,
                None,
            ),
        ];
        let http = HttpStats::new();
        http.observe(HttpRoute::Health, 200, Duration::from_micros(200));
        http.observe(HttpRoute::Api, 429, Duration::from_millis(3));
        http.observe(HttpRoute::Api, 418, Duration::from_secs(12));
        static C: LabelledCounter<2> = LabelledCounter::new(
            "arasul_test_things_total",
            "Things.",
            ["kind", "result"],
            &[["a", "ok"]],
        );
        C.inc(["a", "failed"]);
        let process = ProcessStats {
            cpu_seconds: 1.25,
            resident_bytes: 20 << 20,
            virtual_bytes: 800 << 20,
            open_fds: 12,
            max_fds: Some(1024),
            start_time_seconds: 1_767_225_600.5,
        };
        render(&Exposition {
            sample: Some(&s),
            samples_taken: 10,
            samples_persisted: 9,
            samples_dropped: 0,
            samples_pending: 1,
            db_up: true,
            stream_clients: 2,
            workers: &workers,
            services: &services,
            process: Some(&process),
            http: &http.snapshot(),
            counters: &[C.snapshot()],
            version: "1.2.3",
            build_hash: "abc",
            gpu_backend: "tegra",
            start_time_seconds: 1_767_225_601.0,
        })
    }

    /// An exposition taken apart line by line.
    struct Lines {
        /// (family, TYPE) in order of appearance.
        types: Vec<(String, String)>,
        /// The families with a HELP line.
        helps: BTreeSet<String>,
        /// (metric name, whole line) of each sample.
        samples: Vec<(String, String)>,
    }

    fn parse(text: &str) -> Lines {
        let mut l = Lines {
            types: Vec::new(),
            helps: BTreeSet::new(),
            samples: Vec::new(),
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                l.types.push((name.to_string(), kind.to_string()));
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                l.helps.insert(rest.split_once(' ').unwrap().0.to_string());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                l.samples.push((name.to_string(), line.to_string()));
            }
        }
        l
    }

    #[test]
    fn every_family_has_help_and_type_once_and_every_sample_a_family() {
        let text = full();
        let Lines {
            types,
            helps,
            samples,
        } = parse(&text);
        let names: BTreeSet<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.len(), types.len(), "a family declared twice:\n{text}");
        assert_eq!(
            helps,
            names.iter().map(|n| n.to_string()).collect(),
            "HELP and TYPE name the same families"
        );
        let kinds: BTreeMap<&str, &str> = types
            .iter()
            .map(|(n, k)| (n.as_str(), k.as_str()))
            .collect();
        for (name, line) in &samples {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s)
                        .filter(|f| kinds.get(f) == Some(&"histogram"))
                })
                .unwrap_or(name);
            assert!(kinds.contains_key(family), "no TYPE for {line}");
        }
        for (name, kind) in &types {
            assert!(
                name.starts_with("arasul_") || name.starts_with("process_"),
                "{name}"
            );
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "{name}: counters and only counters end in _total"
            );
            assert!(!name.contains("percent"), "{name}: a ratio in 0..1 instead");
            assert!(!name.contains("uptime"), "{name}: a start time instead");
        }
        for family in [
            "arasul_service_up",
            "arasul_service_state",
            "arasul_service_restarts_total",
            "arasul_service_last_exit_code",
            "arasul_http_requests_total",
            "arasul_http_request_duration_seconds",
            "arasul_worker_heartbeat_age_seconds",
            "process_cpu_seconds_total",
            "process_open_fds",
            "arasul_start_time_seconds",
            "arasul_test_things_total",
        ] {
            assert!(names.contains(family), "{family} missing:\n{text}");
        }
    }

    #[test]
    fn values_are_in_base_units_and_labels_escaped() {
        let text = full();
        for line in [
            "arasul_cpu_usage_ratio 0.125",
            "arasul_disk_usage_ratio 0.95",
            "arasul_gpu_usage_ratio 0.3",
            "arasul_gpu_clock_hertz 918000000",
            "arasul_gpu_power_watts 4.5",
            "arasul_memory_total_bytes 10737418240",
            "arasul_start_time_seconds 1767225601",
            "process_start_time_seconds 1767225600.5",
            "process_resident_memory_bytes 20971520",
            "arasul_worker_heartbeat_age_seconds{worker=\"supervisor\",kind=\"core\"} 1.5",
            "arasul_worker_up{worker=\"backups\"} 0",
            "arasul_service_up{service=\"llm\"} 0",
            "arasul_service_up{service=\"n8n\"} 1",
            "arasul_service_state{service=\"llm\",state=\"unhealthy\"} 1",
            "arasul_service_state{service=\"llm\",state=\"healthy\"} 0",
            "arasul_service_restarts_total{service=\"llm\"} 3",
            "arasul_service_last_exit_code{service=\"llm\"} 137",
            "arasul_collector_up{series=\"gpu.power\"} 0",
            "arasul_collector_up{series=\"gpu.clock\"} 1",
            "arasul_collector_up{series=\"process\"} 1",
            "arasul_test_things_total{kind=\"a\",result=\"ok\"} 0",
            "arasul_test_things_total{kind=\"a\",result=\"failed\"} 1",
            "arasul_http_requests_total{route=\"api\",code=\"429\"} 1",
            "arasul_http_requests_total{route=\"api\",code=\"4xx\"} 1",
            "arasul_thermal_zone_celsius{zone=\"thermal_zone0\",type=\"cpu \\\"big\\\"\\\\cluster\"} 51",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        // The n8n service never exited: no exit code, rather than a made-up one.
        assert!(!text.contains("arasul_service_last_exit_code{service=\"n8n\"}"));
        // Exactly one state per service is 1.
        let ones = text
            .lines()
            .filter(|l| l.starts_with("arasul_service_state{service=\"llm\"") && l.ends_with(" 1"))
            .count();
        assert_eq!(ones, 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_plus_inf_equal_to_the_count() {
        let text = full();
        for route in ["health", "api"] {
            let prefix =
                format!("arasul_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"");
            let buckets: Vec<(String, u64)> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|rest| {
                    let (le, n) = rest.split_once("\"} ").unwrap();
                    (le.to_string(), n.parse().unwrap())
                })
                .collect();
            assert_eq!(buckets.len(), HTTP_BUCKETS.len() + 1);
            assert_eq!(buckets.last().unwrap().0, "+Inf");
            let bounds: Vec<f64> = buckets[..buckets.len() - 1]
                .iter()
                .map(|(le, _)| le.parse().unwrap())
                .collect();
            assert!(bounds.is_sorted(), "{bounds:?}");
            assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
            let count: u64 = text
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(
                        "arasul_http_request_duration_seconds_count{{route=\"{route}\"}} "
                    ))
                })
                .unwrap()
                .parse()
                .unwrap();
            assert_eq!(buckets.last().unwrap().1, count);
        }
        assert!(text.contains(
            "arasul_http_request_duration_seconds_bucket{route=\"health\",le=\"0.001\"} 1"
        ));
        assert!(
            text.contains("arasul_http_request_duration_seconds_bucket{route=\"api\",le=\"10\"} 1")
        );
        assert!(
            text.contains(
                "arasul_http_request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 2"
            )
        );
        // Routes nobody asked for have no series yet.
        assert!(!text.contains("route=\"webhook\""));
    }

    #[test]
    fn before_the_first_sample_every_series_is_down_and_no_node_gauge_is_made_up() {
        let text = render(&Exposition {
            sample: None,
            samples_taken: 0,
            samples_persisted: 0,
            samples_dropped: 0,
            samples_pending: 0,
            db_up: false,
            stream_clients: 0,
            workers: &[],
            services: &[],
            process: None,
            http: &[],
            counters: &[],
            version: "1",
            build_hash: "x",
            gpu_backend: "none",
            start_time_seconds: 1.0,
        });
        for series in ["cpu", "ram", "temperature", "disk", "process"] {
            assert!(
                text.contains(&format!("arasul_collector_up{{series=\"{series}\"}} 0")),
                "{text}"
            );
        }
        assert!(!text.contains("series=\"gpu\""));
        assert!(!text.contains("arasul_cpu_usage_ratio"));
        assert!(!text.contains("process_cpu_seconds_total"));
        assert!(!text.contains("arasul_service_"));
    }

    #[test]
    fn special_floats_are_spelled_as_the_format_requires() {
        let mut s = String::new();
        for v in [f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 0.25, 1e21] {
            float(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "+Inf -Inf NaN 0.25 1000000000000000000000 ");
    }

    #[test]
    fn service_state_names_are_the_api_s() {
        for state in ServiceState::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
