//! PostgreSQL: the one pool, the embedded migrations, and the worker that
//! (re)connects in the background. The only module that holds SQL.
//!
//! The pool is created lazily, so the daemon starts and serves while the
//! database is still down; the connector worker brings it up with backoff and
//! runs the migrations the first time it gets through.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::sync::watch;

use crate::config::DatabaseConfig;
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

pub mod auth;
pub mod backup;
pub mod healing;
pub mod keys;
pub mod metrics;
pub mod notifications;
pub mod retention;
pub mod update;
pub mod workflows;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What the rest of the daemon knows about the database right now.
#[derive(Clone, Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DbStatus {
    pub up: bool,
    pub migrated: bool,
    pub last_error: Option<String>,
    /// When `up` last changed.
    pub since: DateTime<Utc>,
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    status: Arc<watch::Sender<DbStatus>>,
}

/// Pool statistics for `GET /api/database/pool`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct PoolStats {
    pub size: u32,
    pub idle: u32,
    pub max_connections: u32,
    #[serde(flatten)]
    pub status: DbStatus,
}

impl Db {
    /// Builds the pool without connecting. Fails only on a malformed URL.
    pub fn new(cfg: &DatabaseConfig) -> anyhow::Result<Db> {
        let opts: PgConnectOptions = cfg
            .url
            .expose()
            .parse()
            .map_err(|e| anyhow::anyhow!("database.url: {e}"))?;
        let opts = opts
            .application_name("arasuld")
            .options([(
                "statement_timeout",
                format!("{}ms", cfg.statement_timeout.as_millis()),
            )])
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(150));
        let pool = PgPoolOptions::new()
            .min_connections(cfg.min_connections)
            .max_connections(cfg.max_connections)
            .acquire_timeout(cfg.connect_timeout)
            .connect_lazy_with(opts);
        let (status, _) = watch::channel(DbStatus {
            up: false,
            migrated: false,
            last_error: None,
            since: Utc::now(),
        });
        Ok(Db {
            pool,
            status: Arc::new(status),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn status(&self) -> DbStatus {
        self.status.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<DbStatus> {
        self.status.subscribe()
    }

    pub fn pool_stats(&self) -> PoolStats {
        PoolStats {
            size: self.pool.size(),
            idle: self.pool.num_idle() as u32,
            max_connections: self.pool.options().get_max_connections(),
            status: self.status(),
        }
    }

    fn mark(&self, up: bool, migrated: bool, error: Option<String>) {
        self.status.send_if_modified(|s| {
            let changed = s.up != up || s.migrated != migrated || s.last_error != error;
            if s.up != up {
                s.since = Utc::now();
            }
            s.up = up;
            s.migrated = migrated;
            s.last_error = error;
            changed
        });
    }

    /// The connector worker: checks the connection, runs the migrations once
    /// it first gets through, and retries with doubling delays while down.
    async fn run_connector(
        &self,
        ctx: WorkerCtx,
        cfg: DatabaseConfig,
        started: StartRecord,
    ) -> anyhow::Result<()> {
        let mut delay = Duration::from_secs(1);
        let mut recorded = false;
        loop {
            ctx.beat();
            let migrated = self.status().migrated;
            let result = async {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                if !migrated {
                    migrate(&self.pool).await?;
                }
                if !recorded {
                    record_start(&self.pool, &started).await?;
                }
                anyhow::Ok(())
            };
            let result = tokio::select! {
                r = result => r,
                _ = ctx.cancel.cancelled() => return Ok(()),
            };
            let wait = match result {
                Ok(()) => {
                    if !self.status().up {
                        tracing::info!("database is up");
                    }
                    if !migrated {
                        tracing::info!("database migrations applied");
                    }
                    recorded = true;
                    self.mark(true, true, None);
                    delay = Duration::from_secs(1);
                    cfg.check_interval
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    if self.status().up || self.status().last_error.as_ref() != Some(&msg) {
                        tracing::warn!(error = %msg, retry_in = ?delay, "database unreachable");
                    }
                    let migrated = self.status().migrated;
                    self.mark(false, migrated, Some(msg));
                    let d = delay;
                    delay = (delay * 2).min(cfg.retry_max);
                    d
                }
            };
            if !ctx.sleep_beating(wait).await {
                return Ok(());
            }
        }
    }

    /// Closes the pool, waiting at most `timeout` for connections in use.
    pub async fn close(&self, timeout: Duration) {
        if tokio::time::timeout(timeout, self.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("database pool did not close in time");
        }
    }
}

/// Spawns the `db-connector` core worker on `workers`: it connects `db`,
/// migrates, reconnects with backoff, and records in `daemon_starts` that
/// this build started at `started_at` once the database first answers.
pub fn spawn_connector(
    workers: &Workers,
    db: &Db,
    cfg: &DatabaseConfig,
    started_at: DateTime<Utc>,
) {
    let (db, cfg) = (db.clone(), cfg.clone());
    let record = StartRecord {
        started_at,
        version: crate::build_info::VERSION,
        build_hash: crate::build_info::BUILD_HASH,
    };
    workers.spawn(WorkerName::DbConnector, WorkerKind::Core, move |ctx| {
        let (db, cfg, record) = (db.clone(), cfg.clone(), record.clone());
        async move { db.run_connector(ctx, cfg, record).await }
    });
}

/// What `daemon_starts` records once the database is reachable.
#[derive(Clone, Debug)]
struct StartRecord {
    started_at: DateTime<Utc>,
    version: &'static str,
    build_hash: &'static str,
}

/// Applies the embedded migrations. sqlx takes a Postgres advisory lock for
/// the duration, so two daemons (or `arasuld migrate` beside a running
/// daemon) never apply the same migration twice.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

async fn record_start(pool: &PgPool, s: &StartRecord) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO daemon_starts (started_at, version, build_hash) VALUES ($1, $2, $3)")
        .bind(s.started_at)
        .bind(s.version)
        .bind(s.build_hash)
        .execute(pool)
        .await?;
    Ok(())
}

/// How many daemon starts the database has recorded (tests and `migrate`).
pub async fn count_starts(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM daemon_starts")
        .fetch_one(pool)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The package depends on `postgresql (>= 14)` (JetPack 6 ships 14):
    /// none of what 15 and later added may appear in a migration.
    #[test]
    fn migrations_use_nothing_newer_than_postgresql_14() {
        const NEWER: [&str; 7] = [
            "merge into",         // 15
            "nulls not distinct", // 15
            "security_invoker",   // 15
            "json_table",         // 17
            "is json",            // 16
            "any_value(",         // 16
            "system_user",        // 16
        ];
        assert!(MIGRATOR.iter().count() >= 7);
        for m in MIGRATOR.iter() {
            let sql = m.sql.as_str().to_ascii_lowercase();
            for word in NEWER {
                assert!(!sql.contains(word), "{}: {word}", m.description);
            }
        }
    }

    #[sqlx::test(migrations = false)]
    async fn concurrent_migrations_apply_each_script_once(pool: PgPool) {
        let (a, b) = tokio::join!(migrate(&pool), migrate(&pool));
        a.unwrap();
        b.unwrap();
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(applied as usize, MIGRATOR.iter().count());
        assert_eq!(count_starts(&pool).await.unwrap(), 0);
    }
}
