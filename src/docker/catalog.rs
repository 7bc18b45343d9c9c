//! The service catalog (`services.yaml`): which containers the box runs, with
//! their limits, ports, health checks and start order. Pure: parsing,
//! validation with line numbers, dependency order and the spec hash that
//! decides whether a running container can be adopted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, locate_key};

pub const DEFAULT_NETWORK: &str = "arasul-net";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Names this box's containers (`<project>-<service>`) and scopes the
    /// labels, so two daemons on one engine never touch each other's.
    #[serde(default = "default_project")]
    pub project: String,
    /// The bridge network every service joins.
    #[serde(default = "default_network")]
    pub network: String,
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
}

fn default_network() -> String {
    DEFAULT_NETWORK.into()
}

fn default_project() -> String {
    "arasul".into()
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            project: default_project(),
            network: default_network(),
            services: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Llm,
    Embeddings,
    Workflow,
    Storage,
    #[default]
    Other,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub image: String,
    #[serde(default)]
    pub role: Role,
    /// A critical service down makes the box CRITICAL.
    #[serde(default)]
    pub critical: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables read from files in the secrets dir
    /// (`VAR: file-name`); a missing file is generated at first start
    /// (24 random letters and digits, mode 0600), so no service runs with a
    /// vendor's default credential.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// `host_path:container_path[:ro]`
    #[serde(default)]
    pub volumes: Vec<String>,
    /// `[ip:]host_port:container_port`; without an IP the port binds to 127.0.0.1.
    #[serde(default)]
    pub ports: Vec<String>,
    /// The NVIDIA GPU: `auto` (used when the engine has the NVIDIA runtime,
    /// else the service runs on the CPU), `required` (always asked for; the
    /// engine refuses the container without one) or `off`. `true`/`false`
    /// mean `required`/`off`.
    #[serde(default)]
    pub gpu: GpuMode,
    /// Cores (e.g. 2.5), becomes NanoCpus.
    #[serde(default)]
    pub cpu_limit: Option<f64>,
    /// `512m`, `8g`, or bytes.
    #[serde(default)]
    pub memory_limit: Option<String>,
    /// Overrides the image's command.
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub health: Option<HealthSpec>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The port the front door (`api::proxy`) forwards the service's web
    /// app to, on its network address; its API port (the health check's)
    /// when absent. MinIO's console (9001) is not its S3 API (9000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GpuMode {
    Auto,
    Required,
    #[default]
    Off,
}

/// Written as the booleans of old for `required`/`off`, so the spec hash of
/// a container created before `auto` existed does not change.
impl Serialize for GpuMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            GpuMode::Auto => s.serialize_str("auto"),
            GpuMode::Required => s.serialize_bool(true),
            GpuMode::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for GpuMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Word(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(true) => Ok(GpuMode::Required),
            Raw::Bool(false) => Ok(GpuMode::Off),
            Raw::Word(w) => match w.as_str() {
                "auto" => Ok(GpuMode::Auto),
                "required" => Ok(GpuMode::Required),
                "off" => Ok(GpuMode::Off),
                other => Err(serde::de::Error::custom(format!(
                    "expected auto, required or off, got {other:?}"
                ))),
            },
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// HTTP GET on the container's address.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// TCP connect to the container's port.
    #[serde(default)]
    pub tcp: Option<TcpProbe>,
    /// Use the image's own Docker HEALTHCHECK status.
    #[serde(default)]
    pub docker: bool,
    #[serde(default = "d10", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "d5", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default = "three")]
    pub retries: u32,
    #[serde(default = "d30", with = "humantime_serde")]
    pub start_period: Duration,
    /// For the AI runtimes: that they do their job, not only answer (see
    /// [`ModelCheck`]). Needs the `http` probe (its port is the API's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelCheck>,
}

/// `health.model`: the LLM runtime generates one token, the embedding
/// service returns a vector (of `dimension`, when given), every `interval`
/// once the service has come up. A failed check counts as a failed probe
/// with its reason (so `retries` of them make the service `unhealthy`, and
/// self-healing acts) and is asked again at every probe until it passes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCheck {
    /// The model to ask. Absent: the LLM runtime's loaded model (none
    /// loaded: nothing to check, so no model is loaded for a check), the
    /// embedding service's first model (none: nothing to check).
    #[serde(default)]
    pub model: Option<String>,
    /// Embeddings: the vector length the model must return.
    #[serde(default)]
    pub dimension: Option<usize>,
    #[serde(default = "d300", with = "humantime_serde")]
    pub interval: Duration,
    #[serde(default = "d60", with = "humantime_serde")]
    pub timeout: Duration,
}

fn d300() -> Duration {
    Duration::from_secs(300)
}
fn d60() -> Duration {
    Duration::from_secs(60)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub port: u16,
    #[serde(default = "slash")]
    pub path: String,
    #[serde(default = "ok200")]
    pub status: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpProbe {
    pub port: u16,
}

fn d10() -> Duration {
    Duration::from_secs(10)
}
fn d5() -> Duration {
    Duration::from_secs(5)
}
fn d30() -> Duration {
    Duration::from_secs(30)
}
fn three() -> u32 {
    3
}
fn slash() -> String {
    "/".into()
}
fn ok200() -> u16 {
    200
}

/// A published port, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

pub fn parse_port(s: &str) -> Result<PortMapping, String> {
    let parts: Vec<&str> = s.rsplitn(3, ':').collect();
    let port = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "port must be between 1 and 65535, got {p:?} in {s:?}"
        )),
    };
    match parts.as_slice() {
        [c, h] => Ok(PortMapping {
            host_ip: "127.0.0.1".into(),
            host_port: port(h)?,
            container_port: port(c)?,
        }),
        [c, h, ip] => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| format!("{ip:?} is not an IP address in {s:?}"))?;
            Ok(PortMapping {
                host_ip: ip.into(),
                host_port: port(h)?,
                container_port: port(c)?,
            })
        }
        _ => Err(format!("expected [ip:]host_port:container_port, got {s:?}")),
    }
}

/// `512m`, `8g`, `1.5g`, `1048576` → bytes.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1i64 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t.as_str(), 1),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a size like 512m or 8g, got {s:?}"))?;
    if n <= 0.0 {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok((n * mult as f64) as i64)
}

impl ServiceSpec {
    /// A short hash of everything that shapes the container: a running
    /// container with the same hash is adopted, any other is recreated.
    pub fn spec_hash(&self, network: &str) -> String {
        let json = serde_json::to_string(&(network, self)).expect("spec serializes");
        let d = ring::digest::digest(&ring::digest::SHA256, json.as_bytes());
        hex::encode(&d.as_ref()[..8])
    }

    /// The port the service's API answers on: its HTTP (or TCP) health port.
    pub fn api_port(&self) -> Option<u16> {
        let h = self.health.as_ref()?;
        h.http
            .as_ref()
            .map(|p| p.port)
            .or(h.tcp.as_ref().map(|t| t.port))
    }

    /// The port the front door forwards to: `web_port`, else the API port.
    pub fn web_port(&self) -> Option<u16> {
        self.web_port.or_else(|| self.api_port())
    }

    pub fn port_mappings(&self) -> Vec<PortMapping> {
        self.ports
            .iter()
            .filter_map(|p| parse_port(p).ok())
            .collect()
    }
}

/// Parses and validates; every problem comes back with file, line and key.
pub fn parse(source: &str, text: &str) -> Result<Catalog, Vec<ConfigError>> {
    let err = |line, key: String, message: String| ConfigError {
        source: source.to_string(),
        line,
        key,
        message,
    };
    let catalog: Catalog = if text.trim().is_empty() {
        Catalog::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let mut msg = inner.to_string();
                if let Some(i) = msg.find(" at line ") {
                    msg.truncate(i);
                }
                if let Some(rest) = msg.split_once(": ").filter(|(p, _)| key.starts_with(p)) {
                    msg = rest.1.to_string();
                }
                return Err(vec![err(inner.location().map(|l| l.line()), key, msg)]);
            }
        }
    };
    let problems = validate(&catalog);
    if problems.is_empty() {
        return Ok(catalog);
    }
    Err(problems
        .into_iter()
        .map(|(index, field, message)| {
            let name = index
                .and_then(|i| catalog.services.get(i))
                .map(|s| s.name.clone());
            let key = match (index, &field) {
                (Some(i), f) if f.is_empty() => format!("services[{i}]"),
                (Some(i), f) => format!("services[{i}].{f}"),
                (None, f) => f.clone(),
            };
            let line = index
                .and_then(|i| locate_service_field(text, i, &field))
                .or_else(|| locate_key(text, &field));
            let message = match name {
                Some(n) => format!("service {n:?}: {message}"),
                None => message,
            };
            err(line, key, message)
        })
        .collect())
}

/// (service index, field, message)
fn validate(c: &Catalog) -> Vec<(Option<usize>, String, String)> {
    let mut out = Vec::new();
    if !crate::config::is_rfc1123_hostname(&c.network) {
        out.push((None, "network".into(), "must be a valid name".into()));
    }
    if c.project.is_empty()
        || c.project.len() > 40
        || !c
            .project
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        out.push((
            None,
            "project".into(),
            "must be 1–40 lowercase letters, digits or '-'".into(),
        ));
    }
    let names: HashSet<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    let mut seen = HashSet::new();
    for (i, s) in c.services.iter().enumerate() {
        let mut bad = |field: &str, msg: String| out.push((Some(i), field.to_string(), msg));
        if s.name.is_empty()
            || s.name.len() > 63
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            bad(
                "name",
                "must be 1–63 lowercase letters, digits or '-'".into(),
            );
        }
        if !seen.insert(s.name.as_str()) {
            bad("name", "is used by two services".into());
        }
        if s.image.trim().is_empty() {
            bad("image", "must not be empty".into());
        }
        for p in &s.ports {
            if let Err(e) = parse_port(p) {
                bad("ports", e);
            }
        }
        for v in &s.volumes {
            let parts: Vec<&str> = v.split(':').collect();
            let ok = matches!(parts.len(), 2 | 3)
                && parts[1].starts_with('/')
                && (parts.len() == 2 || matches!(parts[2], "ro" | "rw"));
            if !ok {
                bad(
                    "volumes",
                    format!("expected source:/container/path[:ro|rw], got {v:?}"),
                );
            }
        }
        if let Some(cpu) = s.cpu_limit
            && !(cpu > 0.0 && cpu <= 1024.0)
        {
            bad(
                "cpu_limit",
                format!("must be a positive number of cores, got {cpu}"),
            );
        }
        if let Some(m) = &s.memory_limit
            && let Err(e) = parse_bytes(m)
        {
            bad("memory_limit", e);
        }
        if let Some(h) = &s.health {
            let kinds = h.http.is_some() as u8 + h.tcp.is_some() as u8 + h.docker as u8;
            if kinds != 1 {
                bad("health", "needs exactly one of http, tcp or docker".into());
            }
            if h.http.as_ref().is_some_and(|p| p.port == 0)
                || h.tcp.as_ref().is_some_and(|p| p.port == 0)
            {
                bad("health", "port must be between 1 and 65535".into());
            }
            if h.interval.is_zero() || h.timeout.is_zero() || h.retries == 0 {
                bad(
                    "health",
                    "interval, timeout and retries must be greater than zero".into(),
                );
            }
            if let Some(m) = &h.model {
                if !matches!(s.role, Role::Llm | Role::Embeddings) || h.http.is_none() {
                    bad(
                        "health.model",
                        "only for role llm or embeddings, with an http probe".into(),
                    );
                }
                if m.interval.is_zero() || m.timeout.is_zero() || m.dimension == Some(0) {
                    bad(
                        "health.model",
                        "interval, timeout and dimension must be greater than zero".into(),
                    );
                }
            }
        }
        for (var, file) in &s.secrets {
            if var.is_empty() || var.contains('=') {
                bad(
                    "secrets",
                    format!("{var:?} is not an environment variable name"),
                );
            }
            if file.is_empty()
                || file.starts_with('.')
                || !file
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                bad(
                    "secrets",
                    format!("{file:?} must be a plain file name in the secrets dir"),
                );
            }
        }
        for d in &s.depends_on {
            if !names.contains(d.as_str()) {
                bad("depends_on", format!("depends on unknown service {d:?}"));
            } else if d == &s.name {
                bad("depends_on", "depends on itself".into());
            }
        }
    }
    if out.is_empty()
        && let Err(cycle) = start_order(c)
    {
        out.push((None, "services".into(), cycle));
    }
    out
}

/// Services in an order where each comes after what it depends on
/// (catalog order among equals). Err names a dependency cycle.
pub fn start_order(c: &Catalog) -> Result<Vec<&ServiceSpec>, String> {
    let mut placed: HashSet<&str> = HashSet::new();
    let mut order = Vec::new();
    while order.len() < c.services.len() {
        let next = c.services.iter().find(|s| {
            !placed.contains(s.name.as_str())
                && s.depends_on.iter().all(|d| placed.contains(d.as_str()))
        });
        match next {
            Some(s) => {
                placed.insert(&s.name);
                order.push(s);
            }
            None => {
                let stuck: Vec<&str> = c
                    .services
                    .iter()
                    .filter(|s| !placed.contains(s.name.as_str()))
                    .map(|s| s.name.as_str())
                    .collect();
                return Err(format!("dependency cycle among {}", stuck.join(", ")));
            }
        }
    }
    Ok(order)
}

/// Line of `field` inside the `index`-th item of the `services:` list.
fn locate_service_field(text: &str, index: usize, field: &str) -> Option<usize> {
    let mut in_services = false;
    let mut item: Option<usize> = None;
    let mut item_line = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        let indent = line.len() - t.len();
        if indent == 0 {
            in_services = t.starts_with("services:");
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(rest) = t.strip_prefix("- ") {
            item = Some(item.map_or(0, |i| i + 1));
            if item == Some(index) {
                item_line = Some(n + 1);
                if field.is_empty() || rest.trim_start().starts_with(&format!("{field}:")) {
                    return Some(n + 1);
                }
            }
            continue;
        }
        if item == Some(index) && !field.is_empty() && t.starts_with(&format!("{field}:")) {
            return Some(n + 1);
        }
    }
    item_line
}

/// Maps service name → spec, for lookups.
pub fn by_name(c: &Catalog) -> HashMap<&str, &ServiceSpec> {
    c.services.iter().map(|s| (s.name.as_str(), s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../assets/services.yaml");

    #[test]
    fn the_shipped_catalog_is_valid_and_starts_llm_first() {
        let c = parse("assets/services.yaml", SHIPPED).unwrap();
        let order: Vec<&str> = start_order(&c)
            .unwrap()
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(order, vec!["llm", "embeddings", "minio", "n8n"]);
        let llm = &by_name(&c)["llm"];
        assert_eq!(llm.gpu, GpuMode::Auto);
        assert_eq!(
            parse_bytes(llm.memory_limit.as_deref().unwrap()).unwrap(),
            32 << 30
        );
        assert!(llm.port_mappings().iter().all(|p| p.host_ip == "127.0.0.1"));
        // Both AI runtimes check their model, every 5 minutes.
        for name in ["llm", "embeddings"] {
            let m = by_name(&c)[name]
                .health
                .as_ref()
                .unwrap()
                .model
                .clone()
                .unwrap();
            assert_eq!(m.interval, Duration::from_secs(300), "{name}");
        }
    }

    #[test]
    fn a_model_check_is_only_for_an_ai_runtime_with_an_http_probe() {
        let text = "services:\n  - name: db\n    image: x\n    health:\n      tcp: {port: 5432}\n      model: {interval: 0s}\n";
        let errs = parse("s.yaml", text).unwrap_err();
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(
            got.iter().any(|e| e.contains(
                "health.model: service \"db\": only for role llm or embeddings, with an http probe"
            )),
            "{got:?}"
        );
        assert!(
            got.iter()
                .any(|e| e.contains("interval, timeout and dimension must be greater than zero")),
            "{got:?}"
        );
        // Absent, it leaves the spec hash of an existing container as it was.
        let plain = "services:\n  - name: llm\n    image: x\n    role: llm\n    health: {http: {port: 1}}\n";
        let s = &parse("s.yaml", plain).unwrap().services[0];
        assert!(!serde_json::to_string(s).unwrap().contains("model"));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let text = "services:\n  - name: llm\n    image: x\n    ports: [\"127.0.0.1:0:11434\"]\n  - name: web\n    image: y\n    depends_on: [nope]\n";
        let errs = parse("s.yaml", text).unwrap_err();
        let got: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(got.contains(&"s.yaml:4: services[0].ports: service \"llm\": port must be between 1 and 65535, got \"0\" in \"127.0.0.1:0:11434\"".to_string()), "{got:?}");
        assert!(got.contains(&"s.yaml:7: services[1].depends_on: service \"web\": depends on unknown service \"nope\"".to_string()), "{got:?}");
    }

    #[test]
    fn unknown_fields_and_cycles_are_rejected() {
        let errs = parse(
            "s.yaml",
            "services:\n  - name: a\n    image: x\n    imgae: y\n",
        )
        .unwrap_err();
        assert_eq!(errs[0].line, Some(4), "{}", errs[0]);
        assert!(
            errs[0].message.contains("unknown field `imgae`"),
            "{}",
            errs[0]
        );

        let text = "services:\n  - {name: a, image: x, depends_on: [b]}\n  - {name: b, image: x, depends_on: [a]}\n";
        let errs = parse("s.yaml", text).unwrap_err();
        assert!(
            errs[0].message.contains("dependency cycle among a, b"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn spec_hash_changes_with_the_spec_only() {
        let c = parse("s", SHIPPED).unwrap();
        let mut llm = c.services[0].clone();
        let h = llm.spec_hash("arasul-net");
        assert_eq!(h, c.services[0].spec_hash("arasul-net"));
        llm.env.insert("X".into(), "1".into());
        assert_ne!(h, llm.spec_hash("arasul-net"));
    }

    #[test]
    fn ports_and_sizes_parse() {
        assert_eq!(parse_port("8080:80").unwrap().host_ip, "127.0.0.1");
        assert_eq!(parse_port("0.0.0.0:80:8080").unwrap().container_port, 8080);
        assert!(parse_port("80").is_err());
        assert!(parse_port("1.2.3:80:80").is_err());
        assert_eq!(parse_bytes("512m").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5g").unwrap(), 3 << 29);
        assert!(parse_bytes("lots").is_err());
    }
}
