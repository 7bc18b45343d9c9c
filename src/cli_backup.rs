//! `arasuld backup create | list | restore FILE`: the same code as the
//! dashboard, run in this process. Containers are stopped and started for
//! the copy, so this process needs the supervisor: while the daemon runs
//! (its API answers on `http.listen`) `create` and `restore` refuse and
//! point to the dashboard, so two supervisors never fight over the
//! containers; with the daemon stopped, a supervisor is started here for
//! the run (it adopts the running containers, as the daemon would) and
//! stopped afterwards. `list` only reads the runs file.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;

use crate::backup::{Backups, Run};
use crate::config::Config;
use crate::docker::supervisor::SupervisorConfig;

/// Defined with the rest of the command line (the man page is rendered from it).
pub use crate::cli::BackupCommand;

pub async fn run(
    config: Config,
    config_path: std::path::PathBuf,
    command: BackupCommand,
) -> anyhow::Result<()> {
    if let BackupCommand::List = command {
        for r in crate::backup::load_runs(&config.paths.state_dir) {
            println!("{}", line(&r));
        }
        return Ok(());
    }
    if daemon_answers(&config).await {
        bail!(
            "arasuld is running: start backups and restores from the dashboard (Settings → Backups) \
             or POST /api/backups, or stop the daemon first (systemctl stop arasuld)"
        );
    }
    let workers = crate::tasks::Workers::new((&config.workers).into());
    let catalog = crate::docker::load_catalog_or_empty(&config.paths.services_file);
    let services = crate::docker::spawn(&workers, SupervisorConfig::from(&config), catalog);
    // The supervisor's first look at the engine (adopted containers).
    let mut rx = services.subscribe();
    let _ = tokio::time::timeout(Duration::from_secs(10), rx.changed()).await;
    let db = crate::db::Db::new(&config.database)?;
    let (tx, config_rx) = tokio::sync::watch::channel(Arc::new(config.clone()));
    // No notifications worker here: what fails is said on the terminal
    // (and recorded in the audit trail).
    let backups = Backups::new(
        config_rx,
        db,
        services,
        Some(config_path),
        crate::notify::Notifier::detached(),
    );
    let result = match command {
        BackupCommand::Create => backups.create("cli").await,
        BackupCommand::Restore { file } => backups.restore(&file).await,
        BackupCommand::List => unreachable!("handled above"),
    };
    workers.shutdown(config.workers.stop_timeout).await;
    drop(tx);
    let run = result.map_err(|e| anyhow::anyhow!("{} ({})", e, e.code()))?;
    println!("{}", line(&run));
    Ok(())
}

fn line(r: &Run) -> String {
    format!(
        "{id}  {kind:<7} {status:<10} {size:>12}  {secs:>6}  {dest}  {file}{err}",
        id = r.id,
        kind = r.kind,
        status = format!("{:?}", r.status).to_ascii_lowercase(),
        size = r
            .size
            .map(crate::backup::create::fmt_bytes)
            .unwrap_or_default(),
        secs = r
            .duration_ms()
            .map(|ms| format!("{:.1}s", ms as f64 / 1000.0))
            .unwrap_or_default(),
        dest = r.destination,
        file = r.location.as_deref().or(r.file.as_deref()).unwrap_or(""),
        err = r
            .error
            .as_deref()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default(),
    )
}

/// The daemon's API answers `/api/health` on its listen port (on loopback).
async fn daemon_answers(config: &Config) -> bool {
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
    else {
        return false;
    };
    client
        .get(format!("http://{addr}/api/health"))
        .send()
        .await
        .is_ok()
}
