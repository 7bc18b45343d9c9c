//! Wiring: builds the shared state, spawns the workers, serves HTTP on the
//! listener it is handed, says READY to systemd once all of that is up, and
//! turns control messages (signals, the reload endpoint) into a config
//! reload or an ordered shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ai::pulls::{PullDeps, PullQueue};
use crate::build_info;
use crate::config::{self, Config};
use crate::db::Db;
use crate::docker::SupervisorHandle;
use crate::docker::supervisor::SupervisorConfig;
use crate::os::mdns::MdnsDeps;
use crate::os::notify::Notifier;
use crate::state::{AppState, Control, Shared};
use crate::tasks::{RestartPolicy, WorkerCtx, WorkerKind, WorkerName, Workers};
use crate::update::manager::UpdateDeps;

/// Applies a new log filter; `main` hands in the tracing reload handle.
pub type LogFilterReload = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Everything `run` needs from outside, so tests can inject each part.
pub struct Daemon {
    pub config_path: PathBuf,
    /// Whether a missing config file is an error (true when `--config` was given).
    pub config_required: bool,
    pub config: Config,
    pub notifier: Notifier,
    /// Ping period for `WATCHDOG=1` (half of `WATCHDOG_USEC`); None disables.
    pub watchdog: Option<Duration>,
    pub log_reload: Option<LogFilterReload>,
}

/// A worker body that the daemon spawns besides its own (tests use this to
/// add a deliberately hung core worker).
pub type ExtraWorker = (
    WorkerName,
    WorkerKind,
    Box<dyn FnMut(WorkerCtx) -> futures::future::BoxFuture<'static, anyhow::Result<()>> + Send>,
);

impl Daemon {
    /// Runs until `Control::Shutdown` arrives, then shuts down in order:
    /// STOPPING=1, HTTP stops accepting and drains, workers are cancelled and
    /// awaited, the pool is closed.
    pub async fn run(
        self,
        listener: TcpListener,
        control_tx: mpsc::Sender<Control>,
        mut control_rx: mpsc::Receiver<Control>,
        extra_workers: Vec<ExtraWorker>,
    ) -> anyhow::Result<()> {
        let Daemon {
            config_path,
            config_required,
            config,
            notifier,
            watchdog,
            log_reload,
        } = self;
        let started_at = Utc::now();
        let db = Db::new(&config.database)?;
        let (alerts, alert_inbox) = crate::notify::Notifier::new();
        let auth = open_auth(&config, &alerts).await?;
        let workers = Workers::new(RestartPolicy::from(&config.workers));
        let (config_tx, config_rx) = watch::channel(Arc::new(config.clone()));
        // The announced port is the one really bound (tests bind port 0).
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(config.http.listen.port());

        crate::db::spawn_connector(&workers, &db, &config.database, started_at);
        let metrics = crate::metrics::spawn(&workers, &config, &db);
        let catalog = crate::docker::load_catalog_or_empty(&config.paths.services_file);
        let services =
            crate::docker::spawn(&workers, SupervisorConfig::from(&config), catalog.clone());
        let updates = crate::update::spawn(
            &workers,
            UpdateDeps {
                config_path: config_path.clone(),
                control: Some(control_tx.clone()),
                notify: alerts.clone(),
                ..UpdateDeps::from_config(&config, &db, &services)
            },
        );
        let healing = crate::healing::worker::spawn(
            &workers,
            crate::healing::worker::HealingDeps {
                config: config.healing.clone(),
                log_dir: config.paths.log_dir.clone(),
                services: services.clone(),
                metrics: Some(metrics.clone()),
                db: db.clone(),
                state_dir: config.paths.state_dir.clone(),
                update: updates.activity(),
                metrics_retention: config.metrics.retention,
                proc_root: config.paths.proc_root.clone(),
                live: Some(config_rx.clone()),
                notify: alerts.clone(),
            },
        );
        crate::notify::spawn(
            &workers,
            crate::notify::NotifyDeps {
                inbox: alert_inbox,
                db: db.clone(),
                config: config_rx.clone(),
            },
        );
        crate::db::workflows::spawn_retention(&workers, db.clone());
        crate::db::auth::spawn_persister(&workers, db.clone(), auth.clone());
        let keys = crate::db::keys::spawn(&workers, db.clone());
        let mdns = crate::os::mdns::spawn(
            &workers,
            MdnsDeps {
                live: Some(config_rx.clone()),
                ..MdnsDeps::new(config.mdns.clone(), port)
            },
        );
        for (name, kind, run) in extra_workers {
            workers.spawn(name, kind, run);
        }
        crate::os::notify::spawn_watchdog(
            &workers,
            &notifier,
            watchdog,
            config.workers.stale_after,
        );
        crate::usb::handoff::spawn(&workers, &config, &updates);
        let models = crate::ai::pulls::spawn(
            &workers,
            PullDeps::new(
                PullQueue::open(Some(PullQueue::file_in(&config.paths.state_dir))),
                services.clone(),
                config_rx.clone(),
            ),
        );
        let backups = crate::backup::spawn(
            &workers,
            crate::backup::Backups::new(
                config_rx.clone(),
                db.clone(),
                services.clone(),
                Some(config_path.clone()),
                alerts.clone(),
            ),
        );
        let shared = Shared {
            config: config_rx,
            db: db.clone(),
            workers: workers.clone(),
            auth: auth.clone(),
            metrics,
            services: services.clone(),
            started_at,
            control: control_tx,
            updates,
            mdns,
            keys,
            tls: None,
            models,
            config_path: Some(config_path.clone()),
            backups,
            notify: alerts,
            healing,
            ai: crate::ai::Ai::new(),
        };
        let local = listener.local_addr().context("listener address")?;
        let http_stop = CancellationToken::new();
        let https = open_https(&config).await;
        let (mut http, serving) = match https {
            None => (
                tokio::spawn(serve_http(
                    listener,
                    crate::api::router(AppState::new(shared)),
                    &config.http,
                    None,
                    http_stop.clone().cancelled_owned(),
                )),
                format!("http://{local}"),
            ),
            Some((tls, tls_listener)) => {
                let at = tls_listener
                    .local_addr()
                    .context("HTTPS listener address")?;
                let state = AppState::new(Shared {
                    tls: Some(crate::state::TlsInfo {
                        port: at.port(),
                        fingerprint: tls.fingerprint.clone(),
                        self_signed: tls.self_signed,
                    }),
                    ..shared
                });
                tracing::info!(fingerprint = %tls.fingerprint, certificate = %tls.cert_path.display(), "HTTPS on {at}; http://{local} redirects to it");
                let secure = serve_http(
                    tls_listener,
                    crate::api::router(state),
                    &config.http,
                    Some(tls.acceptor),
                    http_stop.clone().cancelled_owned(),
                );
                let redirect = serve_http(
                    listener,
                    crate::api::redirect_to_https(at.port()),
                    &config.http,
                    None,
                    http_stop.clone().cancelled_owned(),
                );
                (
                    tokio::spawn(async move { futures::try_join!(secure, redirect).map(|_| ()) }),
                    format!("https://{at}"),
                )
            }
        };
        tracing::info!(address = %local, version = build_info::VERSION_LINE, "listening on {serving}");
        notifier.send(&format!("READY=1\nSTATUS=serving on {serving}"));

        let mut current = config;
        let mut current_catalog = catalog;
        loop {
            tokio::select! {
                msg = control_rx.recv() => match msg {
                    Some(Control::Reload(reply)) => {
                        reload_auth(&auth);
                        let outcome = reload(&config_path, config_required, (&mut current, &mut current_catalog), &config_tx, log_reload.as_ref(), &services).await;
                        if let Some(reply) = reply {
                            let _ = reply.send(outcome);
                        }
                    }
                    Some(Control::Shutdown) | None => break,
                },
                res = &mut http => {
                    // The server only returns on its own if accepting failed for good.
                    let err = match res {
                        Ok(Ok(())) => anyhow::anyhow!("HTTP server stopped unexpectedly"),
                        Ok(Err(e)) => e.context("HTTP server failed"),
                        Err(e) => anyhow::anyhow!("HTTP server task failed: {e}"),
                    };
                    notifier.send("STOPPING=1");
                    workers.shutdown(current.workers.stop_timeout).await;
                    db.close(Duration::from_secs(2)).await;
                    return Err(err);
                }
            }
        }

        tracing::info!("shutting down");
        notifier.send("STOPPING=1\nSTATUS=shutting down");
        http_stop.cancel();
        match tokio::time::timeout(current.http.shutdown_grace, &mut http).await {
            Ok(_) => tracing::info!("http server stopped"),
            Err(_) => {
                http.abort();
                tracing::warn!(grace = ?current.http.shutdown_grace, "http connections cut after the grace period");
            }
        }
        let stuck = workers.shutdown(current.workers.stop_timeout).await;
        for name in &stuck {
            tracing::error!(worker = %name, "worker did not stop in time and was aborted");
        }
        db.close(Duration::from_secs(2)).await;
        let names: Vec<String> = workers.statuses().into_iter().map(|s| s.name).collect();
        tracing::info!(
            workers = %names.join(","),
            aborted = stuck.len(),
            "shutdown complete: every worker stopped"
        );
        Ok(())
    }
}

/// Opens the secrets dir (creating the JWT key and, on first start, the
/// initial admin password) and says where the initial password is, never
/// what it is. Session writes the DB has not taken wait in the state dir.
async fn open_auth(
    config: &Config,
    alerts: &crate::notify::Notifier,
) -> anyhow::Result<Arc<crate::auth::Auth>> {
    let cfg = crate::auth::AuthConfig {
        secrets_dir: config.paths.secrets_dir.clone(),
        notify: alerts.clone(),
        session_spool: Some(config.paths.state_dir.join(crate::auth::spool::SPOOL_FILE)),
        ..Default::default()
    };
    let (auth, created) = tokio::task::spawn_blocking(move || crate::auth::Auth::open(cfg))
        .await
        .context("auth set-up task failed")?
        .context("cannot open the secrets dir (paths.secrets_dir)")?;
    // On first start `Auth::open` has already said where it wrote it.
    if created.is_none() && auth.must_change_password() {
        tracing::warn!(
            path = %auth.secrets().initial_password_path().display(),
            "the initial admin password is in use: read it from this root-only file, log in and change it"
        );
    }
    Ok(Arc::new(auth))
}

/// `arasuld admin set-password` writes the secrets from another process;
/// a reload (SIGHUP) picks the new hash up and revokes the old sessions.
fn reload_auth(auth: &crate::auth::Auth) {
    match auth.reload_credentials(crate::auth::Now::current()) {
        Ok(true) => tracing::info!("admin password changed on disk: every session revoked"),
        Ok(false) => {}
        Err(e) => tracing::error!(error = %format!("{e:#}"), "admin credentials not reloaded"),
    }
}

/// HTTPS when `http.tls` asks for it: the certificate (made at first start
/// when self-signed) and its bound listener. A certificate that cannot be
/// used, or a port that cannot be bound, is logged as an error and the box
/// goes on over plain HTTP: the owner must still reach the dashboard.
async fn open_https(config: &Config) -> Option<(crate::api::tls::Tls, TcpListener)> {
    let cfg = config.http.tls.clone()?;
    let secrets = config.paths.secrets_dir.clone();
    let names = crate::api::tls::names(&config.mdns.hostname);
    let listen = cfg.listen;
    let opened = tokio::task::spawn_blocking(move || {
        crate::api::tls::open(&cfg, &secrets, &names, &crate::api::tls::addresses())
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|r| r);
    let tls = match opened {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "HTTPS is off: the certificate cannot be used; serving plain HTTP");
            return None;
        }
    };
    match TcpListener::bind(listen).await {
        Ok(l) => Some((tls, l)),
        Err(e) => {
            tracing::error!(error = %e, address = %listen, "HTTPS is off: cannot listen; serving plain HTTP");
            None
        }
    }
}

/// The connection cap is sized from the open-file limit `main` raised.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    http: &config::HttpConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
    let soft_files = match crate::os::rlimit::open_files() {
        Ok(limit) => limit.soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; capping connections by http.max_connections alone");
            None
        }
    };
    let limits = crate::api::serve::EdgeLimits::new(http, soft_files);
    crate::api::serve::serve(listener, router, limits, tls, stop)
}

/// How long a reload waits for the supervisor to recreate what changed.
const CATALOG_APPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Re-reads the config and the service catalog (each with its drop-ins).
/// Either one invalid changes nothing; otherwise the config is applied and
/// the catalog handed to the supervisor, which recreates what changed.
async fn reload(
    path: &std::path::Path,
    required: bool,
    (current, current_catalog): (&mut Config, &mut crate::docker::Catalog),
    tx: &watch::Sender<Arc<Config>>,
    log_reload: Option<&LogFilterReload>,
    services: &SupervisorHandle,
) -> Result<Vec<String>, Vec<String>> {
    let loaded = config::load(path, required, std::env::vars()).and_then(|new| {
        let catalog = crate::docker::load_catalog(&new.paths.services_file)?;
        Ok((new, catalog))
    });
    match loaded {
        Ok((new, catalog)) => {
            let changed = config::diff(current, &new);
            if changed.is_empty() {
                tracing::info!(path = %path.display(), "config reloaded: nothing changed");
            }
            for line in &changed {
                if config::needs_restart(line) {
                    tracing::warn!("config changed (takes effect after a restart): {line}");
                } else {
                    tracing::info!("config changed: {line}");
                }
            }
            if new.logging.level != current.logging.level
                && let Some(apply) = log_reload
                && let Err(e) = apply(&new.logging.level)
            {
                tracing::warn!(error = %e, "could not apply the new log level");
            }
            *current = new.clone();
            tx.send_replace(Arc::new(new));
            let mut changed = changed;
            if catalog == *current_catalog {
                return Ok(changed);
            }
            let applied =
                tokio::time::timeout(CATALOG_APPLY_TIMEOUT, services.set_catalog(catalog.clone()));
            match applied.await {
                Ok(Ok(lines)) => {
                    *current_catalog = catalog;
                    changed.extend(lines.into_iter().map(|l| format!("services: {l}")));
                }
                Ok(Err(e)) => {
                    let msg = format!("the service catalog was not applied: {e}");
                    tracing::error!("{msg}");
                    return Err(vec![msg]);
                }
                Err(_) => {
                    let msg = format!(
                        "the service catalog was not applied within {CATALOG_APPLY_TIMEOUT:?}"
                    );
                    tracing::error!("{msg}");
                    return Err(vec![msg]);
                }
            }
            Ok(changed)
        }
        Err(errors) => {
            let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
            for e in &errors {
                tracing::error!("config reload refused, keeping the running config: {e}");
            }
            Err(errors)
        }
    }
}
