//! Container supervision: the catalog, and the supervisor worker that is the
//! only holder of a Docker (bollard) client. Everything else talks to it
//! through [`SupervisorHandle`]: commands over an mpsc channel with a oneshot
//! reply, state through a watch channel. No bollard type leaves this module.

pub mod catalog;
pub mod core;
pub mod pull;
pub mod registry;
pub mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};

use crate::tasks::{WorkerKind, WorkerName};

pub use catalog::{Catalog, Role, ServiceSpec};

/// Labels on every container arasuld owns.
pub const LABEL_MANAGED: &str = "io.arasul.managed";
pub const LABEL_SERVICE: &str = "io.arasul.service";
pub const LABEL_SPEC_HASH: &str = "io.arasul.spec-hash";
pub const LABEL_PROJECT: &str = "io.arasul.project";
/// The id of the daemon install that created the container
/// (`state_dir/instance-id`): a container of the project is removed as "no
/// longer in the catalog" only by the daemon that created it.
pub const LABEL_OWNER: &str = "io.arasul.owner";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Starting,
    Healthy,
    Unhealthy,
    Restarting,
    Stopped,
    Failed,
    ImageMissing,
    Unknown,
}

impl ServiceState {
    pub const ALL: [ServiceState; 8] = [
        ServiceState::Starting,
        ServiceState::Healthy,
        ServiceState::Unhealthy,
        ServiceState::Restarting,
        ServiceState::Stopped,
        ServiceState::Failed,
        ServiceState::ImageMissing,
        ServiceState::Unknown,
    ];

    /// The name serde gives it (`image_missing`).
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceState::Starting => "starting",
            ServiceState::Healthy => "healthy",
            ServiceState::Unhealthy => "unhealthy",
            ServiceState::Restarting => "restarting",
            ServiceState::Stopped => "stopped",
            ServiceState::Failed => "failed",
            ServiceState::ImageMissing => "image_missing",
            ServiceState::Unknown => "unknown",
        }
    }
}

/// What the API and the healing loop see of one service.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub role: Role,
    pub critical: bool,
    pub state: ServiceState,
    /// Stopped through the API or config: nothing restarts it.
    pub stopped_on_purpose: bool,
    pub image: String,
    pub image_id: Option<String>,
    pub container_id: Option<String>,
    /// The container's address on the service network (what health probes
    /// and the AI passthrough talk to).
    pub address: Option<String>,
    /// The port its API answers on: the health check's HTTP (or TCP) port.
    pub api_port: Option<u16>,
    /// The port the front door forwards its web app to (catalog `web_port`,
    /// else `api_port`).
    pub web_port: Option<u16>,
    pub started_at: Option<DateTime<Utc>>,
    /// Restarts arasuld made (or saw Docker make) since it started.
    pub restart_count: u32,
    /// When arasuld last restarted it (a restart, or a stop + start by
    /// self-healing); None since the daemon started.
    pub last_restart_at: Option<DateTime<Utc>>,
    pub last_exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Consecutive failed health probes.
    pub health_failures: u32,
    pub last_error: Option<String>,
    /// Its image being pulled: bytes and layers so far (None: no pull).
    pub pull: Option<pull::PullProgress>,
    /// How the GPU is given to it: `nvidia-runtime`, `device-request` or
    /// `cpu` (`gpu: auto` on an engine without the NVIDIA runtime).
    pub gpu: Option<String>,
    /// When `state` last changed.
    pub since: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("the Docker engine is not reachable: {0}")]
    DockerUnavailable(String),
    #[error("image {0} is not present on this box")]
    ImageMissing(String),
    #[error("docker: {0}")]
    Docker(String),
    #[error("the supervisor is not running")]
    Gone,
    #[error("{0} takes effect only after a restart of the daemon")]
    NeedsRestart(String),
}

pub type LogLines = BoxStream<'static, Result<String, String>>;

pub enum Command {
    Start(String, oneshot::Sender<Result<(), SupervisorError>>),
    Stop(String, oneshot::Sender<Result<(), SupervisorError>>),
    /// A stop by self-healing: like `Stop` until the next start, but not
    /// persisted, so after a daemon restart the service runs again.
    StopTransient(String, oneshot::Sender<Result<(), SupervisorError>>),
    Restart(String, oneshot::Sender<Result<(), SupervisorError>>),
    /// The healing policy gave up on it: `failed`, and nothing restarts it
    /// until a start, stop or restart through the API clears the mark.
    MarkFailed(String, oneshot::Sender<Result<(), SupervisorError>>),
    /// Removes dangling images labelled with this project (disk cleanup):
    /// replies with how many went and the bytes reclaimed.
    PruneImages(oneshot::Sender<Result<(u64, u64), SupervisorError>>),
    Logs {
        name: String,
        tail: usize,
        follow: bool,
        reply: oneshot::Sender<Result<LogLines, SupervisorError>>,
    },
    /// `docker load` of a tarball (run beside the loop, not in it); the
    /// reply lists what Docker says it loaded (`name:tag` or `sha256:…`).
    LoadImage(
        std::path::PathBuf,
        oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    ),
    /// The image id a reference resolves to now (None: not present).
    ImageId(
        String,
        oneshot::Sender<Result<Option<String>, SupervisorError>>,
    ),
    /// Points `reference` (name:tag) at the image `id`.
    TagImage {
        id: String,
        reference: String,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    /// Runs the service on another image (None: the catalog's again):
    /// persisted in `state_dir/image-overrides.json`, the container is
    /// recreated unless the service is stopped on purpose.
    SetImage {
        service: String,
        image: Option<String>,
        reply: oneshot::Sender<Result<(), SupervisorError>>,
    },
    /// The images the updater set, by service.
    ImageOverrides(oneshot::Sender<Result<BTreeMap<String, String>, SupervisorError>>),
    /// A reloaded catalog (SIGHUP, or an update's `services.yaml`): changed
    /// services are recreated, new ones started, removed ones removed.
    /// Replies with one line per service that changed.
    SetCatalog(
        Box<Catalog>,
        oneshot::Sender<Result<Vec<String>, SupervisorError>>,
    ),
}

impl Command {
    /// The service a command acts on; one still in flight for the same
    /// service (a stop or restart) makes it wait its turn.
    pub fn service(&self) -> Option<&str> {
        match self {
            Command::Start(n, _)
            | Command::Stop(n, _)
            | Command::StopTransient(n, _)
            | Command::Restart(n, _)
            | Command::MarkFailed(n, _) => Some(n),
            Command::SetImage { service, .. } => Some(service),
            _ => None,
        }
    }
}

/// The cloneable way to reach the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    tx: mpsc::Sender<Command>,
    state: watch::Receiver<Arc<Vec<ServiceStatus>>>,
}

impl SupervisorHandle {
    pub fn new(tx: mpsc::Sender<Command>, state: watch::Receiver<Arc<Vec<ServiceStatus>>>) -> Self {
        SupervisorHandle { tx, state }
    }

    /// A handle with no supervisor behind it: no services, every command
    /// answers `Gone`. For tests of other parts.
    pub fn detached() -> Self {
        let (tx, _) = mpsc::channel(1);
        let (_, state) = watch::channel(Arc::new(Vec::new()));
        SupervisorHandle::new(tx, state)
    }

    pub fn services(&self) -> Arc<Vec<ServiceStatus>> {
        self.state.borrow().clone()
    }

    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.services().iter().find(|s| s.name == name).cloned()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Vec<ServiceStatus>>> {
        self.state.clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, SupervisorError>>) -> Command,
    ) -> Result<T, SupervisorError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| SupervisorError::Gone)?;
        rx.await.map_err(|_| SupervisorError::Gone)?
    }

    pub async fn start(&self, name: &str) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Start(name.into(), r)).await
    }
    pub async fn stop(&self, name: &str) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Stop(name.into(), r)).await
    }
    /// Stops `name` for self-healing: nothing restarts it until the next
    /// start, but the stop is not remembered across a daemon restart.
    pub async fn stop_transient(&self, name: &str) -> Result<(), SupervisorError> {
        self.ask(|r| Command::StopTransient(name.into(), r)).await
    }
    pub async fn restart(&self, name: &str) -> Result<(), SupervisorError> {
        self.ask(|r| Command::Restart(name.into(), r)).await
    }
    /// Deletes dangling images labelled `io.arasul.project=<project>`:
    /// (images removed, bytes reclaimed).
    pub async fn prune_images(&self) -> Result<(u64, u64), SupervisorError> {
        self.ask(Command::PruneImages).await
    }
    pub async fn mark_failed(&self, name: &str) -> Result<(), SupervisorError> {
        self.ask(|r| Command::MarkFailed(name.into(), r)).await
    }
    pub async fn load_image(
        &self,
        tarball: &std::path::Path,
    ) -> Result<Vec<String>, SupervisorError> {
        self.ask(|r| Command::LoadImage(tarball.to_path_buf(), r))
            .await
    }
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>, SupervisorError> {
        self.ask(|r| Command::ImageId(reference.into(), r)).await
    }
    pub async fn tag_image(&self, id: &str, reference: &str) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::TagImage {
            id: id.into(),
            reference: reference.into(),
            reply,
        })
        .await
    }
    pub async fn set_image(
        &self,
        service: &str,
        image: Option<&str>,
    ) -> Result<(), SupervisorError> {
        self.ask(|reply| Command::SetImage {
            service: service.into(),
            image: image.map(str::to_string),
            reply,
        })
        .await
    }
    pub async fn image_overrides(&self) -> Result<BTreeMap<String, String>, SupervisorError> {
        self.ask(Command::ImageOverrides).await
    }
    pub async fn set_catalog(&self, catalog: Catalog) -> Result<Vec<String>, SupervisorError> {
        self.ask(|r| Command::SetCatalog(Box::new(catalog), r))
            .await
    }

    pub async fn logs(
        &self,
        name: &str,
        tail: usize,
        follow: bool,
    ) -> Result<LogLines, SupervisorError> {
        self.ask(|reply| Command::Logs {
            name: name.into(),
            tail,
            follow,
            reply,
        })
        .await
    }
}

/// Spawns the supervisor as the core worker `supervisor`, the only holder
/// of a Docker client. Its command queue and state outlive restarts of the
/// worker, so the handle stays valid.
pub fn spawn(
    workers: &crate::tasks::Workers,
    cfg: supervisor::SupervisorConfig,
    catalog: Catalog,
) -> SupervisorHandle {
    let (cmd_tx, cmd_rx) = mpsc::channel(32);
    let (state_tx, state_rx) = watch::channel(Arc::new(Vec::new()));
    let cmd_rx = Arc::new(tokio::sync::Mutex::new(cmd_rx));
    let state_tx = Arc::new(state_tx);
    // A restarted worker starts from the catalog last applied (a reload's),
    // not the one read at daemon start.
    let catalog = Arc::new(std::sync::Mutex::new(catalog));
    workers.spawn(WorkerName::Supervisor, WorkerKind::Core, move |ctx| {
        let (cfg, catalog, cmd_rx, state_tx) = (
            cfg.clone(),
            catalog.clone(),
            cmd_rx.clone(),
            state_tx.clone(),
        );
        async move {
            let mut rx = cmd_rx.lock().await;
            let current = catalog.lock().unwrap().clone();
            supervisor::Supervisor::new(cfg, &current, state_tx)
                .remember_catalog_in(catalog)
                .run(ctx, &mut rx)
                .await
        }
    });
    SupervisorHandle::new(cmd_tx, state_rx)
}

/// [`load_catalog`] for the daemon: an invalid catalog does not keep it
/// down (the dashboard must stay reachable to say what is wrong), so each
/// error is logged and no services are supervised until it is fixed.
pub fn load_catalog_or_empty(path: &std::path::Path) -> Catalog {
    load_catalog(path).unwrap_or_else(|errs| {
        for e in &errs {
            tracing::error!("service catalog: {e}");
        }
        tracing::error!(
            "the service catalog is invalid: no services are supervised until it is fixed"
        );
        Catalog::default()
    })
}

/// Reads and validates the catalog file and its drop-ins
/// (`<file>.d/*.yaml`, see [`crate::dropin`]); a missing file is an empty
/// catalog.
pub fn load_catalog(path: &std::path::Path) -> Result<Catalog, Vec<crate::config::ConfigError>> {
    load_catalog_with_update(path, None)
}

/// [`load_catalog`] with `update` in place of the update's drop-in (a
/// bundle's `services.yaml`, checked before it is installed).
pub fn load_catalog_with_update(
    path: &std::path::Path,
    update: Option<&std::path::Path>,
) -> Result<Catalog, Vec<crate::config::ConfigError>> {
    let layers = crate::dropin::read(path, false, update)?;
    let merged = crate::dropin::merge(&layers)?;
    catalog::parse(&merged.source, &merged.text).map_err(|errors| {
        if layers.len() == 1 {
            return errors;
        }
        // Line numbers of the merged text would point nowhere real.
        errors
            .into_iter()
            .map(|e| crate::config::ConfigError { line: None, ..e })
            .collect()
    })
}

/// A service as the supervisor reports it, for unit tests.
#[cfg(test)]
pub(crate) fn test_status(
    name: &str,
    role: Role,
    state: ServiceState,
    address: Option<&str>,
) -> ServiceStatus {
    ServiceStatus {
        name: name.into(),
        role,
        critical: false,
        state,
        stopped_on_purpose: false,
        image: "x".into(),
        image_id: None,
        container_id: None,
        address: address.map(str::to_string),
        api_port: None,
        web_port: None,
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
    }
}
