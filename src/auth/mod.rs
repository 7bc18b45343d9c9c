//! Admin authentication: password hashing, tokens, sessions, lockout and the
//! secrets they live on. Knows no HTTP (no axum types) and no SQL: what must
//! be persisted leaves as plain data (`drain_session_writes`, `drain_audit`)
//! and everything needed to log in works from memory and the secrets dir
//! while the DB is down (`durable.rs`: what outlives a restart meanwhile).

mod durable;
pub mod jwt_crypto;
pub mod keys;
pub mod lockout;
pub mod password;
pub mod revocation;
pub mod secrets;
pub mod session;
pub mod spool;
pub mod token;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

pub use durable::SpoolSync;
pub use lockout::{Attempt, FailureOutcome, LockScope, Locked, LockoutConfig, LockoutTracker};
pub use password::{
    DEFAULT_HASH_CONCURRENCY, HashParams, Hasher, PasswordPolicy, PasswordRequirements, PolicyCode,
    PolicyViolation,
};
pub use revocation::RevocationMark;
pub use secrets::{Secret, SecretsDir};
pub use session::{SessionRecord, SessionStore, SessionWrite};
pub use token::{Claims, TokenCodec, TokenError};

/// The only account.
pub const ADMIN_USERNAME: &str = "admin";
/// Longer passwords are refused without hashing (the policy caps at 128 chars).
const MAX_PASSWORD_BYTES: usize = 4096;
/// Length of the generated initial password.
const INITIAL_PASSWORD_LEN: usize = 24;

/// The two clocks auth needs: wall time for tokens and session rows,
/// monotonic time for throttling (immune to the clock being set, which
/// happens on boards without an RTC). Tests build it by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub wall: DateTime<Utc>,
    pub mono: tokio::time::Instant,
}

impl Now {
    pub fn current() -> Self {
        Self {
            wall: Utc::now(),
            mono: tokio::time::Instant::now(),
        }
    }

    /// Both clocks moved forward by `d`.
    pub fn after(self, d: Duration) -> Self {
        Self {
            wall: self.wall + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX),
            mono: self.mono + d,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub secrets_dir: PathBuf,
    /// Token and session lifetime.
    pub token_ttl: Duration,
    /// Concurrent argon2 runs (19 MiB each with the default parameters).
    pub hash_concurrency: usize,
    pub hash_params: HashParams,
    pub policy: PasswordPolicy,
    pub lockout: LockoutConfig,
    pub max_sessions: usize,
    /// Audit events kept while nobody drains them; the oldest are dropped.
    pub max_audit_events: usize,
    /// Where session writes wait on disk for the DB (the daemon's
    /// `state_dir/auth-session-spool.json`); None keeps them in memory only.
    pub session_spool: Option<PathBuf>,
    /// Tells the owner when an address is locked out (`crate::notify`).
    pub notify: crate::notify::Notifier,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            secrets_dir: PathBuf::from("/etc/arasul/secrets"),
            token_ttl: Duration::from_secs(24 * 3600),
            hash_concurrency: DEFAULT_HASH_CONCURRENCY,
            hash_params: HashParams::default(),
            policy: PasswordPolicy::default(),
            lockout: LockoutConfig::default(),
            max_sessions: session::DEFAULT_MAX_SESSIONS,
            max_audit_events: 10_000,
            session_spool: None,
            notify: crate::notify::Notifier::detached(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    LoginSuccess,
    LoginFailure,
    Logout,
    LogoutAll,
    PasswordChange,
    PasswordChangeFailure,
    Lockout,
}

/// One audit record for `audit_log`. Never holds a password or a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEvent {
    pub kind: AuditKind,
    #[schema(value_type = Option<String>)]
    pub ip: Option<IpAddr>,
    pub detail: String,
    pub at: DateTime<Utc>,
}

/// What a logout did: sessions revoked now (in memory), and, if it could
/// not be written to disk, why (a restart before the database takes it
/// would undo it).
#[derive(Debug)]
pub struct Revoked {
    pub count: usize,
    pub unsaved: Option<anyhow::Error>,
}

/// A successful login.
#[derive(Debug, Clone)]
pub struct LoginOk {
    pub token: Secret<String>,
    pub session: SessionRecord,
    pub expires_at: DateTime<Utc>,
    pub must_change_password: bool,
}

/// Why a login failed: for audit and logs only, never for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginFailure {
    UnknownUser,
    WrongPassword,
    Locked(Locked),
}

impl std::fmt::Display for LoginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoginFailure::UnknownUser => f.write_str("unknown user"),
            LoginFailure::WrongPassword => f.write_str("wrong password"),
            LoginFailure::Locked(l) => write!(
                f,
                "locked ({}), retry after {} s",
                match l.scope {
                    LockScope::Source => "source",
                    LockScope::Account => "account cap",
                    LockScope::InFlight => "attempts in flight",
                },
                l.retry_after.as_secs()
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Unknown user and wrong password look the same to the client
    /// (`Display` is the generic message).
    #[error("invalid username or password")]
    InvalidCredentials(LoginFailure),
    /// The source may not try now (`Display` says so and for how long; the
    /// HTTP layer adds 429 and `Retry-After`). Decided before the user name
    /// is looked at, so it is the same for an unknown user.
    #[error(transparent)]
    Locked(Locked),
    #[error("login is temporarily unavailable")]
    Internal(#[source] anyhow::Error),
}

impl LoginError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            LoginError::Locked(l) => Some(l.retry_after),
            _ => None,
        }
    }

    pub fn failure(&self) -> Option<LoginFailure> {
        match self {
            LoginError::InvalidCredentials(f) => Some(*f),
            LoginError::Locked(l) => Some(LoginFailure::Locked(*l)),
            LoginError::Internal(_) => None,
        }
    }
}

/// A token that passed every check, with its (touched) session.
#[derive(Debug, Clone)]
pub struct Verified {
    pub claims: Claims,
    pub session: SessionRecord,
}

#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("current password is incorrect")]
    WrongCurrentPassword,
    #[error(transparent)]
    Locked(Locked),
    #[error("the new password does not meet the requirements")]
    Policy(Vec<PolicyViolation>),
    #[error("password change failed")]
    Internal(#[source] anyhow::Error),
}

/// What a password change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordChanged {
    pub revoked_sessions: usize,
    /// The initial-password file, if this change removed it.
    pub removed_initial_password: Option<PathBuf>,
}

#[derive(Debug)]
struct Credentials {
    hash: String,
    /// Newest first, the current hash included.
    history: Vec<String>,
    must_change: bool,
}

#[derive(Debug, Default)]
struct AuditQueue {
    events: VecDeque<AuditEvent>,
    dropped: u64,
}

/// Everything the HTTP layer needs for admin auth. Share it in an `Arc`.
pub struct Auth {
    secrets: SecretsDir,
    hasher: Hasher,
    policy: PasswordPolicy,
    tokens: TokenCodec,
    max_audit_events: usize,
    credentials: Mutex<Credentials>,
    sessions: Mutex<SessionStore>,
    lockout: Mutex<LockoutTracker>,
    audit: Mutex<AuditQueue>,
    notify: crate::notify::Notifier,
    /// Serialises password changes end to end (they await argon2 and disk).
    change_guard: tokio::sync::Mutex<()>,
    spool: Option<spool::SessionSpool>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("secrets", &self.secrets)
            .field("hasher", &self.hasher)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// History as used by the policy: the current hash first, no duplicates,
/// at most `policy.history` entries.
fn current_first(mut history: Vec<String>, current: &str, policy: &PasswordPolicy) -> Vec<String> {
    history.retain(|h| h != current);
    history.insert(0, current.to_owned());
    history.truncate(policy.history.max(1));
    history
}

impl Auth {
    /// Opens the secrets dir, creating what is missing: `jwt.key`, and on
    /// first start an initial admin password (plaintext file + hash). Returns
    /// the path of the initial-password file when this call created it, so
    /// the caller can tell the operator where to look. Takes up the
    /// revocation mark and the session spool a previous run left (a broken
    /// one is logged, not fatal). Blocking (file I/O, possibly one argon2
    /// hash): call it before serving or in `spawn_blocking`.
    pub fn open(cfg: AuthConfig) -> anyhow::Result<(Auth, Option<PathBuf>)> {
        let secrets = SecretsDir::open(&cfg.secrets_dir)?;
        let (key, origin) = secrets.load_or_create_jwt_key()?;
        if origin == secrets::KeyOrigin::Created {
            tracing::info!(path = %secrets.jwt_key_path().display(), "generated JWT signing key");
        }

        let mut created = None;
        let hash = match secrets.read_admin_hash()? {
            Some(hash) => {
                password::validate_phc(&hash).with_context(|| {
                    format!(
                        "{} is not a usable argon2id PHC string",
                        secrets.admin_hash_path().display()
                    )
                })?;
                hash
            }
            None => {
                // Plaintext first: a crash before the hash is written just
                // means a new password next start, never an unknown one.
                let initial = password::generate_password(INITIAL_PASSWORD_LEN);
                let path = secrets.write_initial_password(&initial)?;
                let hash = password::hash_blocking(&cfg.hash_params, initial.expose())?;
                secrets.write_history(std::slice::from_ref(&hash))?;
                secrets.write_admin_hash(&hash)?;
                tracing::warn!(path = %path.display(), "no admin password set; generated an initial one (change it at first login)");
                created = Some(path);
                hash
            }
        };
        let history = current_first(secrets.read_history()?, &hash, &cfg.policy);
        let must_change = secrets.initial_password_exists();
        let hasher = Hasher::new(cfg.hash_params, cfg.hash_concurrency);
        hasher.prepare_blocking();

        let auth = Auth {
            hasher,
            policy: cfg.policy.clone(),
            tokens: TokenCodec::new(&key, cfg.token_ttl),
            max_audit_events: cfg.max_audit_events.max(1),
            credentials: Mutex::new(Credentials {
                hash,
                history,
                must_change,
            }),
            sessions: Mutex::new(SessionStore::new(cfg.max_sessions)),
            lockout: Mutex::new(LockoutTracker::new(cfg.lockout.clone())),
            audit: Mutex::new(AuditQueue::default()),
            notify: cfg.notify.clone(),
            change_guard: tokio::sync::Mutex::new(()),
            spool: cfg.session_spool.map(spool::SessionSpool::new),
            secrets,
        };
        auth.restore_durable_state(Utc::now());
        Ok((auth, created))
    }

    pub fn secrets(&self) -> &SecretsDir {
        &self.secrets
    }

    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// True while the generated initial password is still the admin password.
    pub fn must_change_password(&self) -> bool {
        lock(&self.credentials).must_change
    }

    pub fn password_requirements(&self) -> PasswordRequirements {
        self.policy.describe()
    }

    pub async fn login(
        &self,
        username: &str,
        password: &str,
        ip: IpAddr,
        user_agent: Option<&str>,
        now: Now,
    ) -> Result<LoginOk, LoginError> {
        let attempt = match Attempt::begin(&self.lockout, ip, now.mono) {
            Ok(attempt) => attempt,
            Err(locked) => {
                let failure = LoginFailure::Locked(locked);
                self.audit(AuditKind::LoginFailure, Some(ip), failure.to_string(), now);
                return Err(LoginError::Locked(locked));
            }
        };
        let is_admin = username == ADMIN_USERNAME;
        let ok = if password.len() > MAX_PASSWORD_BYTES {
            false
        } else {
            let stored = is_admin.then(|| lock(&self.credentials).hash.clone());
            match self
                .hasher
                .verify(Secret::new(password.to_owned()), stored)
                .await
            {
                Ok(ok) => ok,
                Err(e) => return Err(LoginError::Internal(e)),
            }
        };

        if !ok {
            let outcome = if is_admin {
                attempt.failure(now.mono)
            } else {
                attempt.source_failure(now.mono)
            };
            let failure = if is_admin {
                LoginFailure::WrongPassword
            } else {
                LoginFailure::UnknownUser
            };
            self.audit(AuditKind::LoginFailure, Some(ip), failure.to_string(), now);
            self.audit_lockout(ip, outcome, now);
            return Err(LoginError::InvalidCredentials(failure));
        }

        attempt.success(now.mono);
        let (token, claims) = self.tokens.issue(now.wall).map_err(LoginError::Internal)?;
        let expires_at = claims.expires_at();
        let record = {
            let mut sessions = lock(&self.sessions);
            let created_at = sessions.issue_time(now.wall);
            let record =
                SessionRecord::new(claims.jti.clone(), ip, user_agent, created_at, expires_at);
            sessions.insert(record.clone(), now.wall);
            record
        };
        let must_change_password = self.must_change_password();
        self.audit(
            AuditKind::LoginSuccess,
            Some(ip),
            format!("session {}", claims.jti),
            now,
        );
        Ok(LoginOk {
            token,
            session: record,
            expires_at,
            must_change_password,
        })
    }

    /// Checks the token (signature, algorithm, every claim) and then its
    /// session (known, not revoked, not expired), and records the activity.
    pub fn verify(&self, token: &str, now: Now) -> Result<Verified, TokenError> {
        let claims = self.tokens.verify(token, now.wall)?;
        let mut sessions = lock(&self.sessions);
        sessions.check(&claims.jti, now.wall)?;
        let session = sessions
            .touch(&claims.jti, now.wall)
            .ok_or(TokenError::Revoked)?;
        Ok(Verified { claims, session })
    }

    /// Revokes one session (`count` 1 if it was live). The revocation is in
    /// the spool before this returns (blocking: one small fsync'd write), so a
    /// restart while the DB is down does not bring the session back.
    pub fn logout(&self, jti: &str, ip: Option<IpAddr>, now: Now) -> Revoked {
        let revoked = lock(&self.sessions).revoke(jti, now.wall);
        let unsaved = self.sync_spool(SpoolSync::Always).err();
        if let Some(e) = &unsaved {
            tracing::error!(error = %format!("{e:#}"), "logout not spooled: until the database takes it, a restart would bring the session back");
        }
        self.audit(AuditKind::Logout, ip, format!("session {jti}"), now);
        Revoked {
            count: usize::from(revoked),
            unsaved,
        }
    }

    /// Revokes every session, the caller's included; says how many were
    /// live. The revocation mark is on disk before this returns (blocking:
    /// one small fsync'd write), or `unsaved` says why not.
    pub fn logout_all(&self, ip: Option<IpAddr>, now: Now) -> Revoked {
        let n = lock(&self.sessions).revoke_all(now.wall, None);
        let unsaved = self.persist_mark().err();
        if let Some(e) = &unsaved {
            tracing::error!(error = %format!("{e:#}"), "logout-all not saved: a restart while the database is down would bring the sessions back");
        }
        self.audit(
            AuditKind::LogoutAll,
            ip,
            format!("{n} sessions revoked"),
            now,
        );
        Revoked { count: n, unsaved }
    }

    /// Changes the admin password after checking the current one (failures
    /// count towards the caller's lockout). Applies the policy and history,
    /// rewrites `admin.hash` and `password-history`, removes the initial
    /// password file and revokes every session but `keep_session`.
    pub async fn change_password(
        &self,
        current: &str,
        new: &str,
        ip: IpAddr,
        keep_session: Option<&str>,
        now: Now,
    ) -> Result<PasswordChanged, ChangePasswordError> {
        let _guard = self.change_guard.lock().await;
        let attempt = match Attempt::begin(&self.lockout, ip, now.mono) {
            Ok(attempt) => attempt,
            Err(locked) => {
                self.audit(
                    AuditKind::PasswordChangeFailure,
                    Some(ip),
                    LoginFailure::Locked(locked).to_string(),
                    now,
                );
                return Err(ChangePasswordError::Locked(locked));
            }
        };
        let stored = lock(&self.credentials).hash.clone();
        let ok = if current.len() > MAX_PASSWORD_BYTES {
            false
        } else {
            match self
                .hasher
                .verify(Secret::new(current.to_owned()), Some(stored))
                .await
            {
                Ok(ok) => ok,
                Err(e) => return Err(ChangePasswordError::Internal(e)),
            }
        };
        if !ok {
            let outcome = attempt.failure(now.mono);
            self.audit(
                AuditKind::PasswordChangeFailure,
                Some(ip),
                "wrong current password".to_owned(),
                now,
            );
            self.audit_lockout(ip, outcome, now);
            return Err(ChangePasswordError::WrongCurrentPassword);
        }
        attempt.success(now.mono);
        self.apply_new_password(new, Some(ip), keep_session, now)
            .await
    }

    /// Sets the admin password without knowing the current one, for
    /// `arasuld admin set-password` (root on the box). Same policy and
    /// history rules; revokes every session.
    pub async fn set_password(
        &self,
        new: &str,
        now: Now,
    ) -> Result<PasswordChanged, ChangePasswordError> {
        let _guard = self.change_guard.lock().await;
        self.apply_new_password(new, None, None, now).await
    }

    async fn apply_new_password(
        &self,
        new: &str,
        ip: Option<IpAddr>,
        keep_session: Option<&str>,
        now: Now,
    ) -> Result<PasswordChanged, ChangePasswordError> {
        let history = lock(&self.credentials).history.clone();
        let policy = self.policy.clone();
        let candidate = Secret::new(new.to_owned());
        let previous = history.clone();
        let checked = self
            .hasher
            .run(move |_| policy.check(candidate.expose(), &previous))
            .await
            .map_err(ChangePasswordError::Internal)?;
        if let Err(violations) = checked {
            let codes: Vec<String> = violations
                .iter()
                .map(|v| {
                    serde_json::to_value(v.code).map_or_else(|_| "?".into(), |c| c.to_string())
                })
                .collect();
            self.audit(
                AuditKind::PasswordChangeFailure,
                ip,
                format!("policy: {}", codes.join(", ")),
                now,
            );
            return Err(ChangePasswordError::Policy(violations));
        }

        let new_hash = self
            .hasher
            .hash(Secret::new(new.to_owned()))
            .await
            .map_err(ChangePasswordError::Internal)?;
        let mut new_history = vec![new_hash.clone()];
        new_history.extend(history);
        new_history.truncate(self.policy.history.max(1));

        let secrets = self.secrets.clone();
        let (hash_for_disk, history_for_disk) = (new_hash.clone(), new_history.clone());
        // History first: if we crash before admin.hash is replaced, the old
        // password still works and the history merely knows one more hash.
        let removed = tokio::task::spawn_blocking(move || -> anyhow::Result<Option<PathBuf>> {
            secrets.write_history(&history_for_disk)?;
            secrets.write_admin_hash(&hash_for_disk)?;
            secrets.remove_initial_password()
        })
        .await
        .context("password write task failed")
        .and_then(|r| r)
        .map_err(ChangePasswordError::Internal)?;

        {
            let mut creds = lock(&self.credentials);
            creds.hash = new_hash;
            creds.history = new_history;
            creds.must_change = false;
        }
        let (revoked, mark) = {
            let mut sessions = lock(&self.sessions);
            // A caller revoked meanwhile (a logout-all while this ran) is not kept.
            let keep = keep_session.filter(|jti| sessions.check(jti, now.wall).is_ok());
            let n = sessions.revoke_all(now.wall, keep);
            (n, sessions.mark().clone())
        };
        let secrets = self.secrets.clone();
        let saved = tokio::task::spawn_blocking(move || secrets.add_revocation_mark(&mark))
            .await
            .context("revocation mark task failed")
            .and_then(|r| r);
        if let Err(e) = saved {
            tracing::error!(error = %format!("{e:#}"), "password changed but the revocation was not saved: a restart while the database is down would bring the old sessions back");
        }
        self.audit(
            AuditKind::PasswordChange,
            ip,
            format!("password changed; {revoked} other sessions revoked"),
            now,
        );
        Ok(PasswordChanged {
            revoked_sessions: revoked,
            removed_initial_password: removed,
        })
    }

    /// Re-reads `admin.hash`, the history, the initial-password flag and
    /// the revocation mark, e.g. on SIGHUP after `arasuld admin
    /// set-password` ran in another process. If the hash changed, every
    /// session is revoked. Returns whether it changed. Blocking file reads
    /// (small).
    pub fn reload_credentials(&self, now: Now) -> anyhow::Result<bool> {
        self.take_up_mark(now.wall);
        let path = self.secrets.admin_hash_path();
        let hash = self
            .secrets
            .read_admin_hash()?
            .with_context(|| format!("{} is missing", path.display()))?;
        password::validate_phc(&hash)
            .with_context(|| format!("{} is not a usable argon2id PHC string", path.display()))?;
        let history = current_first(self.secrets.read_history()?, &hash, &self.policy);
        let must_change = self.secrets.initial_password_exists();
        let changed = {
            let mut creds = lock(&self.credentials);
            let changed = creds.hash != hash;
            *creds = Credentials {
                hash,
                history,
                must_change,
            };
            changed
        };
        if changed {
            let n = lock(&self.sessions).revoke_all(now.wall, None);
            if let Err(e) = self.persist_mark() {
                tracing::error!(error = %format!("{e:#}"), "revocation not saved");
            }
            self.audit(
                AuditKind::PasswordChange,
                None,
                format!("admin password changed outside the daemon; {n} sessions revoked"),
                now,
            );
        }
        Ok(changed)
    }

    /// Live sessions, newest first.
    pub fn sessions(&self, now: Now) -> Vec<SessionRecord> {
        lock(&self.sessions).list(now.wall)
    }

    /// Seeds sessions from the DB (at start, or when it comes back).
    pub fn load_sessions(&self, rows: impl IntoIterator<Item = SessionRecord>, now: Now) {
        lock(&self.sessions).load(rows, now.wall);
    }

    /// Session changes to persist, in order. Confirm them with
    /// [`Auth::session_writes_persisted`] or hand them back with
    /// [`Auth::restore_session_writes`]; the spool keeps them until then.
    pub fn drain_session_writes(&self) -> Vec<SessionWrite> {
        lock(&self.sessions).drain_pending()
    }

    pub fn session_writes_persisted(&self) {
        lock(&self.sessions).persisted();
    }

    pub fn restore_session_writes(&self, writes: Vec<SessionWrite>) {
        lock(&self.sessions).restore_pending(writes);
    }

    /// Audit events not yet persisted, oldest first.
    pub fn drain_audit(&self) -> Vec<AuditEvent> {
        lock(&self.audit).events.drain(..).collect()
    }

    /// Puts back events the DB could not take, ahead of newer ones (still
    /// bounded: the oldest are dropped beyond `max_audit_events`).
    pub fn restore_audit(&self, events: Vec<AuditEvent>) {
        let mut q = lock(&self.audit);
        let newer: Vec<AuditEvent> = q.events.drain(..).collect();
        q.events.extend(events);
        q.events.extend(newer);
        while q.events.len() > self.max_audit_events {
            q.events.pop_front();
            q.dropped += 1;
        }
    }

    /// Audit events dropped because the queue was full (the DB was away too long).
    pub fn audit_dropped(&self) -> u64 {
        lock(&self.audit).dropped
    }

    /// Trusts `ip` for the account-wide lockout as if it had logged in at
    /// `last_success` (seeded from the DB's successful logins).
    pub fn seed_known_good(&self, ip: IpAddr, last_success: DateTime<Utc>, now: Now) {
        let Ok(age) = (now.wall - last_success).to_std() else {
            return;
        };
        if let Some(at) = now.mono.checked_sub(age) {
            lock(&self.lockout).mark_known_good(ip, at);
        }
    }

    /// Periodic housekeeping: expired sessions, idle lockout entries.
    pub fn prune(&self, now: Now) {
        lock(&self.sessions).prune(now.wall);
        lock(&self.lockout).prune(now.mono);
    }

    fn audit_lockout(&self, ip: IpAddr, outcome: FailureOutcome, now: Now) {
        if let Some(d) = outcome.source_locked {
            self.notify.alert(crate::notify::Alert::new(
                crate::notify::Severity::Warning,
                "admin_locked_out",
                format!("admin_locked_out:{ip}"),
                format!("Admin login locked for {ip}"),
                format!(
                    "Repeated wrong passwords from {ip}: that address may not log in for {} s.",
                    d.as_secs()
                ),
            ));
            self.audit(
                AuditKind::Lockout,
                Some(ip),
                format!(
                    "source locked for {} s after repeated failures",
                    d.as_secs()
                ),
                now,
            );
        }
        if outcome.account_capped {
            self.audit(
                AuditKind::Lockout,
                Some(ip),
                "account-wide failure cap reached; only known-good or clean sources may try"
                    .to_owned(),
                now,
            );
        }
    }

    fn audit(&self, kind: AuditKind, ip: Option<IpAddr>, detail: String, now: Now) {
        tracing::info!(target: "arasuld::audit", kind = ?kind, ip = ?ip, %detail);
        let mut q = lock(&self.audit);
        if q.events.len() >= self.max_audit_events {
            q.events.pop_front();
            q.dropped += 1;
        }
        q.events.push_back(AuditEvent {
            kind,
            ip,
            detail,
            at: now.wall,
        });
    }
}

#[cfg(test)]
mod tests;
