//! One backup run: free space checked against an estimate, the items staged
//! in `state_dir/data-backups-staging/<id>/`, the archive written to the
//! destination, read back and its database restored into a scratch database
//! and counted; then retention. Every path out leaves the run recorded and
//! no staging or half archive behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use chrono::Utc;
use tokio::process::Command;

use super::archive::{self, Item, Manifest};
use super::dest::{self, Target};
use super::{BackupError, Backups, Run, RunStatus, retention, save_run};
use crate::config::Config;
use crate::docker::catalog::{Catalog, Role};
use crate::update::backup::PgTarget;

pub const STAGING_DIR: &str = "data-backups-staging";
/// Kept free beyond the estimate.
const MARGIN: u64 = 64 << 20;

/// A bind-mount volume of a service whose data is backed up.
#[derive(Clone, Debug)]
pub struct Volume {
    pub service: String,
    pub dir: PathBuf,
    pub bytes: u64,
}

/// The services whose volumes hold the owner's data: the workflow service
/// (n8n) always, storage (MinIO) when `include_minio` and not over
/// `minio_max_size`. The second list says what was left out.
pub fn volumes(catalog: &Catalog, config: &Config) -> (Vec<Volume>, Vec<String>) {
    let b = &config.backup;
    let minio_max = crate::docker::catalog::parse_bytes(&b.minio_max_size).unwrap_or(0) as u64;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for s in &catalog.services {
        let wanted = match s.role {
            Role::Workflow => true,
            Role::Storage => {
                if !b.include_minio {
                    skipped.push(format!(
                        "{}: its data is not backed up (backup.include_minio is off)",
                        s.name
                    ));
                }
                b.include_minio
            }
            _ => false,
        };
        if !wanted {
            continue;
        }
        let mut mine = Vec::new();
        for v in &s.volumes {
            let mut parts = v.split(':');
            let src = parts.next().unwrap_or("");
            if src.starts_with('/') && Path::new(src).is_dir() {
                mine.push(Volume {
                    service: s.name.clone(),
                    dir: PathBuf::from(src),
                    bytes: dir_size(Path::new(src)),
                });
            }
        }
        let total: u64 = mine.iter().map(|v| v.bytes).sum();
        if s.role == Role::Storage && total > minio_max {
            skipped.push(format!(
                "{}: {} of data is over backup.minio_max_size ({})",
                s.name,
                fmt_bytes(total),
                fmt_bytes(minio_max)
            ));
            continue;
        }
        out.extend(mine);
    }
    (out, skipped)
}

/// Bytes of the regular files under `dir` (symlinks not followed).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The config dir's files that are backed up (relative to it): the config
/// file, its drop-ins, the catalog and its drop-ins, each when it is in the
/// config dir and exists. The secrets dir is its own item. Not the keys dir:
/// the update keys are root's (the package's and the admin's), the daemon
/// could not put them back, and a restore must not make a key trusted.
fn config_members(config: &Config, config_path: &Path) -> (PathBuf, Vec<String>) {
    let dir = config_path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut candidates = vec![
        config_path.to_path_buf(),
        crate::dropin::dir_of(config_path),
        config.paths.services_file.clone(),
        crate::dropin::dir_of(&config.paths.services_file),
    ];
    candidates.dedup();
    let mut out = Vec::new();
    for c in candidates {
        if let Ok(rel) = c.strip_prefix(&dir)
            && !rel.as_os_str().is_empty()
            && c.exists()
            && !config.paths.secrets_dir.starts_with(&c)
        {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    (dir, out)
}

pub(super) async fn run_cmd(mut c: Command, what: &str) -> anyhow::Result<String> {
    let out = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `tar` of the whole of `dir` (owners and modes kept) into `out`.
async fn tar_dir(dir: &Path, members: &[String], out: &Path) -> anyhow::Result<()> {
    let mut c = Command::new("tar");
    c.arg("--create")
        .arg("--numeric-owner")
        .arg("--file")
        .arg(out)
        .arg("-C")
        .arg(dir)
        .arg("--")
        .args(members);
    run_cmd(c, &format!("tar of {}", dir.display())).await?;
    Ok(())
}

/// `pg_dump -Fc` of the arasuld database and its row counts, both from one
/// exported snapshot (the daemon keeps writing meanwhile).
async fn dump_with_counts(
    pool: &sqlx::PgPool,
    pg: &PgTarget,
    dest: &Path,
) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut snapshot = crate::db::backup::export_snapshot(pool)
        .await
        .context("the database is not reachable")?;
    let counts = snapshot.row_counts().await?;
    let mut c = pg.command("pg_dump");
    c.args(["--format=custom", "--no-password"])
        .arg(format!("--snapshot={}", snapshot.id))
        .arg("--file")
        .arg(dest);
    let dumped = run_cmd(c, "pg_dump").await;
    snapshot.close().await;
    dumped?;
    Ok(counts)
}

/// The installed models per runtime (names, digests, sizes), not the blobs.
async fn models_list(b: &Backups) -> serde_json::Value {
    let ai = crate::ai::Ai::new();
    let services = b.inner.services.services();
    let mut out = serde_json::Map::new();
    for backend in [crate::ai::Backend::Llm, crate::ai::Backend::Embeddings] {
        let v = match crate::ai::locate(&services, backend) {
            Ok(t) => match ai.tags(&t).await {
                Ok(models) => serde_json::json!({
                    "service": t.service,
                    "models": models.iter().map(|m| serde_json::json!({
                        "name": m.name, "digest": m.digest, "size": m.size
                    })).collect::<Vec<_>>(),
                }),
                Err(e) => serde_json::json!({ "service": t.service, "error": e.to_string() }),
            },
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        out.insert(format!("{backend}").to_ascii_lowercase(), v);
    }
    serde_json::Value::Object(out)
}

/// Copies each volume of a service while the service is stopped (through
/// the supervisor, so healing does not start it meanwhile), and starts it
/// again afterwards, also when the copy failed.
async fn copy_volumes(
    b: &Backups,
    vols: &[Volume],
    staging: &Path,
) -> anyhow::Result<Vec<(String, PathBuf, String)>> {
    let mut out = Vec::new();
    let mut services: Vec<&str> = vols.iter().map(|v| v.service.as_str()).collect();
    services.dedup();
    for service in services {
        let running = b.inner.services.service(service).is_some_and(|s| {
            !s.stopped_on_purpose
                && !matches!(
                    s.state,
                    crate::docker::ServiceState::Stopped
                        | crate::docker::ServiceState::Failed
                        | crate::docker::ServiceState::ImageMissing
                )
        });
        if running {
            b.inner
                .services
                .stop_transient(service)
                .await
                .with_context(|| format!("stopping {service} for a consistent copy"))?;
        }
        let copied = async {
            let mut files = Vec::new();
            for (i, v) in vols.iter().filter(|v| v.service == service).enumerate() {
                let file = format!("volume-{service}-{i}.tar");
                tar_dir(&v.dir, &[".".into()], &staging.join(&file)).await?;
                files.push((service.to_string(), v.dir.clone(), file));
            }
            anyhow::Ok(files)
        }
        .await;
        if running && let Err(e) = b.inner.services.start(service).await {
            tracing::warn!(
                service,
                "could not start it again after its backup copy: {e}"
            );
        }
        out.extend(copied?);
    }
    Ok(out)
}

/// The run itself; the run record is kept up to date on every path.
pub(super) async fn run(
    b: &Backups,
    config: &Config,
    target: &Target,
    trigger: &str,
) -> Result<Run, BackupError> {
    let state_dir = config.paths.state_dir.clone();
    // One archive per second at most (the name is the time).
    let mut now = Utc::now();
    if super::load_runs(&state_dir)
        .iter()
        .any(|r| r.id == retention::stamp(now))
    {
        tokio::time::sleep(std::time::Duration::from_millis(1001)).await;
        now = Utc::now();
    }
    let name = retention::file_name(now);
    let mut run = Run {
        id: retention::stamp(now),
        kind: "backup".into(),
        trigger: trigger.into(),
        started: now,
        finished: None,
        destination: target.describe(),
        file: Some(name.clone()),
        location: None,
        size: None,
        status: RunStatus::Running,
        error: None,
        skipped: Vec::new(),
    };
    save_run(&state_dir, &run)
        .map_err(|e| BackupError::Failed(format!("recording the run: {e}")))?;
    // A crash during an earlier run may have left its .part behind.
    if let Target::Dir { dir, .. } = target
        && let Ok(rd) = std::fs::read_dir(dir)
    {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.strip_suffix(".part")
                .and_then(retention::parse_name)
                .is_some()
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let staging_root = state_dir.join(STAGING_DIR);
    let staging = staging_root.join(&run.id);
    let _ = tokio::fs::remove_dir_all(&staging_root).await;
    let result = async {
        tokio::fs::create_dir_all(&staging)
            .await
            .context("creating the staging dir")?;
        stage_and_write(b, config, target, &name, &staging, &mut run).await
    }
    .await;
    let _ = tokio::fs::remove_dir_all(&staging_root).await;
    run.finished = Some(Utc::now());
    match result {
        Ok(()) => {
            save_run(&state_dir, &run).map_err(|e| BackupError::Failed(e.to_string()))?;
            // A safety backup prunes nothing: the archive being restored
            // (and any other of the day) must still be there should the
            // restore fail and the owner try again.
            if trigger != "safety"
                && let Err(e) = target.apply_retention(&config.backup).await
            {
                tracing::warn!("backup retention at {}: {e:#}", target.describe());
            }
            tracing::info!(
                file = %name, size = run.size, status = ?run.status,
                ms = run.duration_ms(), "backup written to {}", target.describe()
            );
            Ok(run)
        }
        Err(e) => {
            run.status = RunStatus::Failed;
            run.error = Some(e.to_string());
            let _ = save_run(&state_dir, &run);
            Err(e)
        }
    }
}

async fn stage_and_write(
    b: &Backups,
    config: &Config,
    target: &Target,
    name: &str,
    staging: &Path,
    run: &mut Run,
) -> Result<(), BackupError> {
    let pool = b.inner.db.pool().clone();
    let pg = PgTarget::from_url(config.database.url.expose())?;
    let catalog = crate::docker::load_catalog(&config.paths.services_file).map_err(|errs| {
        BackupError::Failed(format!(
            "the service catalog cannot be read: {}",
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ))
    })?;
    let (vols, mut skipped) = volumes(&catalog, config);

    // Free space, before anything is written.
    let db_bytes: Option<i64> = match crate::db::backup::database_size(&pool).await {
        Ok(n) => Some(n),
        // The safety backup of a restore that brings a lost database back
        // keeps what is left: everything but the database.
        Err(e) if run.trigger == "safety" && e.to_string().contains("does not exist") => {
            skipped.push("database: it does not exist".into());
            None
        }
        Err(e) => {
            return Err(BackupError::Failed(format!(
                "the database is not reachable: {e}"
            )));
        }
    };
    let config_bytes = b
        .inner
        .config_path
        .as_deref()
        .and_then(Path::parent)
        .map(dir_size)
        .unwrap_or(0)
        + dir_size(&config.paths.secrets_dir);
    let estimate = db_bytes.unwrap_or(0).max(0) as u64
        + vols.iter().map(|v| v.bytes).sum::<u64>()
        + config_bytes
        + (1 << 20);
    check_space(staging, target, estimate)?;

    // The items.
    let mut staged: Vec<(String, String, Option<String>, Option<PathBuf>)> = Vec::new();
    let mut counts = BTreeMap::new();
    if db_bytes.is_some() {
        counts = dump_with_counts(&pool, &pg, &staging.join("database.dump")).await?;
        staged.push(("database".into(), "database.dump".into(), None, None));
    }
    match b.inner.config_path.as_deref() {
        Some(cp) => {
            let (dir, members) = config_members(config, cp);
            if !members.is_empty() {
                tar_dir(&dir, &members, &staging.join("etc-arasul.tar")).await?;
                staged.push(("config".into(), "etc-arasul.tar".into(), None, Some(dir)));
            }
        }
        None => skipped.push("config: the daemon runs without a config file".into()),
    }
    if config.paths.secrets_dir.is_dir() {
        tar_dir(
            &config.paths.secrets_dir,
            &[".".into()],
            &staging.join("secrets.tar"),
        )
        .await?;
        staged.push((
            "secrets".into(),
            "secrets.tar".into(),
            None,
            Some(config.paths.secrets_dir.clone()),
        ));
    }
    let models = models_list(b).await;
    tokio::fs::write(
        staging.join("models.json"),
        serde_json::to_vec_pretty(&models).unwrap_or_default(),
    )
    .await
    .map_err(|e| BackupError::Failed(e.to_string()))?;
    staged.push(("models".into(), "models.json".into(), None, None));
    for (service, dir, file) in copy_volumes(b, &vols, staging).await? {
        staged.push(("volume".into(), file, Some(service), Some(dir)));
    }

    let staging_owned = staging.to_path_buf();
    let items = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Item>> {
        staged
            .into_iter()
            .map(|(kind, file, service, path)| {
                let (sha256, size) = archive::hash_file(&staging_owned.join(&file))?;
                Ok(Item {
                    kind,
                    file,
                    size,
                    sha256,
                    service,
                    path,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| BackupError::Failed(e.to_string()))??;
    let manifest = Manifest {
        format: archive::FORMAT,
        created: run.started,
        host: config.mdns.hostname.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        items,
        tables: counts,
        skipped: skipped.clone(),
    };
    run.skipped = skipped;

    // The archive, read back, its database restored and counted.
    let (archive_path, dest_dir) = match target {
        Target::Dir { dir, .. } => (dir.join(name), dir.clone()),
        Target::S3(_) => (staging.join(name), staging.to_path_buf()),
    };
    // A dir made here is the daemon's alone (an admin's own dir keeps its mode).
    tokio::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dest_dir)
        .await
        .map_err(|e| BackupError::Destination(format!("{}: {e}", dest_dir.display())))?;
    let written = {
        let (p, m, s) = (
            archive_path.clone(),
            manifest.clone(),
            staging.to_path_buf(),
        );
        tokio::task::spawn_blocking(move || archive::write(&p, &m, &s))
            .await
            .map_err(|e| BackupError::Failed(e.to_string()))?
    };
    let size = match written {
        Ok(n) => n,
        Err(e) => return Err(BackupError::Failed(format!("writing the archive: {e:#}"))),
    };
    let verified = verify(&pool, &pg, &archive_path, staging, &manifest).await;
    let status = match verified {
        Ok(s) => s,
        Err(e) => {
            let _ = tokio::fs::remove_file(&archive_path).await;
            return Err(BackupError::Failed(format!(
                "the archive failed its verification: {e:#}"
            )));
        }
    };
    let location = match target {
        Target::Dir { .. } => archive_path.display().to_string(),
        Target::S3(bucket) => {
            bucket
                .put_file(name, &archive_path)
                .await
                .map_err(|e| BackupError::Destination(format!("{e:#}")))?;
            format!("{}{name}", bucket.describe())
        }
    };
    run.size = Some(size);
    run.location = Some(location);
    run.status = status;
    Ok(())
}

fn check_space(staging: &Path, target: &Target, estimate: u64) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = |p: &Path| -> Option<u64> {
        let mut p = p.to_path_buf();
        while !p.exists() && p.pop() {}
        std::fs::metadata(&p).ok().map(|m| m.dev())
    };
    let io = |e: std::io::Error| BackupError::Failed(e.to_string());
    let staging_free = dest::free_bytes(staging).map_err(io)?;
    let mut needs: Vec<(String, u64, u64)> = Vec::new();
    match target {
        Target::Dir { dir, label } => {
            let same = dev(dir).is_some() && dev(dir) == dev(staging);
            let free = dest::free_bytes(dir).map_err(io)?;
            if same {
                needs.push((label.clone(), 2 * estimate + MARGIN, free));
            } else {
                needs.push((
                    "the state dir (staging)".into(),
                    estimate + MARGIN,
                    staging_free,
                ));
                needs.push((label.clone(), estimate + MARGIN, free));
            }
        }
        Target::S3(_) => needs.push((
            "the state dir (staging)".into(),
            2 * estimate + MARGIN,
            staging_free,
        )),
    }
    let short: Vec<String> = needs
        .iter()
        .filter(|(_, need, free)| need > free)
        .map(|(place, need, free)| {
            format!(
                "the backup needs about {} of free space on {place}, but only {} is free",
                fmt_bytes(*need),
                fmt_bytes(*free)
            )
        })
        .collect();
    if short.is_empty() {
        Ok(())
    } else {
        Err(BackupError::InsufficientDisk(short.join("; ")))
    }
}

/// Reads the archive back (every sha256), restores its database into a
/// scratch database and compares the row counts with the manifest. `Good`,
/// or `Unverified` when no scratch database may be created; `Err` when the
/// archive or its database is not what was written.
async fn verify(
    pool: &sqlx::PgPool,
    pg: &PgTarget,
    archive_path: &Path,
    staging: &Path,
    manifest: &Manifest,
) -> anyhow::Result<RunStatus> {
    let out = staging.join("verify");
    let (p, o) = (archive_path.to_path_buf(), out.clone());
    let read = tokio::task::spawn_blocking(move || archive::check(&p, Some(&o))).await??;
    if read != *manifest {
        bail!("the archive's manifest is not the one written");
    }
    if !manifest.items.iter().any(|i| i.kind == "database") {
        let _ = tokio::fs::remove_dir_all(&out).await;
        return Ok(RunStatus::Good);
    }
    let counts = match scratch_counts(pool, pg, &out.join("database.dump")).await? {
        Some(c) => c,
        None => return Ok(RunStatus::Unverified),
    };
    let _ = tokio::fs::remove_dir_all(&out).await;
    if counts != manifest.tables {
        let diff: Vec<String> = manifest
            .tables
            .iter()
            .filter(|(t, n)| counts.get(*t) != Some(n))
            .map(|(t, n)| format!("{t}: {n} rows dumped, {:?} restored", counts.get(t)))
            .collect();
        bail!("the restored database differs: {}", diff.join(", "));
    }
    Ok(RunStatus::Good)
}

/// The dump restored into `arasul_verify_<random>` and its rows counted;
/// the scratch database is dropped again. None: it could not be created.
pub(super) async fn scratch_counts(
    pool: &sqlx::PgPool,
    pg: &PgTarget,
    dump: &Path,
) -> anyhow::Result<Option<BTreeMap<String, i64>>> {
    let name = format!("arasul_verify_{}", hex::encode(rand::random::<[u8; 6]>()));
    if let Err(e) = crate::db::backup::create_database(pool, &name).await {
        tracing::warn!("no scratch database for the backup's verification: {e}");
        return Ok(None);
    }
    let counted = async {
        let mut c = pg.command("pg_restore");
        c.args([
            "--no-owner",
            "--no-privileges",
            "--exit-on-error",
            "--no-password",
        ])
        .arg(format!("--dbname={name}"))
        .arg(dump);
        run_cmd(c, "pg_restore (verification)").await?;
        let mut c = pg.command("psql");
        c.args([
            "--no-password",
            "--no-psqlrc",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .arg(format!("--dbname={name}"))
        .args(["-c", crate::db::backup::COUNT_ROWS]);
        anyhow::Ok(crate::db::backup::parse_counts(
            &run_cmd(c, "psql (verification)").await?,
        ))
    }
    .await;
    if let Err(e) = crate::db::backup::drop_database(pool, &name).await {
        tracing::warn!("the scratch database {name} could not be dropped: {e}");
    }
    counted.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_the_dashboard_shows_them() {
        assert_eq!(fmt_bytes(999), "999 B");
        assert_eq!(fmt_bytes(1_500_000), "1.5 MB");
        assert_eq!(fmt_bytes(20_000_000_000), "20.0 GB");
    }

    #[test]
    fn n8n_is_always_copied_and_minio_only_when_asked_and_small_enough() {
        let d = tempfile::tempdir().unwrap();
        for (dir, bytes) in [("n8n", 10), ("minio", 5000)] {
            std::fs::create_dir_all(d.path().join(dir).join("sub")).unwrap();
            std::fs::write(d.path().join(dir).join("sub/f"), vec![0u8; bytes]).unwrap();
        }
        let text = format!(
            "services:\n\
             - {{name: llm, image: x, role: llm, volumes: [\"{p}/llm:/root\"]}}\n\
             - {{name: minio, image: x, role: storage, volumes: [\"{p}/minio:/data\"]}}\n\
             - {{name: n8n, image: x, role: workflow, volumes: [\"{p}/n8n:/home/node/.n8n\", \"{p}/gone:/x\"]}}\n",
            p = d.path().display()
        );
        let catalog = crate::docker::catalog::parse("t", &text).unwrap();
        let mut config = Config::default();
        let names = |v: &[Volume]| {
            v.iter()
                .map(|v| (v.service.clone(), v.bytes))
                .collect::<Vec<_>>()
        };

        let (v, skipped) = volumes(&catalog, &config);
        assert_eq!(names(&v), [("n8n".to_string(), 10)]);
        assert!(
            skipped[0].contains("backup.include_minio is off"),
            "{skipped:?}"
        );

        config.backup.include_minio = true;
        config.backup.minio_max_size = "4k".into();
        let (v, skipped) = volumes(&catalog, &config);
        assert_eq!(names(&v), [("n8n".to_string(), 10)]);
        assert_eq!(
            skipped,
            ["minio: 5.0 KB of data is over backup.minio_max_size (4.1 KB)"]
        );

        config.backup.minio_max_size = "1m".into();
        let (v, skipped) = volumes(&catalog, &config);
        assert_eq!(
            names(&v),
            [("minio".to_string(), 5000), ("n8n".to_string(), 10)]
        );
        assert!(skipped.is_empty());
    }
}
