//! Putting an archive back. The archive is read completely first (its
//! manifest and every member's sha256, into a staging dir): a corrupt or
//! truncated archive is refused and nothing on the box changes. Then a
//! safety backup (a normal run, to the local dir), the services whose data
//! comes back stopped (dependents first), the database restored, the config,
//! secrets and volumes put back, the services started and waited on until
//! healthy. When any of that fails, the safety backup is put back the same
//! way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::process::Command;

use super::archive::{self, Manifest};
use super::create::run_cmd;
use super::dest::{self, Target};
use super::{BackupError, Backups, Run, RunStatus, retention, save_run};
use crate::config::Config;
use crate::docker::ServiceState;
use crate::docker::catalog::Catalog;
use crate::update::backup::PgTarget;

pub const STAGING_DIR: &str = "data-backups-restore";

/// Where the archive named by `id_or_file` is: a recorded run's id, an
/// absolute path, or an archive name at the configured destination.
async fn locate(config: &Config, id_or_file: &str, staging: &Path) -> Result<PathBuf, BackupError> {
    let runs = super::load_runs(&config.paths.state_dir);
    let by_id = runs
        .iter()
        .filter(|r| r.kind == "backup" && r.id == id_or_file && r.location.is_some())
        .max_by_key(|r| r.started);
    let (name, location) = match by_id {
        Some(r) => (
            r.file.clone().unwrap_or_default(),
            r.location.clone().unwrap_or_default(),
        ),
        None if id_or_file.starts_with('/') => (String::new(), id_or_file.to_string()),
        None if retention::parse_name(id_or_file).is_some() => match dest::resolve(config).await? {
            Target::Dir { dir, .. } => (
                id_or_file.to_string(),
                dir.join(id_or_file).display().to_string(),
            ),
            Target::S3(b) => (
                id_or_file.to_string(),
                format!("{}{id_or_file}", b.describe()),
            ),
        },
        None => {
            return Err(BackupError::NotFound(format!(
                "no backup {id_or_file:?}: name a run's id, an archive file name or an absolute path"
            )));
        }
    };
    if location.starts_with("s3://") {
        let Target::S3(bucket) = dest::resolve(config).await? else {
            return Err(BackupError::Destination(format!(
                "{location} is in S3, but S3 is not the configured destination"
            )));
        };
        let local = staging.join(&name);
        tokio::fs::create_dir_all(staging)
            .await
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        bucket
            .get_file(&name, &local)
            .await
            .map_err(|e| BackupError::Destination(format!("{e:#}")))?;
        return Ok(local);
    }
    let path = PathBuf::from(location);
    if !path.is_file() {
        return Err(BackupError::NotFound(format!(
            "{} does not exist",
            path.display()
        )));
    }
    Ok(path)
}

pub(super) async fn run(
    b: &Backups,
    config: &Config,
    id_or_file: &str,
) -> Result<Run, BackupError> {
    let state_dir = config.paths.state_dir.clone();
    let started = Utc::now();
    let staging = state_dir.join(STAGING_DIR);
    let _ = tokio::fs::remove_dir_all(&staging).await;
    let items = staging.join("items");
    let result = async {
        let archive_path = locate(config, id_or_file, &staging.join("download")).await?;
        let checked = {
            let (a, i) = (archive_path.clone(), items.clone());
            tokio::task::spawn_blocking(move || archive::check(&a, Some(&i)))
                .await
                .map_err(|e| BackupError::Failed(e.to_string()))?
        };
        let manifest = checked.map_err(|e| BackupError::Corrupt(format!("{e:#}")))?;
        let name = archive_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok::<_, BackupError>((manifest, name))
    }
    .await;
    let (manifest, name) = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(e);
        }
    };

    // Nothing was touched so far. The safety backup comes first.
    let safety = match super::create::run(b, config, &dest::local(config), "safety").await {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&staging).await;
            return Err(BackupError::Failed(format!(
                "the safety backup before the restore failed, so nothing was restored: {e}"
            )));
        }
    };
    let mut run = Run {
        id: retention::stamp(started),
        kind: "restore".into(),
        trigger: "manual".into(),
        started,
        finished: None,
        destination: "local".into(),
        file: Some(name),
        location: None,
        size: None,
        status: RunStatus::Running,
        error: None,
        skipped: manifest.skipped.clone(),
    };
    let _ = save_run(&state_dir, &run);
    let applied = apply(b, config, &manifest, &items).await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    run.finished = Some(Utc::now());
    match applied {
        Ok(()) => {
            run.status = RunStatus::Good;
            let _ = save_run(&state_dir, &run);
            tracing::info!(
                ms = run.duration_ms(),
                "restored {}",
                run.file.as_deref().unwrap_or("")
            );
            Ok(run)
        }
        Err(e) => {
            tracing::error!("the restore failed, rolling back to the safety backup: {e:#}");
            let back = roll_back(b, config, &safety).await;
            let msg = match back {
                Ok(()) => format!(
                    "{e:#} (the box was rolled back to the safety backup {})",
                    safety.id
                ),
                Err(e2) => format!(
                    "{e:#}; rolling back to the safety backup {} failed too: {e2:#}",
                    safety.id
                ),
            };
            run.status = RunStatus::Failed;
            run.error = Some(msg.clone());
            run.finished = Some(Utc::now());
            let _ = save_run(&state_dir, &run);
            Err(BackupError::Failed(msg))
        }
    }
}

async fn roll_back(b: &Backups, config: &Config, safety: &Run) -> anyhow::Result<()> {
    let path = PathBuf::from(
        safety
            .location
            .clone()
            .context("the safety backup has no file")?,
    );
    let items = config.paths.state_dir.join(STAGING_DIR).join("safety");
    let (p, i) = (path.clone(), items.clone());
    let manifest = tokio::task::spawn_blocking(move || archive::check(&p, Some(&i))).await??;
    let r = apply(b, config, &manifest, &items).await;
    let _ = tokio::fs::remove_dir_all(config.paths.state_dir.join(STAGING_DIR)).await;
    r
}

/// The services to stop: those whose volumes come back, and every service
/// depending on one of them; in reverse start order (dependents first).
fn to_stop(catalog: &Catalog, manifest: &Manifest) -> Vec<String> {
    let mut set: BTreeSet<String> = manifest
        .items
        .iter()
        .filter(|i| i.kind == "volume")
        .filter_map(|i| i.service.clone())
        .collect();
    loop {
        let more: Vec<String> = catalog
            .services
            .iter()
            .filter(|s| !set.contains(&s.name) && s.depends_on.iter().any(|d| set.contains(d)))
            .map(|s| s.name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        set.extend(more);
    }
    let order: Vec<String> = crate::docker::catalog::start_order(catalog)
        .map(|o| o.into_iter().map(|s| s.name.clone()).collect())
        .unwrap_or_else(|_| catalog.services.iter().map(|s| s.name.clone()).collect());
    order
        .into_iter()
        .rev()
        .filter(|n| set.contains(n))
        .collect()
}

async fn apply(
    b: &Backups,
    config: &Config,
    manifest: &Manifest,
    items: &Path,
) -> anyhow::Result<()> {
    let catalog = crate::docker::load_catalog(&config.paths.services_file)
        .map_err(|_| anyhow::anyhow!("the service catalog cannot be read"))?;
    // Every volume goes back only to a dir the catalog mounts for its service.
    for i in manifest.items.iter().filter(|i| i.kind == "volume") {
        let (Some(service), Some(path)) = (&i.service, &i.path) else {
            bail!("volume item {} names no service or dir", i.file);
        };
        let mounted = catalog.services.iter().any(|s| {
            &s.name == service
                && s.volumes
                    .iter()
                    .any(|v| v.split(':').next() == Some(&*path.to_string_lossy()))
        });
        if !mounted {
            bail!(
                "{} is not a volume of {service} in this box's catalog",
                path.display()
            );
        }
    }
    let stop = to_stop(&catalog, manifest);
    let mut stopped = Vec::new();
    // Only what was healthy before must be healthy after: a service that
    // was already failing (no image yet, a crash loop) does not make every
    // restore fail and roll back.
    let was_healthy: Vec<String> = stop
        .iter()
        .filter(|s| {
            b.inner
                .services
                .service(s)
                .is_some_and(|st| st.state == ServiceState::Healthy)
        })
        .cloned()
        .collect();
    let result = async {
        for s in &stop {
            let present = b
                .inner
                .services
                .service(s)
                .is_some_and(|st| !st.stopped_on_purpose);
            if present {
                b.inner
                    .services
                    .stop_transient(s)
                    .await
                    .with_context(|| format!("stopping {s}"))?;
                stopped.push(s.clone());
            }
        }
        if manifest.items.iter().any(|i| i.kind == "database") {
            let pg = PgTarget::from_url(config.database.url.expose())?;
            ensure_database(&pg).await?;
            crate::update::backup::restore_database(
                &pg,
                &items.join("database.dump"),
                &items.join("work"),
            )
            .await
            .context("restoring the database")?;
            // An archive of an older schema is brought up to this daemon's;
            // one of a newer daemon is refused here (and rolled back).
            crate::db::migrate(b.inner.db.pool())
                .await
                .context("migrating the restored database")?;
        }
        for i in &manifest.items {
            let dir = match i.kind.as_str() {
                "config" => b
                    .inner
                    .config_path
                    .as_deref()
                    .and_then(Path::parent)
                    .map(Path::to_path_buf),
                "secrets" => Some(config.paths.secrets_dir.clone()),
                "volume" => i.path.clone(),
                _ => None,
            };
            let Some(dir) = dir else { continue };
            if i.kind == "volume" {
                clear_dir(&dir).await?;
            }
            tokio::fs::create_dir_all(&dir).await?;
            let mut c = Command::new("tar");
            c.args([
                "--extract",
                "--numeric-owner",
                "--preserve-permissions",
                "--file",
            ])
            .arg(items.join(&i.file))
            .arg("-C")
            .arg(&dir);
            run_cmd(c, &format!("tar (putting back {})", i.file)).await?;
        }
        anyhow::Ok(())
    }
    .await;
    // Started again in start order, whatever happened.
    let mut started = Vec::new();
    for s in stop.iter().rev().filter(|s| stopped.contains(s)) {
        match b.inner.services.start(s).await {
            Ok(()) => started.push(s.clone()),
            Err(e) => tracing::warn!(service = %s, "could not start it after the restore: {e}"),
        }
    }
    result?;
    started.retain(|s| was_healthy.contains(s));
    wait_healthy(b, &started, config.backup.restore_health_timeout).await
}

/// The database exists (a dropped one is created again, empty).
async fn ensure_database(pg: &PgTarget) -> anyhow::Result<()> {
    let mut c = pg.command("psql");
    c.args(["--no-password", "--no-psqlrc", "-At", "-c", "SELECT 1"]);
    match run_cmd(c, "psql").await {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().contains("does not exist") => {
            tracing::warn!("the database is gone; creating it empty before the restore");
            let mut c = pg.command("createdb");
            c.arg("--no-password");
            run_cmd(c, "createdb").await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

async fn clear_dir(dir: &Path) -> anyhow::Result<()> {
    let mut rd = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    while let Some(e) = rd.next_entry().await? {
        if e.file_type().await?.is_dir() {
            tokio::fs::remove_dir_all(e.path()).await?;
        } else {
            tokio::fs::remove_file(e.path()).await?;
        }
    }
    Ok(())
}

/// Every service in `names` healthy within `timeout`; one that fails or
/// lacks its image ends the wait with an error.
async fn wait_healthy(b: &Backups, names: &[String], timeout: Duration) -> anyhow::Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    let mut rx = b.inner.services.subscribe();
    let waited = tokio::time::timeout(timeout, async {
        loop {
            let now = rx.borrow_and_update().clone();
            let mut pending = Vec::new();
            for n in names {
                match now.iter().find(|s| &s.name == n).map(|s| s.state) {
                    Some(ServiceState::Healthy) => {}
                    Some(ServiceState::Failed | ServiceState::ImageMissing) => {
                        bail!("{n} did not come back after the restore")
                    }
                    _ => pending.push(n.clone()),
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                bail!("the supervisor stopped");
            }
        }
    })
    .await;
    match waited {
        Ok(r) => r,
        Err(_) => {
            bail!("the services {names:?} were not healthy within {timeout:?} after the restore")
        }
    }
}
