//! The state every part of the daemon shares: config, database, workers, and
//! the control channel to the main loop (reload, shutdown).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::db::Db;
use crate::metrics::MetricsHub;
use crate::tasks::Workers;

/// Requests to the main loop in `app`.
#[derive(Debug)]
pub enum Control {
    Shutdown,
    /// Re-read the config file; the reply lists the changed keys, or the errors.
    Reload(Option<oneshot::Sender<Result<Vec<String>, Vec<String>>>>),
}

/// What every handler and middleware reaches, through [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub config: watch::Receiver<Arc<Config>>,
    pub db: Db,
    pub workers: Workers,
    /// Admin authentication (sessions, lockout, tokens); see `crate::auth`.
    pub auth: Arc<crate::auth::Auth>,
    pub metrics: MetricsHub,
    pub services: crate::docker::SupervisorHandle,
    pub started_at: DateTime<Utc>,
    pub control: mpsc::Sender<Control>,
    /// The updater (upload, apply, status, history).
    pub updates: crate::update::UpdateManager,
    /// The name the mDNS worker established (`arasul-2.local` after a
    /// collision); `None` until Avahi confirmed one.
    pub mdns: watch::Receiver<crate::os::mdns::Published>,
    /// The API keys the daemon accepts (`crate::auth::keys`).
    pub keys: Arc<crate::auth::keys::KeyStore>,
    /// HTTPS as served (None: off, or its certificate could not be used).
    pub tls: Option<TlsInfo>,
    /// The model download queue and the admission checks (`crate::ai::pulls`).
    pub models: crate::ai::pulls::PullDeps,
    /// The config file the daemon reads (settings changed in the dashboard
    /// go to its drop-in directory); None: none to write to.
    pub config_path: Option<std::path::PathBuf>,
    /// Backups of the owner's data and restores (`crate::backup`).
    pub backups: crate::backup::Backups,
    /// Alerts to the owner (`crate::notify`); never waits.
    pub notify: crate::notify::Notifier,
    /// The self-healing worker: reboots through the API and records for the
    /// trail go to it (`crate::healing::handle`).
    pub healing: crate::healing::HealingHandle,
    /// The API's client of the AI runtimes (and the last generation it saw).
    pub ai: crate::ai::Ai,
}

/// What the owner is shown of HTTPS, to check the certificate by.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TlsInfo {
    /// The port HTTPS answers on.
    pub port: u16,
    /// SHA-256 of the certificate, `AB:CD:…`, as browsers show it.
    pub fingerprint: String,
    /// Made by the box itself (`http.tls.self_signed`).
    pub self_signed: bool,
}

/// The shared state as axum holds it: one `Arc`. axum clones the state for
/// every handler and `from_fn_with_state` middleware on every request, and
/// cloning the fields one by one (two dozen reference counts, watch
/// receivers, channel senders, each dropped again) was a fifth of the CPU a
/// request to `/api/health` cost.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> AppState {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    pub fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }
}
