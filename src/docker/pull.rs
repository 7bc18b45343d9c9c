//! Pulling a service's missing image: one job per image, beside the
//! supervisor's loop. Before each attempt the registry's manifest gives the
//! compressed size, checked against the free space of the engine's data root
//! minus the configured floor: a pull that cannot fit is refused with the
//! numbers and nothing is written. Progress (bytes, layers) goes back to the
//! loop as it arrives; a pull with no progress for `stall_timeout` is
//! cancelled and tried again; network errors back off and retry.

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::CreateImageOptions;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::registry;

/// `docker.pull`: `auto` pulls a missing image; `never` (an offline
/// appliance) waits for one loaded from a bundle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    #[default]
    Auto,
    Never,
}

#[derive(Clone, Debug)]
pub struct PullSettings {
    pub policy: PullPolicy,
    /// No progress this long: the pull is cancelled and started again.
    pub stall_timeout: Duration,
    /// Bytes that must stay free in the engine's data root after the pull.
    pub min_free: u64,
    /// Longest wait between two attempts (backoff doubles from 2 s).
    pub retry_max: Duration,
    /// Where `registry-auth.json` is.
    pub secrets_dir: PathBuf,
}

/// A pull in progress, as `GET /api/services` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PullProgress {
    pub image: String,
    /// Compressed bytes downloaded so far (this attempt).
    pub bytes_done: u64,
    /// The image's compressed size from the registry (0: not known yet).
    pub bytes_total: u64,
    pub layers_done: u32,
    pub layers_total: u32,
    /// 1 for the first try; more after a stall or a network error.
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    /// Why the previous attempt ended (a stall, a network error).
    pub last_error: Option<String>,
}

#[derive(Debug)]
pub enum PullEvent {
    Progress(PullProgress),
    /// The pull finished, or was refused (`Err`, with the reason): a
    /// refusal is not retried by the job; the supervisor asks again later.
    Done {
        image: String,
        result: Result<(), String>,
    },
}

/// Refuses a download of `size` bytes that would leave less than `floor`
/// free; the reason has the numbers in words.
pub fn admit(image: &str, size: u64, free: u64, floor: u64) -> Result<(), String> {
    if free >= size && free - size >= floor {
        return Ok(());
    }
    Err(format!(
        "not enough space to pull {image}: it needs {} and {} is free in Docker's data root, which must keep {} free (docker.pull_min_free)",
        human(size),
        human(free),
        human(floor)
    ))
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Pulls `image` until it is present (or refused for space). Runs as a job
/// of the supervisor; dropped (aborted) with the loop.
pub async fn run(
    docker: Docker,
    image: String,
    settings: PullSettings,
    tx: mpsc::Sender<PullEvent>,
) {
    let reference = registry::Reference::parse(&image);
    let root = docker
        .info()
        .await
        .ok()
        .and_then(|i| i.docker_root_dir)
        .unwrap_or_else(|| "/var/lib/docker".into());
    let mut progress = PullProgress {
        image: image.clone(),
        ..Default::default()
    };
    let mut backoff = Duration::from_secs(2);
    loop {
        progress.attempt += 1;
        progress.started_at = Some(Utc::now());
        progress.bytes_done = 0;
        progress.layers_done = 0;
        progress.layers_total = 0;
        // Read each attempt: a login the owner adds is used by the next one.
        let logins = registry::load_logins(&settings.secrets_dir);
        let login = logins.get(&reference.domain);
        let credentials = login.map(|l| DockerCredentials {
            username: Some(l.username.clone()),
            password: Some(l.password.clone()),
            serveraddress: Some(reference.domain.clone()),
            ..Default::default()
        });
        // The size is asked each attempt: the registry may have been down.
        let ask = settings.stall_timeout.min(Duration::from_secs(30));
        match registry::compressed_size(&image, login, ask).await {
            Ok(size) => progress.bytes_total = size,
            Err(e) => {
                tracing::warn!(image = %image, error = %e, "the registry did not give the image's size: checking the free-space floor only");
            }
        }
        let free = crate::metrics::collect::disk::disk_usage(std::path::Path::new(&root))
            .map(|d| d.free_bytes)
            .unwrap_or(u64::MAX);
        if let Err(why) = admit(&image, progress.bytes_total, free, settings.min_free) {
            let _ = tx
                .send(PullEvent::Done {
                    image,
                    result: Err(why),
                })
                .await;
            return;
        }
        let _ = tx.send(PullEvent::Progress(progress.clone())).await;
        tracing::info!(image = %image, attempt = progress.attempt, bytes = progress.bytes_total, "pulling image");
        match pull_once(
            &docker,
            &image,
            credentials.clone(),
            &settings,
            &mut progress,
            &tx,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(image = %image, attempt = progress.attempt, "image pulled");
                let _ = tx
                    .send(PullEvent::Done {
                        image,
                        result: Ok(()),
                    })
                    .await;
                return;
            }
            Err(e) => {
                tracing::warn!(image = %image, attempt = progress.attempt, error = %e, retry_in = ?backoff, "pull failed; retrying");
                progress.last_error = Some(e);
                let _ = tx.send(PullEvent::Progress(progress.clone())).await;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(settings.retry_max);
            }
        }
    }
}

/// One `POST /images/create`, following its progress messages.
async fn pull_once(
    docker: &Docker,
    image: &str,
    credentials: Option<DockerCredentials>,
    settings: &PullSettings,
    progress: &mut PullProgress,
    tx: &mpsc::Sender<PullEvent>,
) -> Result<(), String> {
    let r = registry::Reference::parse(image);
    let name = image.split_once('@').map_or_else(
        || {
            image
                .strip_suffix(&format!(":{}", r.reference))
                .unwrap_or(image)
        },
        |(n, _)| n,
    );
    let mut stream = docker.create_image(
        Some(CreateImageOptions {
            from_image: Some(name.to_string()),
            tag: Some(r.reference.clone()),
            ..Default::default()
        }),
        None,
        credentials,
    );
    // Per layer: downloaded bytes, and whether it is complete.
    let mut layers: std::collections::BTreeMap<String, (u64, bool)> = Default::default();
    let mut last_sent = tokio::time::Instant::now();
    // Only bytes or layers moving count: the engine's own "Retrying in 5
    // seconds" countdown is not progress.
    let mut last_progress = tokio::time::Instant::now();
    loop {
        let deadline = last_progress + settings.stall_timeout;
        let item = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(format!(
                    "no progress for {}s: cancelled",
                    settings.stall_timeout.as_secs()
                ));
            }
            Ok(None) => break,
            Ok(Some(item)) => item.map_err(|e| e.to_string())?,
        };
        let (Some(id), Some(status)) = (item.id.as_deref(), item.status.as_deref()) else {
            continue;
        };
        let entry = match status {
            "Pulling fs layer" | "Waiting" | "Downloading" | "Verifying Checksum"
            | "Download complete" | "Extracting" | "Pull complete" | "Already exists" => {
                layers.entry(id.to_string()).or_default()
            }
            _ => continue,
        };
        match status {
            "Downloading" => {
                if let Some(c) = item.progress_detail.as_ref().and_then(|d| d.current) {
                    entry.0 = c.max(0) as u64;
                }
            }
            "Pull complete" | "Already exists" => entry.1 = true,
            _ => {}
        }
        let before = (
            progress.bytes_done,
            progress.layers_done,
            progress.layers_total,
        );
        progress.layers_total = layers.len() as u32;
        progress.layers_done = layers.values().filter(|l| l.1).count() as u32;
        progress.bytes_done = layers.values().map(|l| l.0).sum();
        if before
            != (
                progress.bytes_done,
                progress.layers_done,
                progress.layers_total,
            )
            || status == "Extracting"
        {
            last_progress = tokio::time::Instant::now();
        }
        if last_sent.elapsed() >= Duration::from_millis(250) {
            last_sent = tokio::time::Instant::now();
            let _ = tx.send(PullEvent::Progress(progress.clone())).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_is_admitted_only_when_the_floor_stays_free() {
        assert!(admit("x", 100, 1_000, 900).is_ok());
        let e = admit(
            "ollama/ollama:0.5.7",
            2_500_000_000,
            10_000_000_000,
            8_000_000_000,
        )
        .unwrap_err();
        assert_eq!(
            e,
            "not enough space to pull ollama/ollama:0.5.7: it needs 2.5 GB and 10.0 GB is free in Docker's data root, which must keep 8.0 GB free (docker.pull_min_free)"
        );
        // A size the registry did not give (0) still keeps the floor.
        assert!(admit("x", 0, 10, 11).is_err());
        assert!(admit("x", u64::MAX, 10, 0).is_err());
    }
}
