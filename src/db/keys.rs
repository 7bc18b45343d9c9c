//! SQL for API keys (`api_keys`, 0008) and the `api-keys` worker that keeps
//! the daemon's [`KeyStore`] in step with the table. Creating and revoking
//! write the key row and its audit row in one transaction; the daemon and
//! `arasuld admin key` share these functions.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Db;
use crate::auth::ADMIN_USERNAME;
use crate::auth::keys::{self, ApiKey, KeyStore, MAX_LIVE_KEYS, NewKey, Scope};
use crate::tasks::{WorkerCtx, WorkerKind, WorkerName, Workers};

type Row = (
    i64,
    String,
    Vec<u8>,
    String,
    Vec<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

fn from_row(r: Row) -> Option<([u8; 32], ApiKey)> {
    let (id, name, hash, hint, scopes, created_at, expires_at, last_used_at) = r;
    let hash: [u8; 32] = hash.try_into().ok()?;
    Some((
        hash,
        ApiKey {
            id,
            name,
            // A scope this version does not know is left out, never widened.
            scopes: scopes.iter().filter_map(|s| Scope::parse(s)).collect(),
            hint,
            created_at,
            expires_at,
            last_used_at,
        },
    ))
}

/// Why a key could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("{MAX_LIVE_KEYS} keys exist already; revoke one first")]
    TooMany,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

async fn audit(
    tx: &mut sqlx::PgConnection,
    action: &str,
    ip: Option<IpAddr>,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_log (actor, action, ip, detail) VALUES ($1, $2, $3, $4)")
        .bind(ADMIN_USERNAME)
        .bind(action)
        .bind(ip.map(|ip| ip.to_string()))
        .bind(detail)
        .execute(tx)
        .await?;
    Ok(())
}

/// Stores a new key (its hash) and the audit row; answers the key to show
/// once. `via` says who asked (`api`, `cli`).
pub async fn create(
    pool: &PgPool,
    name: &str,
    scopes: &[Scope],
    expires_at: Option<DateTime<Utc>>,
    ip: Option<IpAddr>,
    via: &str,
) -> Result<(NewKey, ApiKey), CreateError> {
    let name = name.trim();
    keys::validate(name, scopes).map_err(CreateError::Invalid)?;
    if expires_at.is_some_and(|e| e <= Utc::now()) {
        return Err(CreateError::Invalid(
            "expires_at must be in the future".into(),
        ));
    }
    let mut scopes = scopes.to_vec();
    scopes.sort();
    scopes.dedup();
    let new = keys::generate();
    let mut tx = pool.begin().await?;
    // Serialises creations, so the cap holds under concurrent requests.
    sqlx::query("LOCK TABLE api_keys IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let (live,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE revoked_at IS NULL")
        .fetch_one(&mut *tx)
        .await?;
    if live as usize >= MAX_LIVE_KEYS {
        return Err(CreateError::TooMany);
    }
    let names: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let row: Row = sqlx::query_as(
        "INSERT INTO api_keys (name, key_hash, hint, scopes, expires_at)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING id, name, key_hash, hint, scopes, created_at, expires_at, last_used_at",
    )
    .bind(name)
    .bind(&new.hash[..])
    .bind(&new.hint)
    .bind(&names)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    let (_, key) = from_row(row).expect("the row was written with a 32-byte hash");
    audit(
        &mut tx,
        "api_key_created",
        ip,
        serde_json::json!({"id": key.id, "name": key.name, "scopes": names,
            "expires_at": expires_at, "via": via}),
    )
    .await?;
    tx.commit().await?;
    Ok((new, key))
}

/// Revokes a live key; false when there is none with that id.
pub async fn revoke(pool: &PgPool, id: i64, ip: Option<IpAddr>, via: &str) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let name: Option<(String,)> = sqlx::query_as(
        "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING name",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((name,)) = name else {
        return Ok(false);
    };
    audit(
        &mut tx,
        "api_key_revoked",
        ip,
        serde_json::json!({"id": id, "name": name, "via": via}),
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The live keys with their hashes (expired ones included: they answer
/// "expired" rather than "unknown" in the log).
pub async fn load_live(pool: &PgPool) -> sqlx::Result<Vec<([u8; 32], ApiKey)>> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, name, key_hash, hint, scopes, created_at, expires_at, last_used_at
         FROM api_keys WHERE revoked_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().filter_map(from_row).collect())
}

/// Saves when keys were last used (never moving a time back).
pub async fn save_used(pool: &PgPool, used: &[(i64, DateTime<Utc>)]) -> sqlx::Result<()> {
    if used.is_empty() {
        return Ok(());
    }
    let (ids, ats): (Vec<i64>, Vec<DateTime<Utc>>) = used.iter().copied().unzip();
    sqlx::query(
        "UPDATE api_keys k SET last_used_at = GREATEST(k.last_used_at, u.at)
         FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, at) WHERE k.id = u.id",
    )
    .bind(&ids)
    .bind(&ats)
    .execute(pool)
    .await?;
    Ok(())
}

/// One round of the worker: save the uses, then reload the keys.
async fn sync(pool: &PgPool, store: &KeyStore) -> sqlx::Result<()> {
    let used = store.drain_used();
    if let Err(e) = save_used(pool, &used).await {
        store.restore_used(used);
        return Err(e);
    }
    store.replace(load_live(pool).await?);
    Ok(())
}

/// Spawns the `api-keys` worker with a store of its own, and returns the
/// store the API checks keys against.
pub fn spawn(workers: &Workers, db: Db) -> Arc<KeyStore> {
    let store = Arc::new(KeyStore::default());
    let keys = store.clone();
    workers.spawn(WorkerName::ApiKeys, WorkerKind::Auxiliary, move |ctx| {
        run_worker(ctx, db.clone(), keys.clone())
    });
    store
}

/// The `api-keys` worker: every [`keys::REFRESH_EVERY`] while the database
/// is up (and at once when it comes up), saves the keys' last use and
/// reloads them, so keys made or revoked by `arasuld admin key` take effect.
/// While the database is down the keys loaded last stay in force.
async fn run_worker(ctx: WorkerCtx, db: Db, store: Arc<KeyStore>) -> anyhow::Result<()> {
    let mut status = db.subscribe();
    let mut failing = false;
    loop {
        ctx.beat();
        let s = status.borrow_and_update().clone();
        if s.up && s.migrated {
            match sync(db.pool(), &store).await {
                Ok(()) if failing => {
                    tracing::info!("API keys are read from the database again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "API keys not refreshed; the last loaded stay in force");
                    }
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => {
                if db.status().up {
                    let used = store.drain_used();
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        save_used(db.pool(), &used),
                    )
                    .await;
                }
                return Ok(());
            }
            _ = status.changed() => {}
            _ = tokio::time::sleep(keys::REFRESH_EVERY) => {}
        }
    }
}
