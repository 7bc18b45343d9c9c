//! SQL for admin auth: session rows, audit rows, and the worker that moves
//! what `auth::Auth` queued in memory into Postgres whenever it is up.
//! Auth never waits for this: login, logout and token checks work from
//! memory; a failed write is handed back and retried, in order. While the
//! DB is away the worker keeps the queued session writes in the spool
//! (`Auth::sync_spool`), so a restart meanwhile loses none.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Db;
use crate::auth::{ADMIN_USERNAME, AuditEvent, Auth, Now, SessionRecord, SessionWrite, SpoolSync};
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

/// How often queued writes are flushed while the DB is up.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Housekeeping period: expired sessions in memory and in the DB.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Session rows are kept this long past their expiry (for the audit trail).
pub const SESSION_ROW_RETENTION: chrono::Duration = chrono::Duration::days(90);
/// Rows deleted per statement, so the hourly job never holds long locks.
const DELETE_BATCH: i64 = 5_000;
/// Successful logins this recent make their source "known good" after a restart.
const KNOWN_GOOD_WINDOW: chrono::Duration = chrono::Duration::days(30);

/// Applies session writes in order, in one transaction (all or nothing, so
/// the caller can hand the whole batch back on failure).
pub async fn apply_session_writes(pool: &PgPool, writes: &[SessionWrite]) -> anyhow::Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for w in writes {
        match w {
            SessionWrite::Upsert(r) => {
                sqlx::query(
                    "INSERT INTO sessions (jti, username, ip, user_agent, created_at, last_activity, expires_at, revoked_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (jti) DO UPDATE SET
                        last_activity = GREATEST(sessions.last_activity, EXCLUDED.last_activity),
                        revoked_at = COALESCE(sessions.revoked_at, EXCLUDED.revoked_at)",
                )
                .bind(&r.jti)
                .bind(ADMIN_USERNAME)
                .bind(r.ip.to_string())
                .bind(&r.user_agent)
                .bind(r.created_at)
                .bind(r.last_activity)
                .bind(r.expires_at)
                .bind(r.revoked_at)
                .execute(&mut *tx)
                .await?;
            }
            SessionWrite::Revoke { jti, at } => {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $2 WHERE jti = $1 AND revoked_at IS NULL",
                )
                .bind(jti)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
            SessionWrite::RevokeAll { at, except } => {
                sqlx::query(
                    "UPDATE sessions SET revoked_at = $1
                     WHERE revoked_at IS NULL AND created_at <= $1 AND jti IS DISTINCT FROM $2",
                )
                .bind(at)
                .bind(except)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Appends audit events to `audit_log`, in one transaction.
pub async fn insert_audit(pool: &PgPool, events: &[AuditEvent]) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for e in events {
        let action = serde_json::to_value(e.kind)?
            .as_str()
            .unwrap_or("unknown")
            .to_owned();
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, ip, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(e.at)
        .bind(ADMIN_USERNAME)
        .bind(action)
        .bind(e.ip.map(|ip| ip.to_string()))
        .bind(serde_json::json!({ "detail": e.detail }))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Sessions that have not expired yet (revoked ones included: their
/// revocation must be known after a restart).
pub async fn load_sessions(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<SessionRecord>> {
    type Row = (
        String,
        String,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT jti, ip, user_agent, created_at, last_activity, expires_at, revoked_at
         FROM sessions WHERE expires_at > $1",
    )
    .bind(now)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(
            |(jti, ip, user_agent, created_at, last_activity, expires_at, revoked_at)| {
                Some(SessionRecord {
                    jti,
                    ip: ip.parse().ok()?,
                    user_agent,
                    created_at,
                    last_activity,
                    expires_at,
                    revoked_at,
                })
            },
        )
        .collect())
}

/// Sources with a successful login in the last 30 days, newest login each.
pub async fn known_good_sources(
    pool: &PgPool,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<(IpAddr, DateTime<Utc>)>> {
    let rows: Vec<(Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT ip, max(at) FROM audit_log
         WHERE action = 'login_success' AND at > $1 AND ip IS NOT NULL
         GROUP BY ip ORDER BY max(at) DESC LIMIT 1000",
    )
    .bind(now - KNOWN_GOOD_WINDOW)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(ip, at)| Some((ip?.parse().ok()?, at)))
        .collect())
}

/// Session rows age by when they expired.
const SESSIONS: super::retention::Aging = super::retention::Aging {
    table: "sessions",
    key: "jti",
    time: "expires_at",
    noun: "expired session rows",
};

/// Deletes session rows expired before `before`, in bounded batches.
pub async fn prune_sessions(pool: &PgPool, before: DateTime<Utc>) -> anyhow::Result<u64> {
    Ok(super::retention::delete_older_than(pool, SESSIONS, before, DELETE_BATCH, || {}).await?)
}

/// Moves queued writes to the DB. On failure they are handed back to `auth`
/// (ahead of newer ones) and the error is returned.
pub async fn flush(pool: &PgPool, auth: &Auth) -> anyhow::Result<()> {
    let writes = auth.drain_session_writes();
    if let Err(e) = apply_session_writes(pool, &writes).await {
        auth.restore_session_writes(writes);
        return Err(e);
    }
    auth.session_writes_persisted();
    let events = auth.drain_audit();
    if let Err(e) = insert_audit(pool, &events).await {
        auth.restore_audit(events);
        return Err(e);
    }
    Ok(())
}

/// Seeds `auth` from the DB: sessions (with their revocations) and the
/// sources that logged in successfully lately.
pub async fn seed(pool: &PgPool, auth: &Auth) -> anyhow::Result<usize> {
    let now = Now::current();
    let rows = load_sessions(pool, now.wall).await?;
    let n = rows.len();
    auth.load_sessions(rows, now);
    for (ip, at) in known_good_sources(pool, now.wall).await? {
        auth.seed_known_good(ip, at, now);
    }
    Ok(n)
}

/// Brings the spool up to date off the async threads; a failure is logged
/// once until it works again (`failing` remembers).
async fn sync_spool(auth: &Arc<Auth>, how: SpoolSync, failing: &mut bool) {
    let auth = auth.clone();
    let result = tokio::task::spawn_blocking(move || auth.sync_spool(how))
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    match result {
        Ok(()) if *failing => {
            tracing::info!("session spool written again");
            *failing = false;
        }
        Ok(()) => {}
        Err(e) => {
            if !*failing {
                tracing::error!(error = %format!("{e:#}"), "session spool not written: a restart before the database is back would lose session changes");
            }
            *failing = true;
        }
    }
}

/// Spawns the `auth-persister` worker.
pub fn spawn_persister(workers: &Workers, db: Db, auth: Arc<Auth>) {
    workers.spawn(
        WorkerName::AuthPersister,
        WorkerKind::Auxiliary,
        move |ctx| run_persister(ctx, db.clone(), auth.clone()),
    );
}

/// The `auth-persister` worker: while the DB is up (and migrated), flushes
/// queued session and audit writes every second; each time the DB comes
/// (back) up, first flushes, then reloads the sessions; prunes hourly.
/// While the DB is down or failing, keeps the spool current; once it has
/// taken everything, removes the spool.
async fn run_persister(ctx: WorkerCtx, db: Db, auth: Arc<Auth>) -> anyhow::Result<()> {
    let mut status = db.subscribe();
    let mut seeded = false;
    let mut last_prune = tokio::time::Instant::now();
    let mut failing = false;
    let mut spool_failing = false;
    loop {
        ctx.beat();
        let s = status.borrow_and_update().clone();
        if s.up && s.migrated {
            let pool = db.pool();
            let mut result = flush(pool, &auth).await;
            if result.is_ok() && !seeded {
                result = seed(pool, &auth).await.map(|n| {
                    tracing::info!(sessions = n, "admin sessions loaded from the database");
                    seeded = true;
                });
            }
            if result.is_ok() && last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                auth.prune(Now::current());
                result = prune_sessions(pool, Utc::now() - SESSION_ROW_RETENTION)
                    .await
                    .map(|n| {
                        if n > 0 {
                            tracing::info!(rows = n, "pruned expired session rows");
                        }
                    });
            }
            let spool = if result.is_ok() {
                SpoolSync::Tidy
            } else {
                SpoolSync::Always
            };
            match result {
                Ok(()) if failing => {
                    tracing::info!("auth writes reach the database again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %format!("{e:#}"), "auth writes kept in memory and the spool: database write failed");
                    }
                    failing = true;
                }
            }
            sync_spool(&auth, spool, &mut spool_failing).await;
        } else {
            // Sessions are reloaded when it comes back (rows may have
            // changed meanwhile, e.g. another daemon on the same DB).
            seeded = false;
            if last_prune.elapsed() >= PRUNE_EVERY {
                last_prune = tokio::time::Instant::now();
                auth.prune(Now::current());
            }
            sync_spool(&auth, SpoolSync::Always, &mut spool_failing).await;
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                // Last chance to persist what is queued: the DB, else the spool.
                let flushed = db.status().up
                    && matches!(
                        tokio::time::timeout(Duration::from_secs(2), flush(db.pool(), &auth)).await,
                        Ok(Ok(()))
                    );
                let spool = if flushed { SpoolSync::Tidy } else { SpoolSync::Always };
                sync_spool(&auth, spool, &mut spool_failing).await;
                return Ok(());
            }
            _ = status.changed() => {}
            _ = tokio::time::sleep(FLUSH_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuditKind, SessionRecord};

    fn record(jti: &str, created: DateTime<Utc>) -> SessionRecord {
        SessionRecord::new(
            jti.to_owned(),
            "192.168.1.2".parse().unwrap(),
            Some("curl/8"),
            created,
            created + chrono::Duration::hours(24),
        )
    }

    #[sqlx::test]
    async fn session_writes_round_trip_and_revocations_stick(pool: PgPool) {
        // Whole seconds: Postgres keeps microseconds, chrono nanoseconds.
        let t0 = DateTime::from_timestamp(Utc::now().timestamp() - 600, 0).unwrap();
        let (a, b, c) = (
            "00000000000000000000000000000001",
            "00000000000000000000000000000002",
            "00000000000000000000000000000003",
        );
        let mut touched = record(a, t0);
        touched.last_activity = t0 + chrono::Duration::minutes(5);
        apply_session_writes(
            &pool,
            &[
                SessionWrite::Upsert(record(a, t0)),
                SessionWrite::Upsert(record(b, t0)),
                SessionWrite::Upsert(record(c, t0)),
                SessionWrite::Upsert(touched.clone()),
                SessionWrite::Revoke {
                    jti: b.into(),
                    at: t0 + chrono::Duration::minutes(1),
                },
                SessionWrite::Revoke {
                    jti: "ffffffffffffffffffffffffffffffff".into(),
                    at: t0,
                },
            ],
        )
        .await
        .unwrap();
        // An older upsert without the revocation does not un-revoke.
        apply_session_writes(&pool, &[SessionWrite::Upsert(record(b, t0))])
            .await
            .unwrap();
        apply_session_writes(
            &pool,
            &[SessionWrite::RevokeAll {
                at: t0 + chrono::Duration::minutes(2),
                except: Some(a.into()),
            }],
        )
        .await
        .unwrap();

        let mut rows = load_sessions(&pool, Utc::now()).await.unwrap();
        rows.sort_by(|x, y| x.jti.cmp(&y.jti));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0], touched);
        assert_eq!(rows[1].revoked_at, Some(t0 + chrono::Duration::minutes(1)));
        assert_eq!(rows[2].revoked_at, Some(t0 + chrono::Duration::minutes(2)));
        // Nothing expired yet; with a later horizon all three go.
        assert_eq!(prune_sessions(&pool, Utc::now()).await.unwrap(), 0);
        assert_eq!(
            prune_sessions(&pool, Utc::now() + chrono::Duration::days(2))
                .await
                .unwrap(),
            3
        );
    }

    #[sqlx::test]
    async fn audit_events_are_appended_and_feed_known_good_sources(pool: PgPool) {
        let now = Utc::now();
        let ev = |kind, ip: &str| AuditEvent {
            kind,
            ip: Some(ip.parse().unwrap()),
            detail: "x".into(),
            at: now - chrono::Duration::minutes(1),
        };
        insert_audit(
            &pool,
            &[
                ev(AuditKind::LoginFailure, "198.51.100.1"),
                ev(AuditKind::LoginSuccess, "192.168.1.2"),
                ev(AuditKind::Logout, "192.168.1.2"),
            ],
        )
        .await
        .unwrap();
        let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(actions, ["login_failure", "login_success", "logout"]);
        let good = known_good_sources(&pool, now).await.unwrap();
        assert_eq!(good.len(), 1);
        assert_eq!(good[0].0, "192.168.1.2".parse::<IpAddr>().unwrap());
    }
}
