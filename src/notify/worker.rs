//! The `notifications` worker: takes alerts from the [`Notifier`] queue,
//! de-duplicates them, writes each to the outbox (PostgreSQL; a spool file
//! in `state_dir/notify/` while the database is down, flushed once it is
//! back) before any channel is tried, and delivers per channel in tasks of
//! its own with retries and backoff. A slow channel only ever holds up its
//! own delivery task.
//!
//! [`Notifier`]: super::Notifier

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::channels::Sender;
use super::config::{ChannelConfig, NotifyConfig, secret_file};
use super::rules::{Dedup, backoff, held_until};
use super::{Alert, AlertInbox};
use crate::config::{Config, Secret};
use crate::db::Db;
use crate::metrics::counters::NOTIFICATIONS;
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// The spool: outbox entries the database has not taken yet.
pub const SPOOL_FILE: &str = "notify/outbox-spool.json";
/// How long one database write may take before the spool takes over.
const DB_TIMEOUT: Duration = Duration::from_secs(5);
/// The loop looks around at least this often (retention, config changes).
const IDLE: Duration = Duration::from_secs(60);

/// What the worker needs; cloned into every run.
#[derive(Clone)]
pub struct NotifyDeps {
    pub inbox: AlertInbox,
    pub db: Db,
    /// The running config: channels, windows and paths are read from it
    /// at each step, so a change in the dashboard applies at once.
    pub config: watch::Receiver<Arc<Config>>,
}

/// One alert in the outbox, with each channel's delivery.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxEntry {
    pub uid: String,
    pub created_at: DateTime<Utc>,
    #[serde(flatten)]
    pub alert: Alert,
    pub deliveries: Vec<Delivery>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Delivery {
    pub channel: String,
    pub status: DeliveryStatus,
    /// Tries so far.
    pub attempts: u32,
    /// When the next try is due (quiet hours, backoff).
    pub next_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    /// Given up after `notify.max_attempts`, or the channel was removed.
    Failed,
}

impl OutboxEntry {
    /// Some channel is still to be tried.
    pub fn is_pending(&self) -> bool {
        self.deliveries
            .iter()
            .any(|d| d.status == DeliveryStatus::Pending)
    }
}

/// Spawns the worker (auxiliary: notifications never gate the watchdog).
pub fn spawn(workers: &Workers, deps: NotifyDeps) {
    workers.spawn(
        WorkerName::Notifications,
        WorkerKind::Auxiliary,
        move |ctx| {
            let deps = deps.clone();
            async move { run(ctx, deps).await }
        },
    );
}

/// Sends `channel` a test alert now, outside the outbox; `Err` is what the
/// channel answered.
pub async fn send_test(config: &Config, channel: &str) -> Result<(), String> {
    let c = config
        .notify
        .channels
        .iter()
        .find(|c| c.name == channel)
        .ok_or_else(|| format!("no channel {channel:?}"))?;
    let sender = Sender::new(&config.mdns.hostname, config.notify.send_timeout);
    let credential = read_credential(&config.paths.secrets_dir, &c.name).await;
    let alert = Alert::new(
        super::Severity::Info,
        "test",
        format!("test:{channel}"),
        "Test notification",
        format!(
            "This is a test from {} through the channel \"{channel}\". If you read this, it works.",
            config.mdns.hostname
        ),
    );
    sender
        .send(c, credential.as_ref(), &alert, Utc::now())
        .await
}

/// The credential of channel `name`, if its file exists.
pub async fn read_credential(secrets_dir: &Path, name: &str) -> Option<Secret<String>> {
    let text = tokio::fs::read_to_string(secret_file(secrets_dir, name))
        .await
        .ok()?;
    let t = text.trim_end_matches(['\n', '\r']);
    (!t.is_empty()).then(|| Secret::new(t.to_owned()))
}

/// The entries not yet finished, and which of them the database lacks.
#[derive(Default)]
struct Outbox {
    entries: Vec<OutboxEntry>,
    /// uids whose latest state is not in the database yet.
    dirty: HashSet<String>,
    /// The spool file no longer matches `dirty`.
    spool_stale: bool,
}

impl Outbox {
    fn add(&mut self, alert: Alert, cfg: &NotifyConfig, now: DateTime<Utc>) {
        let held = held_until(
            cfg.quiet_hours.as_ref(),
            alert.severity,
            now,
            &chrono::Local,
        );
        let deliveries = cfg
            .channels
            .iter()
            .filter(|c| c.wants(alert.severity))
            .map(|c| Delivery {
                channel: c.name.clone(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                next_at: held.unwrap_or(now),
                last_error: None,
                delivered_at: None,
            })
            .collect();
        let mut id = [0u8; 12];
        rand::rng().fill(&mut id[..]);
        let e = OutboxEntry {
            uid: hex::encode(id),
            created_at: now,
            alert,
            deliveries,
        };
        if let Some(until) = held {
            tracing::info!(kind = %e.alert.kind, %until, "quiet hours: notification held");
        }
        self.touch(&e.uid.clone());
        self.entries.push(e);
    }

    fn touch(&mut self, uid: &str) {
        self.dirty.insert(uid.to_owned());
        self.spool_stale = true;
    }

    fn insert_loaded(&mut self, loaded: Vec<OutboxEntry>, dirty: bool) {
        for e in loaded {
            if self.entries.iter().any(|x| x.uid == e.uid) {
                continue;
            }
            if dirty {
                self.dirty.insert(e.uid.clone());
            }
            self.entries.push(e);
        }
    }

    /// (uid, channel) of the deliveries due by `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        self.entries
            .iter()
            .flat_map(|e| {
                e.deliveries
                    .iter()
                    .filter(move |d| d.status == DeliveryStatus::Pending && d.next_at <= now)
                    .map(move |d| (e.uid.clone(), d.channel.clone()))
            })
            .collect()
    }

    fn next_due(&self, busy: &HashSet<(String, String)>) -> Option<DateTime<Utc>> {
        self.entries
            .iter()
            .flat_map(|e| e.deliveries.iter().map(move |d| (e, d)))
            .filter(|(e, d)| {
                d.status == DeliveryStatus::Pending
                    && !busy.contains(&(e.uid.clone(), d.channel.clone()))
            })
            .map(|(_, d)| d.next_at)
            .min()
    }

    fn delivery(&mut self, uid: &str, channel: &str) -> Option<(&Alert, &mut Delivery)> {
        let e = self.entries.iter_mut().find(|e| e.uid == uid)?;
        let d = e.deliveries.iter_mut().find(|d| d.channel == channel)?;
        Some((&e.alert, d))
    }

    /// Records one try's outcome.
    fn settle(
        &mut self,
        uid: &str,
        channel: &str,
        outcome: Result<(), String>,
        cfg: &NotifyConfig,
        now: DateTime<Utc>,
    ) {
        let Some((alert, d)) = self.delivery(uid, channel) else {
            return;
        };
        d.attempts += 1;
        match outcome {
            Ok(()) => {
                NOTIFICATIONS.inc(["delivered"]);
                tracing::info!(channel, kind = %alert.kind, attempts = d.attempts, "notification delivered");
                d.status = DeliveryStatus::Delivered;
                d.delivered_at = Some(now);
                d.last_error = None;
            }
            Err(e) => {
                if d.attempts >= cfg.max_attempts {
                    NOTIFICATIONS.inc(["given_up"]);
                    tracing::error!(channel, kind = %alert.kind, attempts = d.attempts, error = %e, "notification given up");
                    d.status = DeliveryStatus::Failed;
                } else {
                    NOTIFICATIONS.inc(["retry"]);
                    let wait = backoff(cfg.retry_initial, cfg.retry_max, d.attempts);
                    tracing::warn!(channel, kind = %alert.kind, attempts = d.attempts, retry_in = ?wait, error = %e, "notification not delivered");
                    d.next_at = now + chrono::Duration::from_std(wait).unwrap_or_default();
                }
                d.last_error = Some(e);
            }
        }
        self.touch(uid);
    }

    /// Forgets entries that are finished and in the database.
    fn drop_finished(&mut self) {
        let dirty = &self.dirty;
        self.entries
            .retain(|e| e.is_pending() || dirty.contains(&e.uid));
    }

    fn dirty_entries(&self) -> Vec<&OutboxEntry> {
        self.entries
            .iter()
            .filter(|e| self.dirty.contains(&e.uid))
            .collect()
    }
}

fn read_spool(path: &Path) -> Vec<OutboxEntry> {
    let Ok(bytes) = std::fs::read(path) else {
        return Vec::new();
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => {
            // Never lose it: kept aside for a person, and the box goes on.
            let aside = path.with_extension("json.unreadable");
            tracing::error!(path = %path.display(), error = %e, "notification spool unreadable; moved aside");
            let _ = std::fs::rename(path, aside);
            Vec::new()
        }
    }
}

fn write_spool(path: &Path, entries: &[&OutboxEntry]) -> std::io::Result<()> {
    if entries.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec(entries).map_err(std::io::Error::other)?;
    crate::os::fs::write_atomic(path, &bytes, crate::os::fs::PRIVATE)
}

type Outcome = (String, String, Result<(), String>);

async fn run(ctx: WorkerCtx, deps: NotifyDeps) -> anyhow::Result<()> {
    let mut inbox = deps.inbox.0.lock().await;
    let mut db_watch = deps.db.subscribe();
    let spool: PathBuf = deps.config.borrow().paths.state_dir.join(SPOOL_FILE);
    let mut outbox = Outbox::default();
    {
        let spooled = read_spool(&spool);
        if !spooled.is_empty() {
            tracing::info!(
                entries = spooled.len(),
                "notifications spooled while the database was down: flushing when it is up"
            );
        }
        outbox.insert_loaded(spooled, true);
    }
    let mut dedup = Dedup::default();
    {
        let window = deps.config.borrow().notify.dedup_window;
        for e in &outbox.entries {
            dedup.seed(&e.alert, e.created_at, window);
        }
    }
    let mut loaded_from_db = false;
    let mut db_error_logged = false;
    let mut last_prune: Option<DateTime<Utc>> = None;
    let mut inflight: JoinSet<Outcome> = JoinSet::new();
    let mut busy: HashSet<(String, String)> = HashSet::new();
    let mut db_watch_open = true;
    let mut sender: Option<Sender> = None;

    loop {
        ctx.beat();
        let config = deps.config.borrow().clone();
        let cfg = &config.notify;
        let now = Utc::now();
        for summary in dedup.close_due(now) {
            outbox.add(summary, cfg, now);
        }

        // The outbox first: nothing is tried before it is on disk or in the DB.
        if deps.db.status().up {
            if !loaded_from_db {
                let since = now - chrono::Duration::from_std(cfg.dedup_window).unwrap_or_default();
                let pool = deps.db.pool();
                let load = async {
                    Ok::<_, sqlx::Error>((
                        crate::db::notifications::pending(pool).await?,
                        crate::db::notifications::since(pool, since).await?,
                    ))
                };
                match tokio::time::timeout(DB_TIMEOUT, load).await {
                    Ok(Ok((rows, recent))) => {
                        loaded_from_db = true;
                        // Sent before a restart and still inside its window.
                        for e in &recent {
                            dedup.seed(&e.alert, e.created_at, cfg.dedup_window);
                        }
                        outbox.insert_loaded(rows, false);
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "pending notifications not loaded yet")
                    }
                    Err(_) => tracing::debug!("pending notifications not loaded yet: timeout"),
                }
            }
            if !outbox.dirty.is_empty() {
                let entries = outbox.dirty_entries();
                let written = tokio::time::timeout(
                    DB_TIMEOUT,
                    crate::db::notifications::upsert(deps.db.pool(), &entries),
                )
                .await;
                match written {
                    Ok(Ok(())) => {
                        outbox.dirty.clear();
                        outbox.spool_stale = true;
                        db_error_logged = false;
                    }
                    Ok(Err(e)) => {
                        if !std::mem::replace(&mut db_error_logged, true) {
                            tracing::warn!(error = %e, "notification outbox not written to the database; spooled on disk");
                        }
                    }
                    Err(_) => {
                        if !std::mem::replace(&mut db_error_logged, true) {
                            tracing::warn!("notification outbox write timed out; spooled on disk");
                        }
                    }
                }
            }
            if last_prune.is_none_or(|t| now - t > chrono::Duration::hours(1)) {
                last_prune = Some(now);
                let before = now - chrono::Duration::from_std(cfg.retention).unwrap_or_default();
                if let Ok(Ok(n)) = tokio::time::timeout(
                    DB_TIMEOUT,
                    crate::db::notifications::prune(deps.db.pool(), before),
                )
                .await
                    && n > 0
                {
                    tracing::info!(deleted = n, "old notifications pruned");
                }
            }
        }
        if outbox.spool_stale {
            match write_spool(&spool, &outbox.dirty_entries()) {
                Ok(()) => outbox.spool_stale = false,
                Err(e) => {
                    tracing::error!(path = %spool.display(), error = %e, "notification spool not written")
                }
            }
        }
        outbox.drop_finished();

        // Deliveries that are due, each in a task of its own. One client
        // (TLS roots loaded once) until the name or the timeout changes.
        if sender
            .as_ref()
            .is_none_or(|s| s.box_name != config.mdns.hostname || s.timeout != cfg.send_timeout)
        {
            sender = Some(Sender::new(&config.mdns.hostname, cfg.send_timeout));
        }
        let sender = sender.as_ref().expect("just made");
        for (uid, channel) in outbox.due(now) {
            let key = (uid.clone(), channel.clone());
            if busy.contains(&key) {
                continue;
            }
            let Some(ch) = cfg.channels.iter().find(|c| c.name == channel).cloned() else {
                outbox.settle(
                    &uid,
                    &channel,
                    Err("the channel was removed".into()),
                    &NotifyConfig {
                        max_attempts: 1,
                        ..cfg.clone()
                    },
                    now,
                );
                continue;
            };
            let Some((alert, _)) = outbox.delivery(&uid, &channel) else {
                continue;
            };
            let (alert, sender) = (alert.clone(), sender.clone());
            let secrets = config.paths.secrets_dir.clone();
            let created = outbox
                .entries
                .iter()
                .find(|e| e.uid == uid)
                .map_or(now, |e| e.created_at);
            busy.insert(key);
            inflight.spawn(async move {
                let result = deliver(&sender, &ch, &secrets, &alert, created).await;
                (uid, channel, result)
            });
        }

        let wake = [outbox.next_due(&busy), dedup.next_close()]
            .into_iter()
            .flatten()
            .min()
            .map_or(IDLE, |t| {
                (t - Utc::now()).to_std().unwrap_or_default().min(IDLE)
            });
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                inflight.abort_all();
                if let Err(e) = write_spool(&spool, &outbox.dirty_entries()) {
                    tracing::error!(error = %e, "notification spool not written at shutdown");
                }
                return Ok(());
            }
            alert = inbox.recv() => {
                let Some(alert) = alert else {
                    // Every handle is gone: the daemon is going down.
                    ctx.cancel.cancelled().await;
                    continue;
                };
                // The config as it is now: the loop may have slept through a change.
                let fresh = deps.config.borrow().notify.clone();
                let now = Utc::now();
                if dedup.admit(&alert, now, fresh.dedup_window) {
                    outbox.add(alert, &fresh, now);
                } else {
                    tracing::debug!(cause = %alert.cause, "notification de-duplicated");
                }
            }
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok((uid, channel, result)) = done {
                    busy.remove(&(uid.clone(), channel.clone()));
                    let fresh = deps.config.borrow().notify.clone();
                    outbox.settle(&uid, &channel, result, &fresh, Utc::now());
                }
            }
            changed = db_watch.changed(), if db_watch_open => {
                db_watch_open = changed.is_ok();
            }
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

async fn deliver(
    sender: &Sender,
    channel: &ChannelConfig,
    secrets_dir: &Path,
    alert: &Alert,
    at: DateTime<Utc>,
) -> Result<(), String> {
    let credential = read_credential(secrets_dir, &channel.name).await;
    sender.send(channel, credential.as_ref(), alert, at).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Severity;

    fn cfg() -> NotifyConfig {
        serde_yaml::from_str(
            r#"
retry_initial: 1s
retry_max: 4s
max_attempts: 3
channels:
  - {name: all, min_severity: INFO, webhook: {url: "http://127.0.0.1:1/"}}
  - {name: bad-only, min_severity: CRITICAL, ntfy: {topic: t}}
"#,
        )
        .unwrap()
    }

    #[test]
    fn channels_get_only_the_severities_they_want_and_retries_are_bounded() {
        let mut o = Outbox::default();
        let now = Utc::now();
        o.add(
            Alert::new(Severity::Warning, "k", "c", "t", "b"),
            &cfg(),
            now,
        );
        o.add(
            Alert::new(Severity::Critical, "k", "d", "t", "b"),
            &cfg(),
            now,
        );
        let chans: Vec<Vec<&str>> = o
            .entries
            .iter()
            .map(|e| e.deliveries.iter().map(|d| d.channel.as_str()).collect())
            .collect();
        assert_eq!(chans, [vec!["all"], vec!["all", "bad-only"]]);
        assert_eq!(o.due(now).len(), 3);

        let uid = o.entries[0].uid.clone();
        o.settle(&uid, "all", Err("down".into()), &cfg(), now);
        let d = &o.entries[0].deliveries[0];
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 1));
        assert_eq!(d.next_at, now + chrono::Duration::seconds(1));
        o.settle(&uid, "all", Err("down".into()), &cfg(), now);
        assert_eq!(
            o.entries[0].deliveries[0].next_at,
            now + chrono::Duration::seconds(2)
        );
        o.settle(&uid, "all", Err("still down".into()), &cfg(), now);
        let d = &o.entries[0].deliveries[0];
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(d.last_error.as_deref(), Some("still down"));
        assert!(!o.entries[0].is_pending());
        // Finished, but not in the DB yet: kept until it is.
        o.drop_finished();
        assert_eq!(o.entries.len(), 2);
        o.dirty.clear();
        o.drop_finished();
        assert_eq!(o.entries.len(), 1);
    }

    #[test]
    fn the_spool_round_trips_and_an_empty_one_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SPOOL_FILE);
        let mut o = Outbox::default();
        o.add(
            Alert::new(Severity::Critical, "k", "c", "t", "b"),
            &cfg(),
            Utc::now(),
        );
        write_spool(&path, &o.dirty_entries()).unwrap();
        let back = read_spool(&path);
        assert_eq!(back, o.entries);
        write_spool(&path, &[]).unwrap();
        assert!(!path.exists());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"{torn").unwrap();
        assert!(read_spool(&path).is_empty());
        assert!(path.with_extension("json.unreadable").exists());
    }
}
