//! The shipped alert rules (`assets/prometheus/arasul-alerts.yml`) with
//! Debian's real Prometheus: `promtool check rules`, `promtool test rules`
//! with the production `for:` durations on made-up series, and a real
//! `prometheus` server scraping a real arasuld every second that fires
//! `ArasulServiceDown` once a supervised container is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::docker::{IMAGE, Project, docker};
use crate::common::{Daemon, TestConfig, free_port, wait_until};

const CLOSED_DB: &str = "postgres://nobody@127.0.0.1:1/none";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/assets/prometheus/arasul-alerts.yml"
);

/// A tool of Debian's `prometheus` package; scripts/test installs it, and
/// a missing one fails the test rather than skipping it.
fn tool(name: &str) -> &str {
    let found = Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{name} (Debian package `prometheus`) must be installed: scripts/test installs it"
    );
    name
}

/// GET `url` and its body as text (any status).
pub(crate) fn get_text(url: &str) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        match c.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    })
}

/// A real daemon supervising one test-runtime service, `app`. Fields drop
/// in order: the daemon goes before the project's containers are removed.
pub(crate) struct Supervised {
    pub _daemon: Daemon,
    pub cfg: TestConfig,
    pub project: Project,
}

impl Supervised {
    /// Starts it with `healing` (the YAML section) and waits until
    /// `/metrics` shows `app` up.
    pub(crate) fn start(tag: &str, healing: &str) -> Supervised {
        let project = Project::new(tag);
        let cfg = TestConfig::new(
            CLOSED_DB,
            &format!("{healing}metrics:\n  interval: 200ms\n"),
        );
        let catalog = format!(
            r#"project: {p}
network: {n}
services:
- name: app
  image: {IMAGE}
  role: other
  health: {{http: {{port: 11434, path: /api/version}}, interval: 300ms, timeout: 1s, retries: 2, start_period: 5s}}
"#,
            p = project.name,
            n = project.network(),
        );
        std::fs::write(cfg.dir.path().join("services.yaml"), catalog).unwrap();
        let daemon = Daemon::start(&cfg.path(), &[]);
        wait_until(
            "/metrics to show the service up",
            Duration::from_secs(30),
            || {
                // Well under the metrics quota (20/s per client).
                std::thread::sleep(Duration::from_millis(200));
                get_text(&cfg.url("/metrics"))
                    .contains("arasul_service_up{service=\"app\"} 1")
                    .then_some(())
            },
        );
        Supervised {
            _daemon: daemon,
            cfg,
            project,
        }
    }
}

/// A Prometheus server on a loopback port with its own storage, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (host:port) as job `arasuld` and evaluates `rules`,
    /// both every second.
    fn start(target: &str, rules: &Path) -> Prometheus {
        let bin = tool("prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n  - job_name: arasuld\n    static_configs: [{{targets: [\"{target}\"]}}]\n",
                rules = rules.display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            port,
            _dir: dir,
        };
        wait_until("Prometheus to be ready", Duration::from_secs(20), || {
            get_text(&p.url("/-/ready")).contains("Ready").then_some(())
        });
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `data` of a GET on the HTTP API.
    fn api(&self, path: &str) -> Value {
        let v: Value = serde_json::from_str(&get_text(&self.url(path))).unwrap_or(Value::Null);
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// The result vector of an instant query.
    fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = url_escape(promql);
        self.api(&format!("/api/v1/query?query={q}"))["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The rule named `name` as `/api/v1/rules` shows it.
    fn rule(&self, name: &str) -> Value {
        self.api("/api/v1/rules")["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no rule {name}"))
    }

    fn alerts(&self) -> Vec<Value> {
        self.api("/api/v1/alerts")["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The shipped rules with every `for:` set to `for_`, and without their
/// annotations when `annotations` is false (`promtool test rules` compares
/// them word for word; the expressions, durations and labels are what is
/// under test there).
fn rules_copy(dir: &Path, for_: Option<&str>, annotations: bool) -> PathBuf {
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(RULES).unwrap()).unwrap();
    for group in doc["groups"].as_sequence_mut().unwrap() {
        for rule in group["rules"].as_sequence_mut().unwrap() {
            let rule = rule.as_mapping_mut().unwrap();
            if let Some(f) = for_ {
                rule.insert("for".into(), f.into());
            }
            if !annotations {
                rule.remove("annotations");
            }
        }
    }
    let path = dir.join("arasul-alerts.yml");
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

/// Runs promtool with `stdin`: whether it passed, and what it said.
pub(crate) fn promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let out =
        crate::common::with_stdin(Command::new(tool("promtool")).args(args), stdin.as_bytes());
    (out.status.success(), crate::common::printed(&out))
}

#[test]
fn the_shipped_alert_rules_pass_promtool_check_rules() {
    let (ok, out) = promtool(&["check", "rules", RULES], "");
    assert!(ok, "promtool check rules: {out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn the_shipped_alert_rules_fire_for_down_services_full_disks_and_crash_loops_only() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_copy(dir.path(), None, false);
    let box_ = "instance: box:80, job: arasuld";
    let labels = "instance=\"box:80\",job=\"arasuld\"";
    // The production `for:` durations on one-minute samples.
    let tests = format!(
        r#"rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'up{{{labels}}}'
        values: '1 0x10'
      - series: 'arasul_disk_usage_ratio{{{labels}}}'
        values: '0.5 0.95x10'
      - series: 'arasul_service_up{{{labels},service="llm"}}'
        values: '1 1 0x10'
      - series: 'arasul_service_stopped_on_purpose{{{labels},service="llm"}}'
        values: '0x12'
      - series: 'arasul_service_up{{{labels},service="n8n"}}'
        values: '0x12'
      - series: 'arasul_service_stopped_on_purpose{{{labels},service="n8n"}}'
        values: '1x12'
      - series: 'arasul_service_restarts_total{{{labels},service="llm"}}'
        values: '0 1 2 3 3 3 3'
      - series: 'arasul_service_restarts_total{{{labels},service="embeddings"}}'
        values: '0 1 1 1 1 1 1'
      - series: 'arasul_worker_heartbeat_age_seconds{{{labels},worker="supervisor",kind="core"}}'
        values: '1 61 121 181 241'
      - series: 'arasul_worker_up{{{labels},worker="supervisor"}}'
        values: '1x5'
      - series: 'arasul_worker_heartbeat_age_seconds{{{labels},worker="backups",kind="auxiliary"}}'
        values: '1 61 121 181 241'
      - series: 'arasul_worker_up{{{labels},worker="backups"}}'
        values: '1x5'
    alert_rule_test:
      - {{eval_time: 1m, alertname: ArasulDaemonDown, exp_alerts: []}}
      - eval_time: 3m
        alertname: ArasulDaemonDown
        exp_alerts: [{{exp_labels: {{severity: critical, {box_}}}}}]
      - {{eval_time: 4m, alertname: ArasulDiskAlmostFull, exp_alerts: []}}
      - eval_time: 6m
        alertname: ArasulDiskAlmostFull
        exp_alerts: [{{exp_labels: {{severity: warning, {box_}}}}}]
      - {{eval_time: 3m, alertname: ArasulServiceDown, exp_alerts: []}}
      - eval_time: 4m
        alertname: ArasulServiceDown
        exp_alerts: [{{exp_labels: {{severity: critical, service: llm, {box_}}}}}]
      - eval_time: 4m
        alertname: ArasulServiceCrashLooping
        exp_alerts: [{{exp_labels: {{severity: warning, service: llm, {box_}}}}}]
      - eval_time: 3m
        alertname: ArasulWorkerStalled
        exp_alerts: [{{exp_labels: {{severity: critical, worker: supervisor, kind: core, {box_}}}}}]
"#,
        rules = rules.display()
    );
    let file = dir.path().join("alerts.test.yml");
    std::fs::write(&file, tests).unwrap();
    let (ok, out) = promtool(&["test", "rules", file.to_str().unwrap()], "");
    assert!(ok, "promtool test rules: {out}");
}

#[test]
fn a_real_prometheus_fires_service_down_for_a_killed_container_and_not_before() {
    let started = Instant::now();
    // Self-healing off: the killed container stays down (healing would
    // restart it within seconds, racing the alert).
    let svc = Supervised::start("prom", "healing:\n  enabled: false\n");
    let dir = tempfile::tempdir().unwrap();
    // The shipped rules with `for: 0s` (in production 2m): the alert fires
    // at the first evaluation that sees the service down.
    let rules = rules_copy(dir.path(), Some("0s"), true);
    let prom = Prometheus::start(&format!("127.0.0.1:{}", svc.cfg.port), &rules);

    // (a) Healthy: scraped, the rule evaluated after that with the service
    // up, and nothing firing for it.
    wait_until(
        "Prometheus to scrape the service up",
        Duration::from_secs(15),
        || {
            let r = prom.query("arasul_service_up{service=\"app\"}");
            (r.len() == 1 && r[0]["value"][1] == "1").then_some(())
        },
    );
    let seen_up = chrono::Utc::now();
    wait_until(
        "a rule evaluation after the scrape",
        Duration::from_secs(10),
        || {
            let rule = prom.rule("ArasulServiceDown");
            let at = chrono::DateTime::parse_from_rfc3339(rule["lastEvaluation"].as_str()?).ok()?;
            (at > seen_up).then_some(rule)
        },
    );
    let rule = prom.rule("ArasulServiceDown");
    assert_eq!(rule["health"], "ok", "{rule}");
    assert_eq!(rule["state"], "inactive", "{rule}");
    assert_eq!(prom.rule("ArasulDaemonDown")["state"], "inactive");
    assert!(
        prom.alerts()
            .iter()
            .all(|a| a["labels"]["alertname"] != "ArasulServiceDown"),
        "{:?}",
        prom.alerts()
    );
    // Every shipped rule evaluates without an error against the real series.
    for group in prom.api("/api/v1/rules")["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            assert_eq!(r["health"], "ok", "{r}");
        }
    }

    // (b) Killed: the supervisor sees it, Prometheus scrapes it, the rule fires.
    let killed = Instant::now();
    docker(&["kill", &svc.project.container("app")]);
    let alert = wait_until("ArasulServiceDown to fire", Duration::from_secs(15), || {
        prom.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "ArasulServiceDown"
                && a["labels"]["service"] == "app"
                && a["state"] == "firing"
        })
    });
    eprintln!(
        "firing {:.1} s after docker kill: {}",
        killed.elapsed().as_secs_f64(),
        serde_json::to_string(&alert).unwrap()
    );
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["labels"]["job"], "arasuld");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("Service app on 127.0.0.1:"),
        "{alert}"
    );
    let exit = prom.query("arasul_service_last_exit_code{service=\"app\"}");
    assert_eq!(exit[0]["value"][1], "137", "{exit:?}");
    eprintln!("whole test: {:.1} s", started.elapsed().as_secs_f64());
}
