//! API keys for integrators and apps: `ak_` + 32 random bytes (base64url),
//! shown once and stored only as their SHA-256 (a key is a random secret, not
//! a password: a fast hash is enough and lets a key be found by its hash).
//! PostgreSQL (`api_keys`) is where keys live; the daemon checks them against
//! this in-memory copy, which the `api-keys` worker refreshes, so a check
//! never waits for the database and a key made with `arasuld admin key
//! create` is accepted within [`REFRESH_EVERY`]. Knows no HTTP and no SQL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Every key starts with this.
pub const PREFIX: &str = "ak_";
/// Random bytes after the prefix.
pub const SECRET_BYTES: usize = 32;
/// How often the worker reloads the keys and saves their last use.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// Live (not revoked) keys at most; creating another is refused.
pub const MAX_LIVE_KEYS: usize = 100;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 64;
/// Characters of the key shown in lists (`ak_` and the first few of the
/// secret), so the owner can tell keys apart without seeing one.
const HINT_LEN: usize = PREFIX.len() + 6;

/// What a key may be used for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// `/ollama/` (the LLM runtime's Ollama and OpenAI-compatible API) and `POST /api/llm/chat`.
    Llm,
    /// `POST /api/embeddings`.
    Embeddings,
    /// `/metrics` and the status routes when `http.require_auth_for_status` is on.
    Metrics,
    /// The whole admin API, as an admin login (but no session routes), and
    /// the model management routes of `/ollama/` (pull, delete, …).
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Llm, Scope::Embeddings, Scope::Metrics, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Llm => "llm",
            Scope::Embeddings => "embeddings",
            Scope::Metrics => "metrics",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One key as listed: never the key itself.
#[derive(Clone, Debug, PartialEq, Serialize, ToSchema)]
pub struct ApiKey {
    pub id: i64,
    pub name: String,
    pub scopes: Vec<Scope>,
    /// The key's first characters (`ak_` and six more).
    pub hint: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }

    pub fn expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// A freshly made key: the secret (shown once) and what is stored.
pub struct NewKey {
    pub secret: String,
    pub hash: [u8; 32],
    pub hint: String,
}

/// Makes a key from the OS's random source.
pub fn generate() -> NewKey {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::fill(&mut bytes);
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    NewKey {
        hash: hash(&secret),
        hint: secret[..HINT_LEN].to_owned(),
        secret,
    }
}

pub fn hash(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// Whether a bearer token is meant as an API key (rather than a login's JWT).
pub fn is_key(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Checks a name and a scope list as the API and the CLI take them.
pub fn validate(name: &str, scopes: &[Scope]) -> Result<(), String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(format!("name must be 1 to {MAX_NAME_LEN} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("name must not contain control characters".into());
    }
    if scopes.is_empty() {
        return Err("at least one scope is needed (llm, embeddings, metrics, admin)".into());
    }
    Ok(())
}

/// Why a key was not accepted (the caller sees only 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("unknown or revoked API key")]
    Unknown,
    #[error("the API key has expired")]
    Expired,
}

/// The keys the daemon accepts, by hash, and when each was last used.
#[derive(Debug, Default)]
pub struct KeyStore {
    live: RwLock<HashMap<[u8; 32], Arc<ApiKey>>>,
    /// Revoked here but perhaps still in the last load: kept out of the
    /// next refresh too (the row is revoked before this is set).
    revoked: Mutex<HashSet<i64>>,
    used: Mutex<HashMap<i64, DateTime<Utc>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl KeyStore {
    /// The key for a bearer token, noting its use.
    pub fn check(&self, token: &str, now: DateTime<Utc>) -> Result<Arc<ApiKey>, KeyRefusal> {
        let key = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash(token))
            .cloned()
            .ok_or(KeyRefusal::Unknown)?;
        if key.expired(now) {
            return Err(KeyRefusal::Expired);
        }
        lock(&self.used).insert(key.id, now);
        Ok(key)
    }

    /// Replaces the accepted keys with a fresh load of the live rows.
    pub fn replace(&self, rows: Vec<([u8; 32], ApiKey)>) {
        let revoked = lock(&self.revoked);
        let used = lock(&self.used);
        let map = rows
            .into_iter()
            .filter(|(_, k)| !revoked.contains(&k.id))
            .map(|(h, mut k)| {
                // A use not saved yet is newer than what the row says.
                if let Some(at) = used.get(&k.id) {
                    k.last_used_at = k.last_used_at.max(Some(*at));
                }
                (h, Arc::new(k))
            })
            .collect();
        *self.live.write().unwrap_or_else(PoisonError::into_inner) = map;
    }

    /// A key just stored: accepted at once.
    pub fn insert(&self, hash: [u8; 32], key: ApiKey) {
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, Arc::new(key));
    }

    /// A key just revoked in the database: refused at once.
    pub fn revoke(&self, id: i64) {
        lock(&self.revoked).insert(id);
        self.live
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, k| k.id != id);
    }

    /// The live keys, newest first, with their last use as known here.
    pub fn list(&self) -> Vec<ApiKey> {
        let used = lock(&self.used);
        let mut v: Vec<ApiKey> = self
            .live
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|k| {
                let mut k = ApiKey::clone(k);
                if let Some(at) = used.get(&k.id) {
                    k.last_used_at = k.last_used_at.max(Some(*at));
                }
                k
            })
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        v
    }

    /// Uses not yet saved; hand them back with [`KeyStore::restore_used`] if
    /// saving fails.
    pub fn drain_used(&self) -> Vec<(i64, DateTime<Utc>)> {
        lock(&self.used).drain().collect()
    }

    pub fn restore_used(&self, used: Vec<(i64, DateTime<Utc>)>) {
        let mut map = lock(&self.used);
        for (id, at) in used {
            let e = map.entry(id).or_insert(at);
            *e = (*e).max(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, scopes: &[Scope], expires_at: Option<DateTime<Utc>>) -> ApiKey {
        ApiKey {
            id,
            name: format!("k{id}"),
            scopes: scopes.to_vec(),
            hint: "ak_xxxxxx".into(),
            created_at: Utc::now(),
            expires_at,
            last_used_at: None,
        }
    }

    #[test]
    fn a_generated_key_has_the_prefix_and_43_characters_of_secret_and_is_found_by_its_hash() {
        let k = generate();
        assert!(
            k.secret.starts_with("ak_") && k.secret.len() == 3 + 43,
            "{}",
            k.secret
        );
        assert_eq!(k.hash, hash(&k.secret));
        assert_eq!(k.hint, k.secret[..9]);
        assert_ne!(generate().secret, k.secret);
        let store = KeyStore::default();
        store.insert(k.hash, key(1, &[Scope::Llm], None));
        let now = Utc::now();
        assert_eq!(store.check(&k.secret, now).unwrap().id, 1);
        assert_eq!(store.check("ak_wrong", now), Err(KeyRefusal::Unknown));
        // The use is noted for the worker to save.
        assert_eq!(store.drain_used(), vec![(1, now)]);
    }

    #[test]
    fn an_expired_key_is_refused_and_a_revoked_one_stays_out_of_an_older_load() {
        let (a, b) = (generate(), generate());
        let now = Utc::now();
        let store = KeyStore::default();
        let rows = vec![
            (
                a.hash,
                key(1, &[Scope::Llm], Some(now - chrono::Duration::seconds(1))),
            ),
            (b.hash, key(2, &[Scope::Admin], None)),
        ];
        store.replace(rows.clone());
        assert_eq!(store.check(&a.secret, now), Err(KeyRefusal::Expired));
        assert!(store.check(&b.secret, now).unwrap().allows(Scope::Metrics));
        store.revoke(2);
        assert_eq!(store.check(&b.secret, now), Err(KeyRefusal::Unknown));
        // A refresh that read the rows before the revocation was saved.
        store.replace(rows);
        assert_eq!(store.check(&b.secret, now), Err(KeyRefusal::Unknown));
    }

    #[test]
    fn scopes_and_names_are_checked() {
        let k = key(1, &[Scope::Embeddings], None);
        assert!(k.allows(Scope::Embeddings) && !k.allows(Scope::Llm));
        assert!(validate("n8n", &[Scope::Llm]).is_ok());
        assert!(validate(" ", &[Scope::Llm]).is_err());
        assert!(validate("a\nb", &[Scope::Llm]).is_err());
        assert!(validate(&"x".repeat(65), &[Scope::Llm]).is_err());
        assert!(validate("n8n", &[]).is_err());
        assert_eq!(Scope::parse("metrics"), Some(Scope::Metrics));
        assert_eq!(Scope::parse("root"), None);
    }
}
