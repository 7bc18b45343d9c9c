//! The daemon's configuration: one YAML file plus `ARASUL_<SECTION>__<KEY>`
//! environment overrides. Every key has a default, unknown keys are errors, and
//! every error names the file (or variable), the line and the key.
//!
//! This module owns parsing and validation only; reloading on SIGHUP lives in
//! `app`, which calls [`load`] again and logs [`diff`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where the appliance keeps its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/arasul/arasuld.yaml";
/// Environment overrides look like `ARASUL_HTTP__LISTEN=0.0.0.0:80`.
pub const ENV_PREFIX: &str = "ARASUL_";
const ENV_SEPARATOR: &str = "__";

/// A value that must never reach a log line or a `{:?}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }
    /// The only way to read the value: greppable, so every use can be audited.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Keys whose values are secret: [`diff`] reports that they changed, never how.
const SECRET_KEYS: &[&str] = &["database.url"];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub paths: PathsConfig,
    pub logging: LoggingConfig,
    pub workers: WorkersConfig,
    pub metrics: MetricsConfig,
    pub docker: DockerConfig,
    /// SPEC §7 thresholds, windows and cooldowns (see `healing::config`).
    pub healing: crate::healing::HealingConfig,
    /// `arasul.local` over Avahi (see `os::mdns`).
    pub mdns: crate::os::mdns::MdnsConfig,
    /// Signed updates: bundle size limit, verification windows (see `update::manager`).
    pub update: crate::update::UpdateConfig,
    /// Updates from USB sticks: UDisks2 bus, mode auto|ask, fallback mount roots (see `usb`).
    pub usb: crate::usb::UsbConfig,
    /// Model downloads: registry, stall timeout, disk margin, memory reserve (see `ai::pulls`).
    pub models: crate::ai::pulls::ModelsConfig,
    /// Backups of the owner's data: schedule, destination, retention (see `backup`).
    pub backup: crate::backup::BackupConfig,
    /// Alerts by webhook, ntfy and e-mail: channels, de-dup, quiet hours (see `notify`).
    pub notify: crate::notify::NotifyConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Docker engine's API socket.
    pub socket: String,
    /// How long a container gets to stop before Docker kills it.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// GPU services use `runtime: nvidia` (Jetson) instead of a device
    /// request. Unset: decided by whether `<etc_root>/nv_tegra_release` exists.
    pub nvidia_runtime: Option<bool>,
    /// Every container logs to Docker's json-file driver, rotated at this
    /// size (`50m`) ...
    pub log_max_size: String,
    /// ... keeping this many files: a chatty container cannot fill the disk.
    pub log_max_files: u32,
    /// A service's missing image is pulled (`auto`) or waited for (`never`:
    /// an offline box, provisioned from a bundle or a USB stick).
    pub pull: crate::docker::pull::PullPolicy,
    /// A pull with no progress this long is cancelled and tried again.
    #[serde(with = "humantime_serde")]
    pub pull_stall_timeout: Duration,
    /// A pull must leave this much free in Docker's data root (`2g`), or it
    /// is refused before it starts.
    pub pull_min_free: String,
    /// The longest wait between two pull attempts (and before a pull refused
    /// for space is tried again).
    #[serde(with = "humantime_serde")]
    pub pull_retry_max: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            socket: "/var/run/docker.sock".into(),
            stop_timeout: Duration::from_secs(10),
            nvidia_runtime: None,
            log_max_size: "50m".into(),
            log_max_files: 5,
            pull: Default::default(),
            pull_stall_timeout: Duration::from_secs(60),
            pull_min_free: "2g".into(),
            pull_retry_max: Duration::from_secs(300),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address the API and dashboard listen on.
    pub listen: SocketAddr,
    /// Largest request body any JSON endpoint accepts (uploads have their own limit).
    pub body_limit_bytes: usize,
    /// When true, the status endpoints (`/api/system/*`, `/api/metrics/*`, …) need a login too.
    pub require_auth_for_status: bool,
    /// How long in-flight requests get to finish at shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Open client connections at most; further ones are closed at once.
    /// Also held below the process's file limit (see `api::serve`).
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_client: usize,
    /// A connection must send a complete request head within this.
    #[serde(with = "humantime_serde")]
    pub header_timeout: Duration,
    /// A keep-alive connection with no request this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Live streams (WebSocket, server-sent events) open at once.
    pub max_streams: usize,
    /// Per-client quotas (SPEC §5 by default).
    pub rate_limits: crate::net::RateLimitsConfig,
    /// Clients in these ranges are never rate limited (e.g. `127.0.0.0/8`).
    pub rate_limit_exempt: Vec<crate::net::Cidr>,
    /// Peers in these ranges are proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// How long an app behind the front door (`/ollama/`, `/n8n/`, …) may
    /// take to start its answer (a long, unstreamed generation on a CPU).
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// HTTPS (off when absent): `http.listen` then only redirects to it.
    pub tls: Option<TlsConfig>,
}

/// `http.tls`: a certificate and key of the owner's, or one made at first
/// start for the box's names and addresses (kept in `secrets_dir/tls/`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where HTTPS is served.
    #[serde(default = "TlsConfig::default_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain (leaf first) and PEM private key.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Make (once) and use a self-signed certificate instead.
    #[serde(default)]
    pub self_signed: bool,
}

impl TlsConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 443))
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([0, 0, 0, 0], 80)),
            body_limit_bytes: 1024 * 1024,
            require_auth_for_status: false,
            shutdown_grace: Duration::from_secs(3),
            max_connections: 1024,
            max_connections_per_client: 128,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_streams: 64,
            rate_limits: crate::net::RateLimitsConfig::default(),
            rate_limit_exempt: Vec::new(),
            trusted_proxies: Vec::new(),
            upstream_timeout: Duration::from_secs(600),
            tls: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// libpq-style URL. The default uses the local socket with peer auth, as the .deb sets up.
    pub url: Secret<String>,
    pub min_connections: u32,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Upper bound of the reconnect backoff while the database is down.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How often a live connection is checked.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: Secret::new("postgres:///arasul?host=/var/run/postgresql".into()),
            min_connections: 2,
            max_connections: 10,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry_max: Duration::from_secs(30),
            check_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathsConfig {
    pub state_dir: PathBuf,
    pub log_dir: PathBuf,
    pub secrets_dir: PathBuf,
    pub keys_dir: PathBuf,
    pub services_file: PathBuf,
    /// Partition whose fill level is "disk" in the metrics.
    pub data_path: PathBuf,
    pub proc_root: PathBuf,
    pub sys_root: PathBuf,
    pub etc_root: PathBuf,
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            state_dir: "/var/lib/arasul".into(),
            log_dir: "/var/log/arasul".into(),
            secrets_dir: "/etc/arasul/secrets".into(),
            keys_dir: "/etc/arasul/keys".into(),
            services_file: "/etc/arasul/services.yaml".into(),
            data_path: "/var/lib/arasul".into(),
            proc_root: "/proc".into(),
            sys_root: "/sys".into(),
            etc_root: "/etc".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter: `info`, `debug`, `arasuld=debug,sqlx=warn`, …
    pub level: String,
    /// Also write JSON lines here (e.g. `/var/log/arasul/system.log`).
    pub json_file: Option<PathBuf>,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            json_file: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkersConfig {
    /// First delay before a failed worker is restarted; doubles per failure.
    #[serde(with = "humantime_serde")]
    pub restart_initial: Duration,
    #[serde(with = "humantime_serde")]
    pub restart_max: Duration,
    /// A run this long counts as healthy and resets the backoff.
    #[serde(with = "humantime_serde")]
    pub restart_reset_after: Duration,
    /// A core worker whose heartbeat is older than this is hung: the
    /// systemd watchdog is no longer fed, so systemd restarts the daemon.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Shutdown waits this long for workers before aborting them.
    #[serde(with = "humantime_serde")]
    pub stop_timeout: Duration,
}

impl Default for WorkersConfig {
    fn default() -> Self {
        WorkersConfig {
            restart_initial: Duration::from_secs(1),
            restart_max: Duration::from_secs(60),
            restart_reset_after: Duration::from_secs(60),
            stale_after: Duration::from_secs(20),
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// Here rather than in `tasks`, which knows nothing of the config.
impl From<&WorkersConfig> for crate::tasks::RestartPolicy {
    fn from(c: &WorkersConfig) -> Self {
        crate::tasks::RestartPolicy {
            initial: c.restart_initial,
            max: c.restart_max,
            reset_after: c.restart_reset_after,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Sampling period of the live metrics.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How often the in-memory window is written to Postgres in one batch.
    #[serde(with = "humantime_serde")]
    pub persist_every: Duration,
    /// Samples older than this are deleted from Postgres.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How much history the in-memory ring keeps (also the DB-outage buffer).
    #[serde(with = "humantime_serde")]
    pub ring: Duration,
    /// Period of the WebSocket live stream.
    #[serde(with = "humantime_serde")]
    pub stream_interval: Duration,
    /// A live-stream client that has not answered a ping for this long is
    /// dropped, so a stuck client never holds resources.
    #[serde(with = "humantime_serde")]
    pub stream_client_timeout: Duration,
    /// `auto`, `nvml`, `tegra` or `none`.
    pub gpu_backend: String,
    /// host:port probed (TCP connect, 2 s) to tell whether the internet is
    /// reachable. Empty disables the probe (reported as unknown); the shipped
    /// /etc config sets one.
    pub internet_check: String,
    /// URL probed to tell whether n8n's webhooks answer; `auto` probes the
    /// front door's own `/webhook/` path (what a sender on the LAN uses),
    /// empty disables the probe.
    pub webhook_check: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            interval: Duration::from_secs(1),
            persist_every: Duration::from_secs(30),
            retention: Duration::from_secs(7 * 24 * 3600),
            ring: Duration::from_secs(24 * 3600),
            stream_interval: Duration::from_secs(5),
            stream_client_timeout: Duration::from_secs(30),
            gpu_backend: "auto".into(),
            internet_check: String::new(),
            webhook_check: "auto".into(),
        }
    }
}

/// One problem found in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, or `env ARASUL_…` for an override.
    pub source: String,
    pub line: Option<usize>,
    /// Dotted key path, e.g. `http.listen`; empty when the error is about the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.source)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Loads the config from `path` and its drop-ins (`<path>.d/*.yaml`, see
/// [`crate::dropin`]). When `required` is false a missing file means "all
/// defaults" (the daemon runs without a file); otherwise it is an error.
pub fn load(
    path: &Path,
    required: bool,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Vec<ConfigError>> {
    load_with_update(path, required, env, None)
}

/// [`load`] with `update` in place of the update's drop-in: what the config
/// will be once a bundle's `arasuld.yaml` is installed (checked before).
pub fn load_with_update(
    path: &Path,
    required: bool,
    env: impl IntoIterator<Item = (String, String)>,
    update: Option<&Path>,
) -> Result<Config, Vec<ConfigError>> {
    let layers = crate::dropin::read(path, required, update)?;
    // Each drop-in alone first: its errors keep its own line numbers.
    let errors: Vec<ConfigError> = layers[1..]
        .iter()
        .filter_map(|l| parse(&l.source, &l.text, std::iter::empty()).err())
        .flatten()
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let merged = crate::dropin::merge(&layers)?;
    parse(&merged.source, &merged.text, env)
}

/// Parses config text; `source` names it in errors.
pub fn parse(
    source: &str,
    text: &str,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Vec<ConfigError>> {
    let file_error = |line, key: String, message| ConfigError {
        source: source.to_string(),
        line,
        key,
        message,
    };
    // First pass straight from the text, so serde_yaml's errors carry the line.
    let from_file: Config = if text.trim().is_empty() {
        Config::default()
    } else {
        let de = serde_yaml::Deserializer::from_str(text);
        match serde_path_to_error::deserialize(de) {
            Ok(c) => c,
            Err(e) => {
                let key = clean_path(&e.path().to_string());
                let inner = e.into_inner();
                let line = inner
                    .location()
                    .map(|l| l.line())
                    .or_else(|| locate_key(text, &key));
                let message = strip_location(&inner, &key);
                return Err(vec![file_error(line, key, message)]);
            }
        }
    };

    // Second pass: merge environment overrides into the tree and decode again.
    let overrides: Vec<(String, Vec<String>, String)> = env
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(ENV_PREFIX)?;
            rest.contains(ENV_SEPARATOR).then(|| {
                let path = rest
                    .split(ENV_SEPARATOR)
                    .map(|s| s.to_ascii_lowercase())
                    .collect();
                (name.clone(), path, value)
            })
        })
        .collect();
    let mut config = from_file;
    if !overrides.is_empty() {
        let mut tree = serde_yaml::to_value(&config).expect("config serializes");
        let mut errors = Vec::new();
        for (name, path, value) in &overrides {
            let parsed: serde_yaml::Value = serde_yaml::from_str(value)
                .unwrap_or_else(|_| serde_yaml::Value::String(value.clone()));
            if let Err(message) = set_path(&mut tree, path, parsed) {
                errors.push(ConfigError {
                    source: format!("env {name}"),
                    line: None,
                    key: path.join("."),
                    message,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        match serde_path_to_error::deserialize::<_, Config>(tree) {
            Ok(c) => config = c,
            Err(e) => {
                let key = clean_path(&e.path().to_string());
                let name = overrides
                    .iter()
                    .find(|(_, p, _)| key.starts_with(&p.join(".")))
                    .map(|(n, _, _)| n.as_str())
                    .unwrap_or("ARASUL_*");
                return Err(vec![ConfigError {
                    source: format!("env {name}"),
                    line: None,
                    message: strip_location(&e.into_inner(), &key),
                    key,
                }]);
            }
        }
    }

    let problems = validate(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    Err(problems
        .into_iter()
        .map(|(key, message)| {
            let env_name = overrides
                .iter()
                .find(|(_, p, _)| p.join(".") == key)
                .map(|(n, _, _)| n.clone());
            match env_name {
                Some(name) => ConfigError {
                    source: format!("env {name}"),
                    line: None,
                    key,
                    message,
                },
                None => file_error(locate_key(text, &key), key, message),
            }
        })
        .collect())
}

/// Rules serde cannot express. Returns (key, message) pairs.
fn validate(c: &Config) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |key: &str, msg: String| out.push((key.to_string(), msg));
    if c.http.listen.port() == 0 {
        bad("http.listen", "port must be between 1 and 65535".into());
    }
    if let Some(tls) = &c.http.tls {
        match (tls.self_signed, &tls.cert, &tls.key) {
            (true, None, None) | (false, Some(_), Some(_)) => {}
            (true, _, _) => bad(
                "http.tls.self_signed",
                "either self_signed or cert and key, not both".into(),
            ),
            (false, _, _) => bad(
                "http.tls",
                "needs cert and key (PEM files), or self_signed: true".into(),
            ),
        }
        if tls.listen.port() == 0 || tls.listen.port() == c.http.listen.port() {
            bad(
                "http.tls.listen",
                "needs a port of its own (1 to 65535, not http.listen's)".into(),
            );
        }
    }
    if c.http.body_limit_bytes < 1024 {
        bad("http.body_limit_bytes", "must be at least 1024".into());
    }
    for (key, n) in [
        ("http.max_connections", c.http.max_connections),
        (
            "http.max_connections_per_client",
            c.http.max_connections_per_client,
        ),
        ("http.max_streams", c.http.max_streams),
    ] {
        if n == 0 {
            bad(key, "must be at least 1".into());
        }
    }
    let url = c.database.url.expose();
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bad(
            "database.url",
            "must start with postgres:// or postgresql://".into(),
        );
    }
    if c.database.max_connections == 0 {
        bad("database.max_connections", "must be at least 1".into());
    }
    if c.database.min_connections > c.database.max_connections {
        bad(
            "database.min_connections",
            format!(
                "must not exceed max_connections ({})",
                c.database.max_connections
            ),
        );
    }
    for (key, d) in [
        ("http.header_timeout", c.http.header_timeout),
        ("http.idle_timeout", c.http.idle_timeout),
        ("database.statement_timeout", c.database.statement_timeout),
        ("database.connect_timeout", c.database.connect_timeout),
        ("database.retry_max", c.database.retry_max),
        ("database.check_interval", c.database.check_interval),
        ("workers.restart_initial", c.workers.restart_initial),
        ("workers.stale_after", c.workers.stale_after),
        ("metrics.persist_every", c.metrics.persist_every),
        ("metrics.retention", c.metrics.retention),
        ("metrics.ring", c.metrics.ring),
        ("metrics.stream_interval", c.metrics.stream_interval),
        (
            "metrics.stream_client_timeout",
            c.metrics.stream_client_timeout,
        ),
    ] {
        if d.is_zero() {
            bad(key, "must be greater than zero".into());
        }
    }
    if c.workers.restart_max < c.workers.restart_initial {
        bad(
            "workers.restart_max",
            "must not be below restart_initial".into(),
        );
    }
    if c.metrics.interval < Duration::from_millis(100) {
        bad("metrics.interval", "must be at least 100ms".into());
    }
    if c.metrics.ring < c.metrics.interval {
        bad("metrics.ring", "must be at least one interval".into());
    }
    if !["auto", "nvml", "tegra", "none"].contains(&c.metrics.gpu_backend.as_str()) {
        bad(
            "metrics.gpu_backend",
            "must be one of auto, nvml, tegra, none".into(),
        );
    }
    if !c.metrics.internet_check.is_empty()
        && let Err(msg) = check_host_port(&c.metrics.internet_check)
    {
        bad("metrics.internet_check", msg);
    }
    let hook = c.metrics.webhook_check.as_str();
    if !(hook.is_empty()
        || hook == "auto"
        || hook.starts_with("http://")
        || hook.starts_with("https://"))
    {
        bad(
            "metrics.webhook_check",
            "must be auto, empty (off) or an http:// or https:// URL".into(),
        );
    }
    for (key, p) in [
        ("paths.state_dir", &c.paths.state_dir),
        ("paths.log_dir", &c.paths.log_dir),
        ("paths.secrets_dir", &c.paths.secrets_dir),
        ("paths.keys_dir", &c.paths.keys_dir),
        ("paths.services_file", &c.paths.services_file),
        ("paths.data_path", &c.paths.data_path),
        ("paths.proc_root", &c.paths.proc_root),
        ("paths.sys_root", &c.paths.sys_root),
        ("paths.etc_root", &c.paths.etc_root),
    ] {
        if !p.is_absolute() {
            bad(
                key,
                format!("must be an absolute path, got {}", p.display()),
            );
        }
    }
    if let Some(p) = &c.logging.json_file
        && !p.is_absolute()
    {
        bad(
            "logging.json_file",
            format!("must be an absolute path, got {}", p.display()),
        );
    }
    if let Err(e) = log_filter(&c.logging.level) {
        bad("logging.level", e.to_string());
    }
    if let Err(e) = crate::docker::catalog::parse_bytes(&c.docker.log_max_size) {
        bad("docker.log_max_size", e);
    }
    if let Err(e) = crate::docker::catalog::parse_bytes(&c.docker.pull_min_free) {
        bad("docker.pull_min_free", e);
    }
    if c.docker.pull_stall_timeout.is_zero() || c.docker.pull_retry_max.is_zero() {
        bad(
            "docker.pull_stall_timeout",
            "pull_stall_timeout and pull_retry_max must be greater than zero".into(),
        );
    }
    if c.docker.log_max_files == 0 {
        bad("docker.log_max_files", "must be at least 1".into());
    }
    out.extend(c.http.rate_limits.validate());
    out.extend(c.healing.validate());
    out.extend(c.mdns.validate());
    out.extend(c.update.validate());
    out.extend(c.usb.validate());
    out.extend(c.models.validate());
    out.extend(c.backup.validate());
    out.extend(c.notify.validate());
    out
}

/// `host:port` with a port in 1–65535 and a host that is an IP or an RFC 1123 name.
fn check_host_port(s: &str) -> Result<(), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("expected host:port, got {s:?}"))?;
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("port must be between 1 and 65535, got {port:?}")),
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.parse::<std::net::IpAddr>().is_ok() || is_rfc1123_hostname(host) {
        Ok(())
    } else {
        Err(format!(
            "{host:?} is neither an IP address nor a valid hostname"
        ))
    }
}

/// RFC 1123 host name: dot-separated labels of 1–63 letters, digits and
/// hyphens, not starting or ending with a hyphen, 253 characters at most.
/// `logging.level` (or `RUST_LOG`): a level, and `target=level` pairs,
/// comma-separated (`info`, `warn,arasuld=debug`). Span and field filters
/// are not offered.
pub fn log_filter(text: &str) -> anyhow::Result<tracing_subscriber::filter::Targets> {
    if text.trim().is_empty() {
        anyhow::bail!("not a valid log filter: empty (e.g. info, or warn,arasuld=debug)");
    }
    text.parse().map_err(|e| {
        anyhow::anyhow!("not a valid log filter: {e} (e.g. info, or warn,arasuld=debug)")
    })
}

pub fn is_rfc1123_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn set_path(
    tree: &mut serde_yaml::Value,
    path: &[String],
    value: serde_yaml::Value,
) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut node = tree;
    for (i, part) in parents.iter().enumerate() {
        node = node
            .get_mut(part.as_str())
            .ok_or_else(|| format!("unknown key `{}`", path[..=i].join(".")))?;
    }
    let map = node
        .as_mapping_mut()
        .ok_or_else(|| format!("`{}` is not a section", parents.join(".")))?;
    let slot = map
        .get_mut(last.as_str())
        .ok_or_else(|| format!("unknown key `{}`", path.join(".")))?;
    *slot = value;
    Ok(())
}

/// serde_path_to_error prints `.` for the root and `?` for unknown parts.
fn clean_path(p: &str) -> String {
    if p == "." {
        String::new()
    } else {
        p.to_string()
    }
}

/// serde_yaml prefixes the path of a nested error ("logging: …") and appends
/// " at line L column C"; we print both ourselves.
fn strip_location(e: &serde_yaml::Error, key: &str) -> String {
    let mut s = e.to_string();
    if let Some(i) = s.find(" at line ") {
        s.truncate(i);
    }
    let parts: Vec<&str> = key.split('.').collect();
    for n in (1..=parts.len()).rev() {
        if let Some(rest) = s.strip_prefix(&format!("{}: ", parts[..n].join("."))) {
            return rest.to_string();
        }
    }
    s
}

/// Line number (1-based) of a dotted key in block-style YAML, found by
/// indentation. Good enough for the config files we write and document.
pub fn locate_key(text: &str, key: &str) -> Option<usize> {
    if key.is_empty() {
        return None;
    }
    let want: Vec<&str> = key.split('.').collect();
    let mut stack: Vec<(usize, &str)> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
            continue;
        }
        let indent = raw.len() - trimmed.len();
        let Some((k, _)) = trimmed.split_once(':') else {
            continue;
        };
        let k = k.trim().trim_matches(|c| c == '"' || c == '\'');
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, k));
        if stack.len() == want.len() && stack.iter().map(|(_, k)| *k).eq(want.iter().copied()) {
            return Some(n + 1);
        }
    }
    None
}

/// Keys whose values differ between two configs, as `key: old -> new` lines
/// (secret keys only say that they changed).
pub fn diff(old: &Config, new: &Config) -> Vec<String> {
    fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    flatten(&key, v, out);
                }
            }
            other => out.push((prefix.to_string(), other.to_string())),
        }
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    flatten("", &serde_json::to_value(old).expect("serializes"), &mut a);
    flatten("", &serde_json::to_value(new).expect("serializes"), &mut b);
    a.into_iter()
        .zip(b)
        .filter(|((_, x), (_, y))| x != y)
        .map(|((key, x), (_, y))| {
            if SECRET_KEYS.contains(&key.as_str()) {
                format!("{key}: (secret changed)")
            } else {
                format!("{key}: {x} -> {y}")
            }
        })
        .collect()
}

/// Keys that only take effect after a restart (sockets, pools, paths).
pub fn needs_restart(changed_line: &str) -> bool {
    // Followed live by their workers (the setup wizard changes them).
    if ["mdns.hostname", "healing.reboot.enabled"]
        .iter()
        .any(|k| changed_line.starts_with(k))
    {
        return false;
    }
    [
        "http.listen",
        // Also covers http.max_connections_per_client.
        "http.max_connections",
        "http.max_streams",
        "http.header_timeout",
        "http.idle_timeout",
        "http.rate_limits",
        "http.rate_limit_exempt",
        "http.trusted_proxies",
        "database.",
        "paths.",
        "logging.json_file",
        "healing.",
        "mdns.",
        "update.",
        "usb.",
    ]
    .iter()
    .any(|p| changed_line.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Config, Vec<ConfigError>> {
        parse("/etc/arasul/arasuld.yaml", text, Vec::new())
    }

    #[test]
    fn empty_file_gives_all_defaults() {
        assert_eq!(parse_str("").unwrap(), Config::default());
        assert_eq!(parse_str("# nothing\n").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_an_error_with_line_and_key() {
        let errs = parse_str("http:\n  listen: 127.0.0.1:8080\n  lisen: 1\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        let e = &errs[0];
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.key, "http.lisen", "{e}");
        assert!(
            e.message.starts_with("unknown field `lisen`, expected"),
            "{e}"
        );
    }

    #[test]
    fn port_zero_is_rejected_on_its_line() {
        let errs = parse_str("# top\nhttp:\n  listen: 127.0.0.1:0\n").unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "/etc/arasul/arasuld.yaml:3: http.listen: port must be between 1 and 65535"
        );
    }

    #[test]
    fn port_out_of_range_is_a_parse_error_on_its_line() {
        let errs = parse_str("http:\n  listen: 127.0.0.1:70000\n").unwrap_err();
        assert_eq!(errs[0].line, Some(2), "{}", errs[0]);
        assert_eq!(errs[0].key, "http.listen");
    }

    #[test]
    fn bad_yaml_names_the_line() {
        let errs = parse_str("http:\n  listen: [\n").unwrap_err();
        assert!(errs[0].line.is_some(), "{}", errs[0]);
    }

    #[test]
    fn env_overrides_win_and_unknown_env_keys_fail() {
        let env = vec![(
            "ARASUL_HTTP__LISTEN".to_string(),
            "127.0.0.1:9999".to_string(),
        )];
        let c = parse("f", "http:\n  listen: 127.0.0.1:8080\n", env).unwrap();
        assert_eq!(c.http.listen.port(), 9999);

        let env = vec![("ARASUL_HTTP__LISTN".to_string(), "x".to_string())];
        let errs = parse("f", "", env).unwrap_err();
        assert_eq!(errs[0].source, "env ARASUL_HTTP__LISTN");
        assert!(errs[0].message.contains("unknown key"), "{}", errs[0]);

        let env = vec![("ARASUL_METRICS__INTERVAL".to_string(), "10ms".to_string())];
        let errs = parse("f", "", env).unwrap_err();
        assert_eq!(
            errs[0].to_string(),
            "env ARASUL_METRICS__INTERVAL: metrics.interval: must be at least 100ms"
        );
    }

    #[test]
    fn several_problems_are_all_reported() {
        let text = "database:\n  min_connections: 20\n  max_connections: 10\nmetrics:\n  gpu_backend: cuda\n  internet_check: -bad-:443\n";
        let errs = parse_str(text).unwrap_err();
        let lines: Vec<_> = errs.iter().map(|e| (e.key.as_str(), e.line)).collect();
        assert!(lines.contains(&("database.min_connections", Some(2))));
        assert!(lines.contains(&("metrics.gpu_backend", Some(5))));
        assert!(lines.contains(&("metrics.internet_check", Some(6))));
    }

    #[test]
    fn secrets_never_show_in_debug_or_diff() {
        let mut c = Config::default();
        c.database.url = Secret::new("postgres://u:hunter2@db/x".into());
        assert!(!format!("{c:?}").contains("hunter2"));
        let changed = diff(&Config::default(), &c);
        assert_eq!(changed, vec!["database.url: (secret changed)".to_string()]);
    }

    #[test]
    fn diff_lists_changed_keys() {
        let mut c = Config::default();
        c.logging.level = "debug".into();
        assert_eq!(
            diff(&Config::default(), &c),
            vec![r#"logging.level: "info" -> "debug""#.to_string()]
        );
    }

    #[test]
    fn rfc1123_names() {
        assert!(is_rfc1123_hostname("arasul.local"));
        assert!(is_rfc1123_hostname("a-1.b"));
        assert!(!is_rfc1123_hostname("-a"));
        assert!(!is_rfc1123_hostname("a..b"));
        assert!(!is_rfc1123_hostname("a_b"));
    }
}
