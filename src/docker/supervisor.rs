//! The supervisor worker: connects to Docker (negotiating the API version),
//! creates `arasul-net`, adopts or (re)creates each service's container,
//! starts them in dependency order once what they depend on is healthy,
//! follows the events stream so a death is seen at once, and probes health on
//! each service's interval. Docker unreachable → every service `unknown`,
//! one critical log line, reconnect with backoff.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, EventMessage, HostConfig,
    HostConfigLogConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, InspectContainerOptions, ListContainersOptions,
    LogsOptions, RemoveContainerOptions, RestartContainerOptions, StopContainerOptions,
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::catalog::{
    Catalog, GpuMode, HealthSpec, ModelCheck, Role, ServiceSpec, parse_bytes, start_order,
};
use super::core::{Core, Event, Intent};
use super::pull::{self, PullEvent, PullPolicy, PullSettings};
use super::{
    Command, LABEL_MANAGED, LABEL_OWNER, LABEL_PROJECT, LABEL_SERVICE, LABEL_SPEC_HASH,
    ServiceState, ServiceStatus, SupervisorError,
};
use crate::tasks::WorkerCtx;

/// What the supervisor needs from the config.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    pub socket: String,
    pub state_dir: PathBuf,
    /// Seconds Docker waits for a container to stop before killing it.
    pub stop_timeout: Duration,
    /// Use `runtime: nvidia` (Jetson) instead of a device request for GPUs.
    pub nvidia_runtime: bool,
    /// The json-file log driver's `max-size` and `max-file` for every container.
    pub log_max_size: String,
    pub log_max_files: u32,
    /// Missing images: pulled (with these limits) or waited for.
    pub pull: PullSettings,
    /// Where the catalog's `secrets` files are (generated when missing).
    pub secrets_dir: PathBuf,
}

impl From<&crate::config::Config> for SupervisorConfig {
    fn from(config: &crate::config::Config) -> Self {
        let docker = &config.docker;
        SupervisorConfig {
            socket: docker.socket.clone(),
            state_dir: config.paths.state_dir.clone(),
            stop_timeout: docker.stop_timeout,
            nvidia_runtime: docker
                .nvidia_runtime
                .unwrap_or_else(|| config.paths.etc_root.join("nv_tegra_release").exists()),
            log_max_size: docker.log_max_size.clone(),
            log_max_files: docker.log_max_files,
            pull: PullSettings {
                policy: docker.pull,
                stall_timeout: docker.pull_stall_timeout,
                min_free: parse_bytes(&docker.pull_min_free).unwrap_or(0) as u64,
                retry_max: docker.pull_retry_max,
                secrets_dir: config.paths.secrets_dir.clone(),
            },
            secrets_dir: config.paths.secrets_dir.clone(),
        }
    }
}

/// Per-service bookkeeping the status does not show.
struct Runtime {
    spec: ServiceSpec,
    hash: String,
    status: ServiceStatus,
    /// Its state machine (pure): state, intent, probe bookkeeping.
    core: Core,
}

pub struct Supervisor {
    cfg: SupervisorConfig,
    project: String,
    network: String,
    order: Vec<String>,
    services: HashMap<String, Runtime>,
    /// Services the admin stopped (`services-stopped.json`), kept across
    /// daemon restarts; the in-memory truth is each core's [`Intent`].
    kept_stopped: HashSet<String>,
    /// Services waiting for their dependencies before the first start.
    pending_start: Vec<String>,
    state_tx: Arc<watch::Sender<Arc<Vec<ServiceStatus>>>>,
    docker_down_logged: bool,
    /// Images an update put in place of the catalog's (see [`Command::SetImage`]).
    overrides: BTreeMap<String, ImageOverride>,
    catalog_images: HashMap<String, String>,
    /// Where an applied catalog is kept for the next start of this worker.
    applied_catalog: Option<Arc<std::sync::Mutex<Catalog>>>,
    /// The engine's CPU count (`docker info`): a `cpu_limit` above it is
    /// clamped, not sent (the engine refuses it).
    host_cpus: Option<f64>,
    /// This install's id, on every container it creates ([`LABEL_OWNER`]).
    owner: String,
    /// Containers of the project that are not in the catalog and that
    /// another daemon created: left alone, logged once each.
    foreign_logged: HashSet<String>,
    /// The engine lists the `nvidia` runtime (`docker info`): `gpu: auto`
    /// services get the GPU.
    engine_nvidia: bool,
    /// Pulls of missing images, by image; their progress comes back on
    /// `pull_tx`'s channel. Aborted when the engine goes away.
    pulls: HashMap<String, PullSlot>,
    pull_jobs: JoinSet<()>,
    pull_tx: Option<mpsc::Sender<PullEvent>>,
    /// Services with a stop or restart in flight, and the commands for them
    /// that wait their turn (in order).
    busy: HashSet<String>,
    deferred: std::collections::VecDeque<Command>,
    done_tx: Option<mpsc::Sender<Finished>>,
}

type Reply = oneshot::Sender<Result<(), SupervisorError>>;

/// The end of a stop or restart that ran as a job beside the loop (up to
/// `docker.stop_timeout`: events, probes and the heartbeat go on meanwhile).
enum Finished {
    Stop {
        name: String,
        result: Result<(), SupervisorError>,
        reply: Reply,
    },
    Restart {
        name: String,
        id: String,
        result: Result<(), SupervisorError>,
        reply: Reply,
    },
}

/// One image's pull: running, or refused (for space) until `retry_at`.
#[derive(Default)]
struct PullSlot {
    running: bool,
    retry_at: Option<Instant>,
    refused: Option<String>,
}

/// One service's image as the updater set it, with the catalog image it
/// replaced: when the catalog itself names another image later, the admin's
/// edit wins and the override is dropped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct ImageOverride {
    catalog: String,
    image: String,
}

/// A service's probe: liveness, and the model check when one ran.
type ProbeResult = (String, Result<(), String>, Option<Result<(), String>>);

/// The runtime record of a service not seen in Docker yet.
fn new_runtime(spec: ServiceSpec, hash: String, intent: Intent, now: Instant) -> Runtime {
    let s = &spec;
    let core = Core::new(s.health.clone(), intent, now);
    Runtime {
        hash,
        status: ServiceStatus {
            name: s.name.clone(),
            role: s.role,
            critical: s.critical,
            state: ServiceState::Unknown,
            stopped_on_purpose: core.stopped_on_purpose(),
            image: s.image.clone(),
            image_id: None,
            container_id: None,
            address: None,
            api_port: s.api_port(),
            web_port: s.web_port(),
            started_at: None,
            restart_count: 0,
            last_restart_at: None,
            last_exit_code: None,
            oom_killed: false,
            health_failures: 0,
            last_error: None,
            pull: None,
            gpu: None,
            since: Utc::now(),
        },
        spec,
        core,
    }
}

impl Supervisor {
    pub fn new(
        cfg: SupervisorConfig,
        catalog: &Catalog,
        state_tx: Arc<watch::Sender<Arc<Vec<ServiceStatus>>>>,
    ) -> Supervisor {
        let order: Vec<String> = start_order(catalog)
            .map(|o| o.into_iter().map(|s| s.name.clone()).collect())
            .unwrap_or_else(|_| catalog.services.iter().map(|s| s.name.clone()).collect());
        let kept_stopped = load_stopped(&cfg.state_dir);
        let catalog_images: HashMap<String, String> = catalog
            .services
            .iter()
            .map(|s| (s.name.clone(), s.image.clone()))
            .collect();
        let mut overrides = load_overrides(&cfg.state_dir);
        overrides.retain(|name, o| {
            let keep = catalog_images.get(name) == Some(&o.catalog);
            if !keep {
                tracing::warn!(service = %name, image = %o.image, "the catalog changed this service's image: the image an update set is dropped");
            }
            keep
        });
        let owner = instance_id(&cfg.state_dir);
        let now = Instant::now();
        let services = catalog
            .services
            .iter()
            .map(|s| {
                let mut s = s.clone();
                if let Some(o) = overrides.get(&s.name) {
                    s.image = o.image.clone();
                }
                let intent = intent_at_start(&kept_stopped, &s.name);
                let hash = service_hash(&s, &catalog.network, &cfg.secrets_dir);
                let rt = new_runtime(s, hash, intent, now);
                (rt.spec.name.clone(), rt)
            })
            .collect();
        let sup = Supervisor {
            cfg,
            project: catalog.project.clone(),
            network: catalog.network.clone(),
            order,
            services,
            kept_stopped,
            pending_start: Vec::new(),
            state_tx,
            docker_down_logged: false,
            overrides,
            catalog_images,
            applied_catalog: None,
            host_cpus: None,
            owner,
            foreign_logged: HashSet::new(),
            engine_nvidia: false,
            pulls: HashMap::new(),
            pull_jobs: JoinSet::new(),
            pull_tx: None,
            busy: HashSet::new(),
            deferred: Default::default(),
            done_tx: None,
        };
        sup.publish();
        sup
    }

    /// Each catalog applied later ([`Command::SetCatalog`]) is written to
    /// `cell`, so a restart of the worker starts from it.
    pub fn remember_catalog_in(mut self, cell: Arc<std::sync::Mutex<Catalog>>) -> Self {
        self.applied_catalog = Some(cell);
        self
    }

    fn publish(&self) {
        let list: Vec<ServiceStatus> = self
            .order
            .iter()
            .filter_map(|n| self.services.get(n))
            .map(|r| ServiceStatus {
                gpu: self.gpu_choice(&r.spec).map(str::to_string),
                ..r.status.clone()
            })
            .collect();
        self.state_tx.send_replace(Arc::new(list));
    }

    /// Runs `f` on the service's state machine, then mirrors it into the
    /// status (a state change is logged and dated).
    fn with_core<R>(&mut self, name: &str, f: impl FnOnce(&mut Core) -> R) -> Option<R> {
        let rt = self.services.get_mut(name)?;
        let before = rt.core.state;
        let r = f(&mut rt.core);
        if rt.core.state != before {
            tracing::info!(service = name, from = ?before, to = ?rt.core.state, "service state");
            rt.status.since = Utc::now();
        }
        rt.status.state = rt.core.state;
        rt.status.health_failures = rt.core.health_failures;
        rt.status.last_exit_code = rt.core.last_exit_code;
        rt.status.stopped_on_purpose = rt.core.stopped_on_purpose();
        Some(r)
    }

    fn set_state(&mut self, name: &str, state: ServiceState) {
        self.with_core(name, |c| c.set_state(state));
    }

    fn intent(&self, name: &str) -> Intent {
        self.services
            .get(name)
            .map_or(Intent::Run, |rt| rt.core.intent)
    }

    fn stopped_on_purpose(&self, name: &str) -> bool {
        self.services
            .get(name)
            .is_some_and(|rt| rt.core.stopped_on_purpose())
    }

    /// The worker body: connect, reconcile, then follow events, probes and
    /// commands until Docker goes away (reconnect) or shutdown.
    pub async fn run(
        mut self,
        ctx: WorkerCtx,
        commands: &mut mpsc::Receiver<Command>,
    ) -> anyhow::Result<()> {
        let mut backoff = Duration::from_secs(1);
        loop {
            ctx.beat();
            let docker = match connect(&self.cfg.socket).await {
                Ok(d) => d,
                Err(e) => {
                    self.docker_unreachable(&e);
                    let until = Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    // Keep answering commands (with an error) while waiting.
                    loop {
                        ctx.beat();
                        tokio::select! {
                            _ = ctx.cancel.cancelled() => return Ok(()),
                            _ = tokio::time::sleep_until(until.min(Instant::now() + Duration::from_secs(1))) => {
                                if Instant::now() >= until { break; }
                            }
                            Some(cmd) = commands.recv() => reject(cmd, &e),
                        }
                    }
                    continue;
                }
            };
            backoff = Duration::from_secs(1);
            if self.docker_down_logged {
                tracing::info!("Docker engine reachable again");
                self.docker_down_logged = false;
            }
            match self.connected(&ctx, &docker, commands).await {
                Ok(()) => return Ok(()), // shutdown
                Err(e) => self.docker_unreachable(&format!("{e:#}")),
            }
        }
    }

    fn docker_unreachable(&mut self, why: &str) {
        if !self.docker_down_logged {
            tracing::error!(critical = true, error = %why, "Docker engine unreachable: every service is unknown");
            self.docker_down_logged = true;
        }
        let names: Vec<String> = self.order.clone();
        for n in &names {
            self.set_state(n, ServiceState::Unknown);
        }
        self.publish();
    }

    async fn connected(
        &mut self,
        ctx: &WorkerCtx,
        docker: &Docker,
        commands: &mut mpsc::Receiver<Command>,
    ) -> anyhow::Result<()> {
        // Subscribe before reconciling so no event in between is missed.
        let mut events = docker.events(Some(EventsOptions {
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{LABEL_PROJECT}={}", self.project)],
                ),
            ])),
            ..Default::default()
        }));
        let info = docker.info().await?;
        self.host_cpus = info.ncpu.filter(|n| *n > 0).map(|n| n as f64);
        self.engine_nvidia = info
            .runtimes
            .as_ref()
            .is_some_and(|r| r.contains_key("nvidia"));
        // Pulls of an earlier connection are gone with it.
        self.pull_jobs.abort_all();
        self.pulls.clear();
        for rt in self.services.values_mut() {
            rt.status.pull = None;
        }
        let (pull_tx, mut pull_rx) = mpsc::channel(64);
        self.pull_tx = Some(pull_tx);
        // Stops and restarts of an earlier connection went with it.
        self.busy.clear();
        for cmd in std::mem::take(&mut self.deferred) {
            reject(cmd, "the connection to the Docker engine was reset");
        }
        let (done_tx, mut done_rx) = mpsc::channel(16);
        self.done_tx = Some(done_tx);
        self.ensure_network(docker).await?;
        self.reconcile(docker).await?;
        let mut probes: JoinSet<ProbeResult> = JoinSet::new();
        // Long jobs (image loads) run beside the loop so events, probes and
        // the heartbeat go on; aborted with the loop.
        let mut jobs: JoinSet<()> = JoinSet::new();
        // The first tick (which may start containers) waits a moment so the
        // events subscription is in place before anything can die.
        let mut tick = tokio::time::interval_at(
            Instant::now() + Duration::from_millis(300),
            Duration::from_millis(500),
        );
        let mut reconcile_tick = tokio::time::interval(Duration::from_secs(30));
        reconcile_tick.tick().await;
        loop {
            ctx.beat();
            tokio::select! {
                _ = ctx.cancel.cancelled() => {
                    probes.abort_all();
                    jobs.abort_all();
                    self.pull_jobs.abort_all();
                    return Ok(());
                }
                Some(ev) = pull_rx.recv() => self.on_pull(ev),
                Some(f) = done_rx.recv() => self.on_finished(docker, f, &mut jobs).await,
                ev = events.next() => match ev {
                    Some(Ok(ev)) => self.on_event(docker, ev).await,
                    Some(Err(e)) => anyhow::bail!("events stream failed: {e}"),
                    None => anyhow::bail!("events stream ended"),
                },
                Some(cmd) = commands.recv() => self.on_command(docker, cmd, &mut jobs).await,
                Some(_) = jobs.join_next() => {}
                _ = tick.tick() => {
                    self.start_ready(docker).await;
                    self.schedule_probes(docker, &mut probes).await;
                }
                _ = reconcile_tick.tick() => {
                    // Catches what events cannot: an image loaded later, a
                    // container removed by hand.
                    docker.ping().await?;
                    self.reconcile(docker).await?;
                }
                Some(done) = probes.join_next() => {
                    if let Ok((name, live, model)) = done {
                        self.on_probe(&name, live, model);
                    }
                }
            }
        }
    }

    async fn ensure_network(&self, docker: &Docker) -> anyhow::Result<()> {
        // No services, no network (a daemon with an empty catalog leaves
        // the engine alone).
        if self.order.is_empty() {
            return Ok(());
        }
        // Listed, not inspected by name: when two daemons raced to create
        // it, the name is ambiguous to inspect and every later start would
        // add one more network with the same name.
        let existing = docker
            .list_networks(Some(bollard::query_parameters::ListNetworksOptions {
                filters: Some(HashMap::from([(
                    "name".to_string(),
                    vec![self.network.clone()],
                )])),
            }))
            .await?;
        if existing
            .iter()
            .any(|n| n.name.as_deref() == Some(self.network.as_str()))
        {
            return Ok(());
        }
        docker
            .create_network(NetworkCreateRequest {
                name: self.network.clone(),
                driver: Some("bridge".into()),
                labels: Some(HashMap::from([(
                    LABEL_MANAGED.to_string(),
                    "true".to_string(),
                )])),
                ..Default::default()
            })
            .await?;
        tracing::info!(network = %self.network, "created network");
        Ok(())
    }

    /// Brings Docker in line with the catalog: adopt matching containers,
    /// recreate changed ones, queue missing ones for an ordered start.
    async fn reconcile(&mut self, docker: &Docker) -> anyhow::Result<()> {
        let existing = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(HashMap::from([(
                    "label".to_string(),
                    vec![format!("{LABEL_PROJECT}={}", self.project)],
                )])),
                ..Default::default()
            }))
            .await?;
        let mut by_service: HashMap<String, (String, String, bool)> = HashMap::new();
        let mut owners: HashMap<String, String> = HashMap::new();
        for c in existing {
            let labels = c.labels.unwrap_or_default();
            let (Some(svc), Some(id)) = (labels.get(LABEL_SERVICE), c.id) else {
                continue;
            };
            let hash = labels.get(LABEL_SPEC_HASH).cloned().unwrap_or_default();
            let running = c.state.map(|s| s.to_string() == "running").unwrap_or(false);
            owners.insert(
                id.clone(),
                labels.get(LABEL_OWNER).cloned().unwrap_or_default(),
            );
            by_service.insert(svc.clone(), (id, hash, running));
        }
        for name in self.order.clone() {
            let (hash, image, current) = {
                let rt = &self.services[&name];
                (rt.hash.clone(), rt.spec.image.clone(), rt.status.state)
            };
            let on_purpose = self.stopped_on_purpose(&name);
            match by_service.remove(&name) {
                Some((id, h, running)) if h == hash => {
                    self.adopt(docker, &name, &id).await;
                    if running {
                        if current == ServiceState::Unknown {
                            tracing::info!(service = %name, container = %id, "adopted running container");
                        }
                    } else if on_purpose {
                        self.set_state(&name, ServiceState::Stopped);
                    } else if matches!(current, ServiceState::Starting | ServiceState::Healthy) {
                        // It died before the events stream was listening
                        // (or the event was lost): correct the state here.
                        tracing::warn!(service = %name, "container is not running; its exit was not seen as an event");
                        self.set_state(&name, ServiceState::Unhealthy);
                    } else if !self.pending_start.contains(&name)
                        && matches!(current, ServiceState::Unknown | ServiceState::ImageMissing)
                    {
                        self.pending_start.push(name.clone());
                    }
                }
                Some((id, _, _)) => {
                    tracing::info!(service = %name, "spec changed: recreating the container");
                    remove(docker, &id).await?;
                    self.clear_container(&name);
                    if on_purpose {
                        self.set_state(&name, ServiceState::Stopped);
                    } else if !self.pending_start.contains(&name) {
                        self.pending_start.push(name.clone());
                    }
                }
                None => {
                    self.clear_container(&name);
                    if on_purpose {
                        self.set_state(&name, ServiceState::Stopped);
                    } else if docker.inspect_image(&image).await.is_err() {
                        if current != ServiceState::ImageMissing {
                            tracing::warn!(service = %name, image = %image, "image missing; not starting");
                        }
                        self.image_missing(docker, &name);
                    } else if !self.pending_start.contains(&name)
                        && !matches!(current, ServiceState::Starting | ServiceState::Restarting)
                    {
                        self.pending_start.push(name.clone());
                    }
                }
            }
        }
        // Containers of the project whose service is no longer in the
        // catalog: only those this daemon created go. Another daemon's
        // (a second install, a development daemon on the same engine and
        // project) are left running, logged once.
        for (svc, (id, _, _)) in by_service {
            let owner = owners.get(&id).map(String::as_str).unwrap_or_default();
            if owner == self.owner {
                tracing::info!(service = %svc, container = %id, "removing container of a service no longer in the catalog");
                remove(docker, &id).await?;
            } else if self.foreign_logged.insert(id.clone()) {
                tracing::warn!(
                    service = %svc,
                    container = %id,
                    project = %self.project,
                    owner = if owner.is_empty() { "unknown" } else { owner },
                    "a container of this project that is not in the catalog was created by another daemon: left alone"
                );
            }
        }
        self.publish();
        Ok(())
    }

    /// The service's image is not on the engine: `image_missing`, and a pull
    /// starts (`docker.pull: auto`) unless one runs or was refused a moment ago.
    fn image_missing(&mut self, docker: &Docker, name: &str) {
        self.set_state(name, ServiceState::ImageMissing);
        let image = self.services[name].spec.image.clone();
        if self.cfg.pull.policy == PullPolicy::Never {
            if let Some(rt) = self.services.get_mut(name) {
                rt.status.last_error = Some(format!(
                    "image {image} is not on this box and docker.pull is never: load it from an update bundle or a USB stick"
                ));
            }
            return;
        }
        let Some(tx) = self.pull_tx.clone() else {
            return;
        };
        let slot = self.pulls.entry(image.clone()).or_default();
        if slot.running || slot.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        slot.running = true;
        slot.retry_at = None;
        while self.pull_jobs.try_join_next().is_some() {}
        self.pull_jobs
            .spawn(pull::run(docker.clone(), image, self.cfg.pull.clone(), tx));
    }

    /// Progress or the end of a pull, for every service on that image.
    fn on_pull(&mut self, ev: PullEvent) {
        match ev {
            PullEvent::Progress(p) => {
                for rt in self.services.values_mut() {
                    if rt.spec.image == p.image {
                        rt.status.last_error = Some(match &p.last_error {
                            Some(e) => format!("pulling {} (attempt {}; {e})", p.image, p.attempt),
                            None => format!("pulling {}", p.image),
                        });
                        rt.status.pull = Some(p.clone());
                    }
                }
            }
            PullEvent::Done { image, result } => {
                let slot = self.pulls.entry(image.clone()).or_default();
                slot.running = false;
                if let Err(why) = &result {
                    if slot.refused.as_ref() != Some(why) {
                        tracing::error!(critical = true, image = %image, error = %why, "image pull refused");
                    }
                    slot.refused = Some(why.clone());
                    slot.retry_at = Some(Instant::now() + self.cfg.pull.retry_max);
                } else {
                    self.pulls.remove(&image);
                }
                let names: Vec<String> = self
                    .order
                    .iter()
                    .filter(|n| self.services[*n].spec.image == image)
                    .cloned()
                    .collect();
                for name in names {
                    let waiting = !self.stopped_on_purpose(&name)
                        && self.services[&name].core.state == ServiceState::ImageMissing;
                    if let Some(rt) = self.services.get_mut(&name) {
                        rt.status.pull = None;
                        rt.status.last_error = result.clone().err();
                    }
                    if result.is_ok() && waiting && !self.pending_start.contains(&name) {
                        self.pending_start.push(name);
                    }
                }
            }
        }
        self.publish();
    }

    /// How the service gets the GPU on this engine; None: it does not ask.
    fn gpu_choice(&self, spec: &ServiceSpec) -> Option<&'static str> {
        gpu_choice(spec.gpu, self.cfg.nvidia_runtime, self.engine_nvidia)
    }

    fn clear_container(&mut self, name: &str) {
        if let Some(rt) = self.services.get_mut(name) {
            rt.status.container_id = None;
            rt.status.address = None;
        }
    }

    /// Records what inspect says about the service's container.
    async fn adopt(&mut self, docker: &Docker, name: &str, id: &str) {
        let Ok(info) = docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        else {
            return;
        };
        let network = self.network.clone();
        let Some(rt) = self.services.get_mut(name) else {
            return;
        };
        rt.status.container_id = Some(id.to_string());
        rt.status.image_id = info.image.clone();
        rt.status.address = info
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .and_then(|n| n.get(&network))
            .and_then(|e| e.ip_address.clone())
            .filter(|ip| !ip.is_empty());
        let Some(st) = info.state else {
            return;
        };
        rt.status.oom_killed = st.oom_killed.unwrap_or(false);
        rt.status.started_at = st
            .started_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let running = st.running == Some(true);
        self.with_core(name, |c| {
            c.last_exit_code = st.exit_code.filter(|_| !running);
            if running {
                c.adopted_running(Instant::now());
            }
        });
    }

    /// Starts queued services whose dependencies are healthy (or have had
    /// their whole start budget).
    async fn start_ready(&mut self, docker: &Docker) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.pending_start.len() {
            let name = self.pending_start[i].clone();
            if self.intent(&name) == Intent::Failed {
                self.pending_start.remove(i);
                continue;
            }
            let waiting_for = self.services[&name]
                .spec
                .depends_on
                .iter()
                .find(|d| !self.services[*d].core.ready_for_dependents(now));
            if let Some(dep) = waiting_for {
                // Shown, so the owner sees what holds it back.
                let why = format!(
                    "waiting for {dep} ({})",
                    serde_json::to_value(self.services[dep].core.state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                );
                if let Some(rt) = self.services.get_mut(&name) {
                    rt.status.last_error = Some(why);
                }
                i += 1;
            } else {
                self.pending_start.remove(i);
                if let Err(e) = self.create_and_start(docker, &name).await {
                    tracing::warn!(service = %name, error = %e, "start failed");
                    if let Some(rt) = self.services.get_mut(&name) {
                        rt.status.last_error = Some(e.to_string());
                    }
                }
                self.publish();
            }
        }
    }

    async fn create_and_start(
        &mut self,
        docker: &Docker,
        name: &str,
    ) -> Result<(), SupervisorError> {
        let rt = &self.services[name];
        let id = match rt.status.container_id.clone() {
            Some(id) => id,
            None => {
                if docker.inspect_image(&rt.spec.image).await.is_err() {
                    let image = rt.spec.image.clone();
                    self.image_missing(docker, name);
                    return Err(SupervisorError::ImageMissing(image));
                }
                let secret_env = match secret_env(&rt.spec, &self.cfg.secrets_dir) {
                    Ok(env) => env,
                    Err(e) => {
                        let why = format!("its secrets cannot be read or made: {e}");
                        tracing::error!(service = name, error = %why, "container not started");
                        self.with_core(name, |c| c.want(Intent::Failed));
                        if let Some(rt) = self.services.get_mut(name) {
                            rt.status.last_error = Some(why.clone());
                        }
                        return Err(SupervisorError::Docker(why));
                    }
                };
                if let (Some(want), Some(host)) = (rt.spec.cpu_limit, self.host_cpus)
                    && want > host
                {
                    tracing::warn!(
                        service = name,
                        cpu_limit = want,
                        host_cpus = host,
                        "cpu_limit exceeds the host's cores: clamped to the host"
                    );
                }
                let body = container_body(
                    &rt.spec,
                    &self.cfg,
                    Placement {
                        hash: &rt.hash,
                        owner: &self.owner,
                        project: &self.project,
                        network: &self.network,
                        host_cpus: self.host_cpus,
                        gpu: self.gpu_choice(&rt.spec),
                        secret_env,
                    },
                );
                let created = docker
                    .create_container(
                        Some(CreateContainerOptions {
                            name: Some(format!("{}-{name}", self.project)),
                            ..Default::default()
                        }),
                        body,
                    )
                    .await
                    .map_err(|e| self.engine_refused(name, e))?;
                tracing::info!(service = name, container = %created.id, "created container");
                // Recorded now: a start that fails is retried on this container.
                if let Some(rt) = self.services.get_mut(name) {
                    rt.status.container_id = Some(created.id.clone());
                }
                created.id
            }
        };
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| self.engine_refused(name, e))?;
        if let Some(rt) = self.services.get_mut(name) {
            rt.status.container_id = Some(id.clone());
            rt.status.last_error = None;
        }
        self.with_core(name, |c| c.started(Instant::now(), now_ns()));
        self.adopt(docker, name, &id).await;
        Ok(())
    }

    /// A create or start the engine answered with an error is that
    /// service's failure, with the engine's words, not an outage: a 400
    /// (the request itself is wrong: a limit the host cannot give) marks it
    /// `failed` until the catalog or the admin changes something; any other
    /// answer leaves it `unhealthy` for the healing policy. Only an engine
    /// that does not answer is "Docker unreachable".
    fn engine_refused(&mut self, name: &str, e: bollard::errors::Error) -> SupervisorError {
        let bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } = &e
        else {
            return docker_err(e);
        };
        let (why, state) = if *status_code == 400 {
            (
                format!("the Docker engine refused it: {message}"),
                ServiceState::Failed,
            )
        } else {
            (
                format!("the Docker engine could not start it ({status_code}): {message}"),
                ServiceState::Unhealthy,
            )
        };
        tracing::error!(service = name, error = %why, "container not started");
        if state == ServiceState::Failed {
            self.with_core(name, |c| c.want(Intent::Failed));
        } else {
            self.set_state(name, state);
        }
        if let Some(rt) = self.services.get_mut(name) {
            rt.status.last_error = Some(why.clone());
        }
        SupervisorError::Docker(why)
    }

    async fn on_command(&mut self, docker: &Docker, cmd: Command, jobs: &mut JoinSet<()>) {
        // A stop or restart in flight: commands for that service, and a new
        // catalog (it may recreate any container), wait their turn.
        let waits = match &cmd {
            Command::SetCatalog(..) => !self.busy.is_empty(),
            c => c.service().is_some_and(|n| self.busy.contains(n)),
        };
        if waits {
            self.deferred.push_back(cmd);
            return;
        }
        match cmd {
            // Published before the reply, so whoever asked sees the new
            // state as soon as the command returns.
            Command::Start(name, reply) => {
                let r = self.cmd_start(docker, &name).await;
                self.publish();
                let _ = reply.send(r);
            }
            Command::Stop(name, reply) => self.begin_stop(docker, name, true, reply, jobs),
            Command::StopTransient(name, reply) => {
                self.begin_stop(docker, name, false, reply, jobs)
            }
            Command::Restart(name, reply) => self.begin_restart(docker, name, reply, jobs).await,
            Command::MarkFailed(name, reply) => {
                let r = self.known(&name).map(|()| {
                    self.pending_start.retain(|n| n != &name);
                    self.with_core(&name, |c| c.want(Intent::Failed));
                });
                self.publish();
                let _ = reply.send(r);
            }
            Command::PruneImages(reply) => {
                let r = self.prune_images(docker).await;
                let _ = reply.send(r);
            }
            Command::Logs {
                name,
                tail,
                follow,
                reply,
            } => {
                let r = self.logs(docker, &name, tail, follow);
                let _ = reply.send(r);
            }
            Command::LoadImage(path, reply) => {
                let docker = docker.clone();
                jobs.spawn(async move {
                    let _ = reply.send(load_image(&docker, &path).await);
                });
            }
            Command::ImageId(reference, reply) => {
                let r = match docker.inspect_image(&reference).await {
                    Ok(i) => Ok(i.id),
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => Ok(None),
                    Err(e) => Err(docker_err(e)),
                };
                let _ = reply.send(r);
            }
            Command::TagImage {
                id,
                reference,
                reply,
            } => {
                let (repo, tag) = split_reference(&reference);
                let r = docker
                    .tag_image(
                        &id,
                        Some(bollard::query_parameters::TagImageOptions {
                            repo: Some(repo),
                            tag: Some(tag),
                        }),
                    )
                    .await
                    .map_err(docker_err);
                let _ = reply.send(r);
            }
            Command::SetImage {
                service,
                image,
                reply,
            } => {
                let r = self.cmd_set_image(docker, &service, image).await;
                self.publish();
                let _ = reply.send(r);
            }
            Command::ImageOverrides(reply) => {
                let map = self
                    .overrides
                    .iter()
                    .map(|(k, o)| (k.clone(), o.image.clone()))
                    .collect();
                let _ = reply.send(Ok(map));
            }
            Command::SetCatalog(catalog, reply) => {
                let r = self.cmd_set_catalog(docker, *catalog).await;
                self.publish();
                let _ = reply.send(r);
            }
        }
        self.publish();
    }

    /// Takes a reloaded catalog: services whose spec changed are recreated,
    /// new ones start, removed ones go; the rest keep running untouched.
    /// The project and network name the box's containers: changing them
    /// needs a restart. Replies with what changed.
    async fn cmd_set_catalog(
        &mut self,
        docker: &Docker,
        catalog: Catalog,
    ) -> Result<Vec<String>, SupervisorError> {
        if catalog.project != self.project || catalog.network != self.network {
            return Err(SupervisorError::NeedsRestart(
                "a new project or network name".into(),
            ));
        }
        let order: Vec<String> = start_order(&catalog)
            .map_err(SupervisorError::Docker)?
            .into_iter()
            .map(|s| s.name.clone())
            .collect();
        self.catalog_images = catalog
            .services
            .iter()
            .map(|s| (s.name.clone(), s.image.clone()))
            .collect();
        let before = self.overrides.len();
        let images = &self.catalog_images;
        self.overrides.retain(|name, o| {
            let keep = images.get(name) == Some(&o.catalog);
            if !keep {
                tracing::warn!(service = %name, image = %o.image, "the catalog changed this service's image: the image an update set is dropped");
            }
            keep
        });
        if self.overrides.len() != before
            && let Err(e) = save_overrides(&self.cfg.state_dir, &self.overrides)
        {
            tracing::warn!(error = %e, "cannot persist the image overrides");
        }
        let now = Instant::now();
        let mut changed = Vec::new();
        let mut recreate = HashSet::new();
        let mut services = HashMap::new();
        for spec in &catalog.services {
            let mut spec = spec.clone();
            if let Some(o) = self.overrides.get(&spec.name) {
                spec.image = o.image.clone();
            }
            let name = spec.name.clone();
            let hash = service_hash(&spec, &self.network, &self.cfg.secrets_dir);
            let rt = match self.services.remove(&name) {
                Some(rt) if rt.hash == hash => rt,
                Some(mut rt) => {
                    changed.push(format!("{name}: changed"));
                    recreate.insert(name.clone());
                    rt.status.role = spec.role;
                    rt.status.critical = spec.critical;
                    rt.status.image = spec.image.clone();
                    rt.status.api_port = spec.api_port();
                    rt.status.web_port = spec.web_port();
                    rt.core.respec(spec.health.clone());
                    rt.spec = spec;
                    rt.hash = hash;
                    rt
                }
                None => {
                    changed.push(format!("{name}: added"));
                    recreate.insert(name.clone());
                    let intent = intent_at_start(&self.kept_stopped, &name);
                    new_runtime(spec, hash, intent, now)
                }
            };
            services.insert(name, rt);
        }
        for name in self.services.keys() {
            changed.push(format!("{name}: removed"));
            self.pending_start.retain(|n| n != name);
        }
        self.services = services;
        self.order = order;
        if let Some(cell) = &self.applied_catalog {
            *cell.lock().unwrap() = catalog;
        }
        for c in &changed {
            tracing::info!("service catalog reloaded: {c}");
        }
        // Removes the containers of what changed or went; what changed or
        // is new starts now, in dependency order (as a switched image does),
        // so whoever reloaded sees it starting when the reply comes.
        self.reconcile(docker)
            .await
            .map_err(|e| SupervisorError::Docker(format!("{e:#}")))?;
        for name in self.order.clone() {
            if !recreate.contains(&name) || self.stopped_on_purpose(&name) {
                continue;
            }
            self.pending_start.retain(|n| n != &name);
            self.with_core(&name, |c| c.last_exit_code = None);
            self.create_and_start(docker, &name).await?;
        }
        Ok(changed)
    }

    /// Switches a service to `image` (None: the catalog's): persisted first,
    /// so a restart of the daemon keeps the switch; the old container goes
    /// and a new one starts unless the service is stopped on purpose.
    async fn cmd_set_image(
        &mut self,
        docker: &Docker,
        name: &str,
        image: Option<String>,
    ) -> Result<(), SupervisorError> {
        self.known(name)?;
        let catalog = self.catalog_images[name].clone();
        let target = image.clone().unwrap_or_else(|| catalog.clone());
        if docker.inspect_image(&target).await.is_err() {
            return Err(SupervisorError::ImageMissing(target));
        }
        match image {
            Some(i) if i != catalog => {
                self.overrides
                    .insert(name.to_string(), ImageOverride { catalog, image: i });
            }
            _ => {
                self.overrides.remove(name);
            }
        }
        save_overrides(&self.cfg.state_dir, &self.overrides).map_err(|e| {
            SupervisorError::Docker(format!("cannot persist the image switch: {e}"))
        })?;
        let (network, secrets) = (self.network.clone(), self.cfg.secrets_dir.clone());
        let old = {
            let rt = self.services.get_mut(name).expect("known");
            rt.spec.image = target.clone();
            rt.hash = service_hash(&rt.spec, &network, &secrets);
            rt.status.image = target.clone();
            rt.status.container_id.clone()
        };
        tracing::info!(service = name, image = %target, "switching the service's image");
        if self.intent(name) == Intent::Failed {
            self.with_core(name, |c| c.want(Intent::Run));
        }
        self.pending_start.retain(|n| n != name);
        if let Some(id) = old {
            remove(docker, &id)
                .await
                .map_err(|e| SupervisorError::Docker(format!("{e:#}")))?;
            self.clear_container(name);
        }
        if self.stopped_on_purpose(name) {
            self.set_state(name, ServiceState::Stopped);
            return Ok(());
        }
        self.create_and_start(docker, name).await
    }

    fn known(&self, name: &str) -> Result<(), SupervisorError> {
        if self.services.contains_key(name) {
            Ok(())
        } else {
            Err(SupervisorError::UnknownService(name.into()))
        }
    }

    /// A new intent for the service; an admin's stop (or its end) is
    /// written to the stopped-services file.
    fn want(&mut self, name: &str, intent: Intent) {
        self.with_core(name, |c| c.want(intent));
        let kept = self.intent(name) == Intent::Stopped;
        if kept != self.kept_stopped.contains(name) {
            if kept {
                self.kept_stopped.insert(name.to_string());
            } else {
                self.kept_stopped.remove(name);
            }
            if let Err(e) = save_stopped(&self.cfg.state_dir, &self.kept_stopped) {
                tracing::warn!(error = %e, "could not persist the stopped-services list");
            }
        }
    }

    async fn cmd_start(&mut self, docker: &Docker, name: &str) -> Result<(), SupervisorError> {
        self.known(name)?;
        // Started again after self-healing stopped it: that pair is a restart.
        let restart = self.intent(name) == Intent::Paused;
        self.want(name, Intent::Run);
        self.pending_start.retain(|n| n != name);
        self.create_and_start(docker, name).await?;
        if restart && let Some(rt) = self.services.get_mut(name) {
            rt.status.last_restart_at = Some(Utc::now());
        }
        Ok(())
    }

    /// Records the stop (so the exit that follows reads as intended) and
    /// runs `docker stop` as a job; [`Self::on_finished`] replies.
    fn begin_stop(
        &mut self,
        docker: &Docker,
        name: String,
        persist: bool,
        reply: Reply,
        jobs: &mut JoinSet<()>,
    ) {
        if let Err(e) = self.known(&name) {
            let _ = reply.send(Err(e));
            return;
        }
        self.want(
            &name,
            if persist {
                Intent::Stopped
            } else {
                Intent::Paused
            },
        );
        self.pending_start.retain(|n| n != &name);
        let id = self.services[&name].status.container_id.clone();
        let (Some(id), Some(done)) = (id, self.done_tx.clone()) else {
            self.set_state(&name, ServiceState::Stopped);
            self.publish();
            let _ = reply.send(Ok(()));
            return;
        };
        self.publish();
        self.busy.insert(name.clone());
        let docker = docker.clone();
        let t = self.cfg.stop_timeout.as_secs() as i32;
        jobs.spawn(async move {
            let options = StopContainerOptions {
                t: Some(t),
                ..Default::default()
            };
            let result = match docker.stop_container(&id, Some(options)).await {
                Ok(()) => Ok(()),
                // 304: already stopped.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 304, ..
                }) => Ok(()),
                Err(e) => Err(docker_err(e)),
            };
            let _ = done
                .send(Finished::Stop {
                    name,
                    result,
                    reply,
                })
                .await;
        });
    }

    /// `restarting` at once; `docker restart` runs as a job.
    async fn begin_restart(
        &mut self,
        docker: &Docker,
        name: String,
        reply: Reply,
        jobs: &mut JoinSet<()>,
    ) {
        if let Err(e) = self.known(&name) {
            let _ = reply.send(Err(e));
            return;
        }
        self.want(&name, Intent::Run);
        let id = self.services[&name].status.container_id.clone();
        let (Some(id), Some(done)) = (id, self.done_tx.clone()) else {
            let r = self.create_and_start(docker, &name).await;
            self.publish();
            let _ = reply.send(r);
            return;
        };
        self.set_state(&name, ServiceState::Restarting);
        self.publish();
        self.busy.insert(name.clone());
        let docker = docker.clone();
        let t = self.cfg.stop_timeout.as_secs() as i32;
        jobs.spawn(async move {
            let options = RestartContainerOptions {
                t: Some(t),
                ..Default::default()
            };
            let result = docker
                .restart_container(&id, Some(options))
                .await
                .map_err(docker_err);
            let _ = done
                .send(Finished::Restart {
                    name,
                    id,
                    result,
                    reply,
                })
                .await;
        });
    }

    /// A stop or restart job ended: its bookkeeping, the reply, then the
    /// commands that waited for it.
    async fn on_finished(&mut self, docker: &Docker, f: Finished, jobs: &mut JoinSet<()>) {
        let name = match f {
            Finished::Stop {
                name,
                result,
                reply,
            } => {
                if result.is_ok() && self.stopped_on_purpose(&name) {
                    self.set_state(&name, ServiceState::Stopped);
                }
                self.publish();
                let _ = reply.send(result);
                name
            }
            Finished::Restart {
                name,
                id,
                result,
                reply,
            } => {
                if result.is_ok() {
                    if let Some(rt) = self.services.get_mut(&name) {
                        rt.status.restart_count += 1;
                        rt.status.last_restart_at = Some(Utc::now());
                    }
                    self.with_core(&name, |c| c.started(Instant::now(), now_ns()));
                    self.adopt(docker, &name, &id).await;
                }
                self.publish();
                let _ = reply.send(result);
                name
            }
        };
        self.busy.remove(&name);
        let idle = self.busy.is_empty();
        let (mine, others): (Vec<Command>, Vec<Command>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|c| match c {
                Command::SetCatalog(..) => idle,
                c => c.service() == Some(name.as_str()),
            });
        self.deferred = others.into();
        for cmd in mine {
            self.on_command(docker, cmd, jobs).await;
        }
    }

    /// Only dangling images that carry this project's label: never an image
    /// of something else on the box.
    async fn prune_images(&self, docker: &Docker) -> Result<(u64, u64), SupervisorError> {
        let opts = bollard::query_parameters::PruneImagesOptions {
            filters: Some(HashMap::from([
                ("dangling".to_string(), vec!["true".to_string()]),
                (
                    "label".to_string(),
                    vec![format!("{LABEL_PROJECT}={}", self.project)],
                ),
            ])),
        };
        let r = docker.prune_images(Some(opts)).await.map_err(docker_err)?;
        let n = r
            .images_deleted
            .unwrap_or_default()
            .iter()
            .filter(|d| d.deleted.is_some())
            .count() as u64;
        Ok((n, r.space_reclaimed.unwrap_or(0).max(0) as u64))
    }

    fn logs(
        &self,
        docker: &Docker,
        name: &str,
        tail: usize,
        follow: bool,
    ) -> Result<super::LogLines, SupervisorError> {
        self.known(name)?;
        let id = self.services[name]
            .status
            .container_id
            .clone()
            .ok_or_else(|| SupervisorError::Docker(format!("{name} has no container")))?;
        let stream = docker
            .logs(
                &id,
                Some(LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    tail: tail.to_string(),
                    ..Default::default()
                }),
            )
            .map(|item| {
                item.map(|out| {
                    String::from_utf8_lossy(&out.into_bytes())
                        .trim_end()
                        .to_string()
                })
                .map_err(|e| e.to_string())
            });
        Ok(stream.boxed())
    }

    async fn on_event(&mut self, docker: &Docker, ev: EventMessage) {
        let action = ev.action.clone().unwrap_or_default();
        tracing::debug!(action = %action, "docker event");
        let attrs = ev
            .actor
            .as_ref()
            .and_then(|a| a.attributes.clone())
            .unwrap_or_default();
        let Some(name) = attrs.get(LABEL_SERVICE).cloned() else {
            return;
        };
        if !self.services.contains_key(&name) {
            return;
        }
        let id = ev.actor.as_ref().and_then(|a| a.id.clone());
        let ours = id.is_some() && id == self.services[&name].status.container_id;
        if action == "oom" {
            if let Some(rt) = self.services.get_mut(&name) {
                rt.status.oom_killed = true;
            }
            tracing::warn!(service = %name, "container ran out of memory");
        }
        if !ours {
            self.publish();
            return;
        }
        let event = match action.as_str() {
            "die" => Event::Died {
                exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
            },
            "stop" => Event::Stopped,
            "start" => Event::Started,
            "destroy" => Event::Destroyed,
            a if a.starts_with("health_status") => {
                Event::Health(a.ends_with("healthy") && !a.ends_with("unhealthy"))
            }
            _ => return,
        };
        let moved = self.with_core(&name, |c| c.on_event(event, ev.time_nano, Instant::now()));
        match event {
            Event::Died { exit_code } => {
                if let Some(rt) = self.services.get_mut(&name) {
                    rt.status.address = None;
                }
                if moved == Some(Some(ServiceState::Unhealthy)) {
                    tracing::warn!(service = %name, exit_code = ?exit_code, "container died");
                }
            }
            Event::Started => {
                if let Some(id) = id {
                    self.adopt(docker, &name, &id).await;
                }
            }
            Event::Destroyed => self.clear_container(&name),
            Event::Health(false) if moved.is_some() => {
                if let Some(rt) = self.services.get_mut(&name) {
                    rt.status.last_error = Some("docker healthcheck failing".into());
                }
            }
            _ => {}
        }
        self.publish();
    }

    async fn schedule_probes(&mut self, _docker: &Docker, probes: &mut JoinSet<ProbeResult>) {
        let now = Instant::now();
        let names: Vec<String> = self.order.clone();
        for name in names {
            let has_container = self.services[&name].status.container_id.is_some();
            let Some(Some(h)) = self.with_core(&name, |c| c.probe_due(now, has_container)) else {
                continue;
            };
            let Some(rt) = self.services.get_mut(&name) else {
                continue;
            };
            let Some(ip) = rt.status.address.clone() else {
                continue;
            };
            let role = rt.status.role;
            let check = rt
                .core
                .model_check_due(now)
                .then(|| h.model.clone().zip(h.http.as_ref().map(|p| p.port)))
                .flatten();
            rt.core.probe_started();
            probes.spawn(async move {
                let live = probe(&ip, &h).await;
                let model = match (&live, check) {
                    (Ok(()), Some((m, port))) => Some(model_check(&ip, port, role, &m).await),
                    _ => None,
                };
                (name, live, model)
            });
        }
        self.publish();
    }

    fn on_probe(
        &mut self,
        name: &str,
        live: Result<(), String>,
        model: Option<Result<(), String>>,
    ) {
        let now = Instant::now();
        if let Some(Some(shown)) = self.with_core(name, |c| {
            let result = c.with_model_check(live, model);
            c.on_probe(result, now)
        }) && let Some(rt) = self.services.get_mut(name)
        {
            rt.status.last_error = shown.err();
        }
        self.publish();
    }
}

fn reject(cmd: Command, why: &str) {
    let err = || SupervisorError::DockerUnavailable(why.to_string());
    match cmd {
        Command::Start(_, r)
        | Command::Stop(_, r)
        | Command::StopTransient(_, r)
        | Command::Restart(_, r)
        | Command::MarkFailed(_, r) => {
            let _ = r.send(Err(err()));
        }
        Command::Logs { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Command::LoadImage(_, r) => {
            let _ = r.send(Err(err()));
        }
        Command::ImageId(_, r) => {
            let _ = r.send(Err(err()));
        }
        Command::TagImage { reply, .. } | Command::SetImage { reply, .. } => {
            let _ = reply.send(Err(err()));
        }
        Command::PruneImages(r) => {
            let _ = r.send(Err(err()));
        }
        Command::ImageOverrides(r) => {
            let _ = r.send(Err(err()));
        }
        Command::SetCatalog(_, r) => {
            let _ = r.send(Err(err()));
        }
    }
}

/// `docker load` of a tarball streamed from disk (never whole in memory).
async fn load_image(
    docker: &Docker,
    path: &std::path::Path,
) -> Result<Vec<String>, SupervisorError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| SupervisorError::Docker(format!("open {}: {e}", path.display())))?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let mut out = docker.import_image_stream(
        bollard::query_parameters::ImportImageOptions {
            quiet: true,
            ..Default::default()
        },
        body,
        None,
    );
    let mut loaded = Vec::new();
    while let Some(item) = out.next().await {
        let info = item.map_err(docker_err)?;
        if let Some(e) = info.error_detail.and_then(|d| d.message) {
            return Err(SupervisorError::Docker(format!("docker load: {e}")));
        }
        if let Some(line) = info.stream {
            for l in line.lines() {
                if let Some(r) = l
                    .strip_prefix("Loaded image: ")
                    .or_else(|| l.strip_prefix("Loaded image ID: "))
                {
                    loaded.push(r.trim().to_string());
                }
            }
        }
    }
    tracing::info!(tarball = %path.display(), images = ?loaded, "image loaded");
    Ok(loaded)
}

/// `repo[:tag]` (a registry port is not a tag) → (repo, tag or "latest").
fn split_reference(r: &str) -> (String, String) {
    match r.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_string(), tag.to_string()),
        _ => (r.to_string(), "latest".to_string()),
    }
}

fn overrides_file(dir: &std::path::Path) -> PathBuf {
    dir.join("image-overrides.json")
}

fn load_overrides(dir: &std::path::Path) -> BTreeMap<String, ImageOverride> {
    std::fs::read(overrides_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_overrides(
    dir: &std::path::Path,
    map: &BTreeMap<String, ImageOverride>,
) -> std::io::Result<()> {
    save(&overrides_file(dir), &serde_json::to_vec_pretty(map)?)
}

/// Atomic (temp file, fsync, rename, fsync the dir), creating the state dir.
fn save(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::os::fs::write_atomic(path, bytes, crate::os::fs::PRIVATE)
}

async fn connect(socket: &str) -> Result<Docker, String> {
    let docker = Docker::connect_with_unix(socket, 30, bollard::API_DEFAULT_VERSION)
        .map_err(|e| e.to_string())?;
    // Debian's docker.io speaks an older API than bollard's default.
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| e.to_string())?;
    docker.ping().await.map_err(|e| e.to_string())?;
    Ok(docker)
}

fn now_ns() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

fn docker_err(e: bollard::errors::Error) -> SupervisorError {
    SupervisorError::Docker(e.to_string())
}

async fn remove(docker: &Docker, id: &str) -> anyhow::Result<()> {
    docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await?;
    Ok(())
}

/// The spec hash, plus a digest of the service's secret values when it has
/// any: a secret changed in its file (and a reload) recreates the container.
/// Missing secret files are made here, at first start.
fn service_hash(spec: &ServiceSpec, network: &str, secrets_dir: &std::path::Path) -> String {
    let hash = spec.spec_hash(network);
    if spec.secrets.is_empty() {
        return hash;
    }
    match secret_env(spec, secrets_dir) {
        Ok(env) => {
            let d = ring::digest::digest(&ring::digest::SHA256, env.join("\n").as_bytes());
            format!("{hash}-{}", hex::encode(&d.as_ref()[..4]))
        }
        Err(e) => {
            tracing::error!(service = %spec.name, error = %e, "the service's secrets cannot be read or made");
            hash
        }
    }
}

/// `VAR=value` for each of the service's secrets, read from its file in the
/// secrets dir; a missing file is generated (24 letters and digits, 0600).
fn secret_env(spec: &ServiceSpec, secrets_dir: &std::path::Path) -> std::io::Result<Vec<String>> {
    use rand::Rng;
    let mut env = Vec::new();
    for (var, file) in &spec.secrets {
        let path = secrets_dir.join(file);
        let value = match std::fs::read_to_string(&path) {
            Ok(v) => v.trim_end_matches(['\n', '\r']).to_string(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let v: String = rand::rng()
                    .sample_iter(rand::distr::Alphanumeric)
                    .take(24)
                    .map(char::from)
                    .collect();
                save(&path, format!("{v}\n").as_bytes())?;
                tracing::info!(service = %spec.name, file = %path.display(), "generated a secret");
                v
            }
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", path.display()),
                ));
            }
        };
        env.push(format!("{var}={value}"));
    }
    Ok(env)
}

/// What a container gets beside its spec: labels, limits of this host,
/// the GPU choice and the secrets' values.
struct Placement<'a> {
    hash: &'a str,
    owner: &'a str,
    project: &'a str,
    network: &'a str,
    host_cpus: Option<f64>,
    gpu: Option<&'static str>,
    secret_env: Vec<String>,
}

/// The container as Docker should create it from the spec.
fn container_body(spec: &ServiceSpec, cfg: &SupervisorConfig, p: Placement) -> ContainerCreateBody {
    let Placement {
        hash,
        owner,
        project,
        network,
        host_cpus,
        gpu,
        secret_env,
    } = p;
    let cpus = spec
        .cpu_limit
        .map(|c| host_cpus.map_or(c, |host| c.min(host)));
    let labels = HashMap::from([
        (LABEL_MANAGED.to_string(), "true".to_string()),
        (LABEL_PROJECT.to_string(), project.to_string()),
        (LABEL_SERVICE.to_string(), spec.name.clone()),
        (LABEL_SPEC_HASH.to_string(), hash.to_string()),
        (LABEL_OWNER.to_string(), owner.to_string()),
    ]);
    let mut port_bindings = HashMap::new();
    let mut exposed = Vec::new();
    for p in spec.port_mappings() {
        let key = format!("{}/tcp", p.container_port);
        exposed.push(key.clone());
        port_bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: Some(p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let (runtime, device_requests) = match gpu {
        Some("nvidia-runtime") => (Some("nvidia".to_string()), None),
        Some("device-request") => (
            None,
            Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(-1),
                capabilities: Some(vec![vec!["gpu".into()]]),
                ..Default::default()
            }]),
        ),
        _ => (None, None),
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(
            spec.env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .chain(secret_env)
                .collect(),
        ),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            binds: (!spec.volumes.is_empty()).then(|| spec.volumes.clone()),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            nano_cpus: cpus.map(|c| (c * 1e9) as i64),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), cfg.log_max_size.clone()),
                    ("max-file".to_string(), cfg.log_max_files.to_string()),
                ])),
            }),
            memory: spec
                .memory_limit
                .as_deref()
                .and_then(|m| parse_bytes(m).ok()),
            network_mode: Some(network.to_string()),
            runtime,
            device_requests,
            init: Some(true),
            ..Default::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_string(),
                EndpointSettings {
                    aliases: Some(vec![spec.name.clone()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    }
}

/// One health probe against the container's address on arasul-net.
async fn probe(ip: &str, h: &HealthSpec) -> Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let run = async {
        if let Some(t) = &h.tcp {
            tokio::net::TcpStream::connect((ip, t.port))
                .await
                .map_err(|e| format!("tcp {ip}:{}: {e}", t.port))?;
            return Ok(());
        }
        let Some(http) = &h.http else {
            return Ok(());
        };
        let mut s = tokio::net::TcpStream::connect((ip, http.port))
            .await
            .map_err(|e| format!("http {ip}:{}: {e}", http.port))?;
        let req = format!(
            "GET {} HTTP/1.0\r\nHost: {ip}:{}\r\nUser-Agent: arasuld-health\r\n\r\n",
            http.path, http.port
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s.read(&mut buf[got..]).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let line = String::from_utf8_lossy(&buf[..got]);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("no HTTP status from {ip}:{}", http.port))?;
        if code == http.status {
            Ok(())
        } else {
            Err(format!(
                "GET {} answered {code}, expected {}",
                http.path, http.status
            ))
        }
    };
    tokio::time::timeout(h.timeout, run)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {:?}", h.timeout)))
}

/// `health.model`: the LLM generates one token, the embedding service
/// returns a vector of the expected length, within the check's timeout.
/// Nothing to check (no model named, none loaded or installed) passes.
async fn model_check(ip: &str, port: u16, role: Role, m: &ModelCheck) -> Result<(), String> {
    use serde_json::{Value, json};
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    let base = format!("http://{host}:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(m.timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let get = |path: &str| {
        let url = format!("{base}{path}");
        let client = client.clone();
        async move {
            let v: Value = client
                .get(&url)
                .send()
                .await
                .map_err(|e| e.to_string())?
                .json()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(v)
        }
    };
    let names = |v: &Value| -> Vec<String> {
        v["models"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| m["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let embeddings = role == Role::Embeddings;
    let model = match &m.model {
        Some(name) => name.clone(),
        None => {
            // The loaded model (the LLM: no model is loaded for a check), or
            // the embedding service's first one.
            let listed = names(&get(if embeddings { "/api/tags" } else { "/api/ps" }).await?);
            let first = listed.first().cloned();
            // The embedding service's own store holds embedding models; on
            // a shared one, prefer one that says so.
            match listed
                .into_iter()
                .find(|n| embeddings && n.contains("embed"))
                .or(first)
            {
                Some(name) => name,
                None => return Ok(()),
            }
        }
    };
    let (path, body) = if embeddings {
        (
            "/api/embed",
            json!({"model": model, "input": "health check"}),
        )
    } else {
        (
            "/api/generate",
            json!({"model": model, "prompt": "Say OK.", "stream": false,
                   "options": {"num_predict": 1}}),
        )
    };
    let what = if embeddings { "embed" } else { "answer" };
    let resp = match client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
    {
        Ok(r) => r,
        // A runtime busy with a long generation answers late: that is not
        // a broken one, and restarting it would cut the owner's answer off.
        Err(e) if e.is_timeout() => {
            tracing::info!(model = %model, timeout = ?m.timeout, "model check: no answer in time; taken as busy");
            return Ok(());
        }
        Err(e) => return Err(format!("the model {model} does not {what}: {e}")),
    };
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let why = v["error"].as_str().unwrap_or("no reason given");
        return Err(format!(
            "the model {model} does not {what}: {status}, {why}"
        ));
    }
    if embeddings {
        let n = v["embeddings"][0].as_array().map_or(0, Vec::len);
        match m.dimension {
            Some(d) if n != d => Err(format!(
                "the model {model} returned vectors of {n} dimensions, expected {d}"
            )),
            _ if n == 0 => Err(format!("the model {model} returned no vector")),
            _ => Ok(()),
        }
    } else if v["response"].is_string() {
        Ok(())
    } else {
        Err(format!("the model {model} gave no answer"))
    }
}

/// This install's id (`state_dir/instance-id`, 16 random bytes in hex),
/// made at first start. Unreadable and unwritable (a read-only state dir):
/// an id for this run only, so nothing it did not create is ever removed.
fn instance_id(dir: &std::path::Path) -> String {
    let path = dir.join("instance-id");
    if let Ok(s) = std::fs::read_to_string(&path) {
        let s = s.trim();
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return s.to_string();
        }
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    if let Err(e) = save(&path, format!("{id}\n").as_bytes()) {
        tracing::warn!(path = %path.display(), error = %e, "cannot keep this install's id: containers are owned by this run only");
    }
    id
}

/// `gpu: auto` takes the GPU only where the engine lists the NVIDIA
/// runtime; `required` always asks (the engine refuses the container on a
/// box without one). A Jetson (`docker.nvidia_runtime`) uses the runtime,
/// anything else a device request.
fn gpu_choice(mode: GpuMode, jetson: bool, engine_nvidia: bool) -> Option<&'static str> {
    let gpu = if jetson {
        "nvidia-runtime"
    } else {
        "device-request"
    };
    match mode {
        GpuMode::Off => None,
        GpuMode::Required => Some(gpu),
        GpuMode::Auto if engine_nvidia => Some(gpu),
        GpuMode::Auto => Some("cpu"),
    }
}

/// A service the admin stopped stays stopped after a daemon restart.
fn intent_at_start(kept_stopped: &HashSet<String>, name: &str) -> Intent {
    if kept_stopped.contains(name) {
        Intent::Stopped
    } else {
        Intent::Run
    }
}

fn stopped_file(dir: &std::path::Path) -> PathBuf {
    dir.join("services-stopped.json")
}

fn load_stopped(dir: &std::path::Path) -> HashSet<String> {
    std::fs::read(stopped_file(dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save_stopped(dir: &std::path::Path, set: &HashSet<String>) -> std::io::Result<()> {
    let mut names: Vec<&String> = set.iter().collect();
    names.sort();
    save(
        &stopped_file(dir),
        serde_json::to_string(&names)?.as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_auto_falls_back_to_the_cpu_without_the_nvidia_runtime() {
        assert_eq!(gpu_choice(GpuMode::Auto, false, false), Some("cpu"));
        assert_eq!(
            gpu_choice(GpuMode::Auto, false, true),
            Some("device-request")
        );
        assert_eq!(
            gpu_choice(GpuMode::Auto, true, true),
            Some("nvidia-runtime")
        );
        assert_eq!(gpu_choice(GpuMode::Auto, true, false), Some("cpu"));
        assert_eq!(
            gpu_choice(GpuMode::Required, false, false),
            Some("device-request")
        );
        assert_eq!(gpu_choice(GpuMode::Off, true, true), None);
    }

    #[test]
    fn the_container_asks_for_the_gpu_only_as_chosen() {
        let spec: ServiceSpec =
            serde_yaml::from_str("{name: llm, image: x, gpu: auto, cpu_limit: 6}").unwrap();
        let cfg = SupervisorConfig {
            socket: String::new(),
            state_dir: PathBuf::new(),
            stop_timeout: Duration::from_secs(1),
            nvidia_runtime: false,
            log_max_size: "50m".into(),
            log_max_files: 5,
            pull: PullSettings {
                policy: PullPolicy::Never,
                stall_timeout: Duration::from_secs(1),
                min_free: 0,
                retry_max: Duration::from_secs(1),
                secrets_dir: PathBuf::new(),
            },
            secrets_dir: PathBuf::new(),
        };
        let body = |gpu| {
            container_body(
                &spec,
                &cfg,
                Placement {
                    hash: "h",
                    owner: "o",
                    project: "p",
                    network: "n",
                    host_cpus: Some(2.0),
                    gpu,
                    secret_env: vec!["S=1".into()],
                },
            )
            .host_config
            .unwrap()
        };
        let cpu = body(Some("cpu"));
        assert!(cpu.device_requests.is_none() && cpu.runtime.is_none());
        assert_eq!(cpu.nano_cpus, Some(2_000_000_000), "clamped to the host");
        assert_eq!(
            body(Some("device-request")).device_requests.unwrap().len(),
            1
        );
        assert_eq!(
            body(Some("nvidia-runtime")).runtime.as_deref(),
            Some("nvidia")
        );
    }
}
