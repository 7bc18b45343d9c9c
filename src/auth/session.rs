//! Server-side sessions, one per issued token (keyed by its `jti`).
//! The in-memory store is authoritative: login, logout and token checks work
//! while the DB is down; every change is queued as a [`SessionWrite`] for the
//! DB layer to persist when it can (and for the spool to keep on disk until
//! then). A [`RevocationMark`] refuses what it covers, whatever the rows
//! say. No SQL, no I/O here.

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::revocation::RevocationMark;
use super::token::TokenError;

/// User agents are kept for display only; longer ones are cut.
pub const MAX_USER_AGENT_LEN: usize = 256;

/// One session: what `GET /api/auth/sessions` lists and what the DB stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionRecord {
    /// The token's `jti` (128-bit hex). Not a credential on its own.
    pub jti: String,
    #[schema(value_type = String, example = "192.168.1.20")]
    pub ip: IpAddr,
    pub user_agent: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl SessionRecord {
    pub fn new(
        jti: String,
        ip: IpAddr,
        user_agent: Option<&str>,
        created_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Self {
        Self {
            jti,
            ip,
            user_agent: user_agent.map(truncate_user_agent),
            created_at,
            last_activity: created_at,
            expires_at,
            revoked_at: None,
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        !self.is_revoked() && !self.is_expired(now)
    }
}

fn truncate_user_agent(ua: &str) -> String {
    match ua.char_indices().nth(MAX_USER_AGENT_LEN) {
        Some((cut, _)) => ua[..cut].to_owned(),
        None => ua.to_owned(),
    }
}

/// A change the DB layer must apply, in order. Each is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionWrite {
    /// Insert or replace the whole row (`ON CONFLICT (jti) DO UPDATE`).
    Upsert(SessionRecord),
    /// Mark one session revoked (it may exist only in the DB).
    Revoke { jti: String, at: DateTime<Utc> },
    /// `UPDATE sessions SET revoked_at = at WHERE revoked_at IS NULL AND
    /// created_at <= at AND jti <> except`: logout-all / password change.
    RevokeAll {
        at: DateTime<Utc>,
        except: Option<String>,
    },
}

impl SessionWrite {
    fn upsert_jti(&self) -> Option<&str> {
        match self {
            SessionWrite::Upsert(r) => Some(&r.jti),
            _ => None,
        }
    }
}

/// In-memory session table plus the queue of writes not yet persisted.
#[derive(Debug)]
pub struct SessionStore {
    sessions: HashMap<String, SessionRecord>,
    pending: Vec<SessionWrite>,
    /// Drained for the DB and not yet confirmed: still owed if the write fails.
    in_flight: Vec<SessionWrite>,
    /// Bumped whenever `in_flight` or `pending` changes (tells the spool
    /// whether its file is current).
    generation: u64,
    max_sessions: usize,
    /// Revocations of sessions not in memory, applied if `load` brings them.
    tombstones: HashMap<String, DateTime<Utc>>,
    /// Revoke-alls so far, applied to every check and to sessions `load`
    /// brings later.
    mark: RevocationMark,
}

/// To the microsecond, as Postgres keeps it: an instant compared with the
/// mark must compare the same once its row comes back from the DB.
fn to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// Default bound on live sessions; the least recently used is revoked beyond it.
pub const DEFAULT_MAX_SESSIONS: usize = 100;

impl SessionStore {
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: HashMap::new(),
            pending: Vec::new(),
            in_flight: Vec::new(),
            generation: 0,
            max_sessions: max_sessions.max(1),
            tombstones: HashMap::new(),
            mark: RevocationMark::default(),
        }
    }

    /// What logout-all and password changes have revoked so far.
    pub fn mark(&self) -> &RevocationMark {
        &self.mark
    }

    /// Adds a mark from elsewhere (the secrets dir at start or on reload)
    /// and revokes, in memory, the sessions it covers.
    pub fn apply_mark(&mut self, mark: &RevocationMark) {
        self.mark.merge(mark);
        self.revoke_marked();
    }

    /// The `created_at` of a session issued now: after the mark even when
    /// the wall clock is behind it (a board without RTC that booted with an
    /// old time), so a fresh login is never born revoked.
    pub fn issue_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = to_micros(now);
        match self.mark.latest() {
            Some(latest) if latest >= now => latest + chrono::Duration::microseconds(1),
            _ => now,
        }
    }

    /// Seeds from DB rows. Memory wins for sessions it already knows (it may
    /// hold newer state); revocations made while the DB was away are applied
    /// to the rows that arrive. Expired rows are skipped.
    pub fn load(&mut self, rows: impl IntoIterator<Item = SessionRecord>, now: DateTime<Utc>) {
        for mut row in rows {
            if row.is_expired(now) || self.sessions.contains_key(&row.jti) {
                continue;
            }
            if row.revoked_at.is_none() {
                let tomb = self.tombstones.get(&row.jti).copied();
                row.revoked_at = tomb.or(self.mark.revoked_at(&row.jti, row.created_at));
            }
            self.sessions.insert(row.jti.clone(), row);
        }
        self.enforce_limit(now);
    }

    pub fn insert(&mut self, record: SessionRecord, now: DateTime<Utc>) {
        self.queue(SessionWrite::Upsert(record.clone()));
        self.sessions.insert(record.jti.clone(), record);
        self.enforce_limit(now);
    }

    pub fn get(&self, jti: &str) -> Option<&SessionRecord> {
        self.sessions.get(jti)
    }

    /// Whether the token's session may be used now.
    pub fn check(&self, jti: &str, now: DateTime<Utc>) -> Result<&SessionRecord, TokenError> {
        let s = self.sessions.get(jti).ok_or(TokenError::UnknownSession)?;
        if s.is_revoked() || self.mark.revoked_at(jti, s.created_at).is_some() {
            Err(TokenError::Revoked)
        } else if s.is_expired(now) {
            Err(TokenError::Expired)
        } else {
            Ok(s)
        }
    }

    /// Records activity; returns the updated record, if the session is live.
    pub fn touch(&mut self, jti: &str, now: DateTime<Utc>) -> Option<SessionRecord> {
        let s = self.sessions.get_mut(jti)?;
        if !s.is_active(now) {
            return None;
        }
        if now > s.last_activity {
            s.last_activity = now;
        }
        let record = s.clone();
        self.queue(SessionWrite::Upsert(record.clone()));
        Some(record)
    }

    /// Revokes one session; true if it was live here. Unknown ids are still
    /// revoked in the DB and remembered for `load`.
    pub fn revoke(&mut self, jti: &str, now: DateTime<Utc>) -> bool {
        match self.sessions.get_mut(jti) {
            Some(s) if s.is_revoked() => false,
            Some(s) => {
                s.revoked_at = Some(now);
                let record = s.clone();
                self.queue(SessionWrite::Upsert(record));
                true
            }
            None => {
                self.tombstones.insert(jti.to_owned(), now);
                self.queue(SessionWrite::Revoke {
                    jti: jti.to_owned(),
                    at: now,
                });
                false
            }
        }
    }

    /// Revokes every session except `except` and moves the mark past every
    /// session issued so far; returns how many were live.
    pub fn revoke_all(&mut self, now: DateTime<Utc>, except: Option<&str>) -> usize {
        // Past every session issued so far, even if the clock went back.
        let at = self
            .sessions
            .values()
            .map(|s| s.created_at)
            .chain(self.mark.latest())
            .fold(to_micros(now), DateTime::max);
        let mut n = 0;
        let mut revoked = Vec::new();
        for s in self.sessions.values_mut() {
            if Some(s.jti.as_str()) != except && !s.is_revoked() {
                s.revoked_at = Some(at);
                n += usize::from(!s.is_expired(now));
                revoked.push(s.clone());
            }
        }
        // A queued upsert (maybe the row's first insert) must carry the
        // revocation too; rows without one are covered by the RevokeAll.
        for w in &mut self.pending {
            if let SessionWrite::Upsert(r) = w
                && let Some(updated) = revoked.iter().find(|s| s.jti == r.jti)
            {
                *r = updated.clone();
            }
        }
        self.mark.revoke_through(at, except);
        let except = except.map(str::to_owned);
        self.pending.push(SessionWrite::RevokeAll { at, except });
        self.generation += 1;
        n
    }

    /// Re-applies writes a previous run left in the spool: their sessions
    /// and revocations take effect in memory, and they are queued for the DB
    /// ahead of anything newer.
    pub fn replay(&mut self, writes: Vec<SessionWrite>, now: DateTime<Utc>) {
        for w in &writes {
            match w {
                SessionWrite::Upsert(r) => {
                    let mut r = r.clone();
                    if let Some(known) = self.sessions.get(&r.jti) {
                        r.revoked_at = r.revoked_at.or(known.revoked_at);
                    }
                    self.sessions.insert(r.jti.clone(), r);
                }
                SessionWrite::Revoke { jti, at } => match self.sessions.get_mut(jti) {
                    Some(s) => s.revoked_at = s.revoked_at.or(Some(*at)),
                    None => {
                        self.tombstones.insert(jti.clone(), *at);
                    }
                },
                SessionWrite::RevokeAll { at, except } => {
                    self.mark.revoke_through(*at, except.as_deref());
                }
            }
        }
        self.revoke_marked();
        self.restore_pending(writes);
        self.enforce_limit(now);
    }

    /// Sessions the mark covers are revoked in memory too (lists, `touch`).
    fn revoke_marked(&mut self) {
        for s in self.sessions.values_mut() {
            if s.revoked_at.is_none() {
                s.revoked_at = self.mark.revoked_at(&s.jti, s.created_at);
            }
        }
    }

    /// Live sessions, newest first.
    pub fn list(&self, now: DateTime<Utc>) -> Vec<SessionRecord> {
        let mut v: Vec<_> = self
            .sessions
            .values()
            .filter(|s| s.is_active(now))
            .cloned()
            .collect();
        v.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        v
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forgets sessions (and tombstones) past their expiry; a token for them
    /// is refused by its own `exp` anyway. The DB keeps its rows for its own
    /// retention job. Returns how many sessions were dropped.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.sessions.len();
        self.sessions.retain(|_, s| !s.is_expired(now));
        // A tombstone only matters while a token for it could still be
        // valid; tokens never outlive their TTL, so a day past it is plenty.
        let horizon = now - chrono::Duration::days(31);
        self.tombstones.retain(|_, at| *at > horizon);
        before - self.sessions.len()
    }

    /// Writes not yet persisted, oldest first. The DB layer applies them in
    /// order and then confirms with [`Self::persisted`], or on failure hands
    /// them back with [`Self::restore_pending`]; until then they stay in
    /// [`Self::unpersisted`].
    pub fn drain_pending(&mut self) -> Vec<SessionWrite> {
        let writes = std::mem::take(&mut self.pending);
        self.in_flight.extend(writes.iter().cloned());
        writes
    }

    /// The drained writes reached the DB.
    pub fn persisted(&mut self) {
        if !self.in_flight.is_empty() {
            self.in_flight.clear();
            self.generation += 1;
        }
    }

    /// Every write the DB does not have yet, in order (those being written
    /// included), and the generation they are at.
    pub fn unpersisted(&self) -> (u64, Vec<SessionWrite>) {
        let writes = self.in_flight.iter().chain(&self.pending).cloned();
        (self.generation, writes.collect())
    }

    /// Puts back writes the DB could not apply, ahead of newer ones. An
    /// older upsert superseded by a newer one for the same session is dropped.
    pub fn restore_pending(&mut self, writes: Vec<SessionWrite>) {
        self.in_flight.clear();
        self.generation += 1;
        let newer = std::mem::take(&mut self.pending);
        let mut merged: Vec<SessionWrite> = writes
            .into_iter()
            .filter(|w| {
                w.upsert_jti()
                    .is_none_or(|j| !newer.iter().any(|n| n.upsert_jti() == Some(j)))
            })
            .collect();
        merged.extend(newer);
        self.pending = merged;
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Coalesces: a newer upsert replaces an older queued one for the same
    /// session, so the queue stays bounded by the number of sessions.
    fn queue(&mut self, write: SessionWrite) {
        if let Some(jti) = write.upsert_jti() {
            self.pending.retain(|w| w.upsert_jti() != Some(jti));
        }
        self.pending.push(write);
        self.generation += 1;
    }

    /// Beyond `max_sessions` live sessions, revokes the least recently used.
    fn enforce_limit(&mut self, now: DateTime<Utc>) {
        loop {
            let mut live: Vec<&SessionRecord> = self
                .sessions
                .values()
                .filter(|s| s.is_active(now))
                .collect();
            if live.len() <= self.max_sessions {
                break;
            }
            live.sort_by_key(|s| s.last_activity);
            let oldest = live[0].jti.clone();
            self.revoke(&oldest, now);
        }
        // Dead entries beyond a generous bound go too (revoked ones are kept
        // only so their tokens keep failing as Revoked until they expire).
        if self.sessions.len() > self.max_sessions * 4 {
            self.prune(now);
            if self.sessions.len() > self.max_sessions * 4 {
                let mut dead: Vec<(DateTime<Utc>, String)> = self
                    .sessions
                    .values()
                    .filter(|s| s.is_revoked())
                    .map(|s| (s.revoked_at.unwrap_or(s.created_at), s.jti.clone()))
                    .collect();
                dead.sort();
                let excess = self.sessions.len() - self.max_sessions * 4;
                for (_, jti) in dead.into_iter().take(excess) {
                    self.sessions.remove(&jti);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    fn rec(jti: &str, created: i64) -> SessionRecord {
        SessionRecord::new(
            jti.to_owned(),
            "10.0.0.1".parse().unwrap(),
            Some("curl/8"),
            t(created),
            t(created + 3600),
        )
    }

    #[test]
    fn revoked_session_is_refused_and_write_is_queued() {
        let mut store = SessionStore::new(10);
        store.insert(rec("a", 0), t(0));
        assert!(store.check("a", t(1)).is_ok());
        assert!(store.revoke("a", t(2)));
        assert_eq!(store.check("a", t(3)).unwrap_err(), TokenError::Revoked);
        assert_eq!(
            store.check("zzz", t(3)).unwrap_err(),
            TokenError::UnknownSession
        );
        // insert + revoke coalesce into one upsert of the final row
        let writes = store.drain_pending();
        assert_eq!(writes.len(), 1);
        match &writes[0] {
            SessionWrite::Upsert(r) => assert_eq!(r.revoked_at, Some(t(2))),
            w => panic!("{w:?}"),
        }
        assert!(store.drain_pending().is_empty());
    }

    #[test]
    fn touch_updates_last_activity_and_expired_sessions_fail_and_are_pruned() {
        let mut store = SessionStore::new(10);
        store.insert(rec("a", 0), t(0));
        assert_eq!(store.touch("a", t(60)).unwrap().last_activity, t(60));
        assert_eq!(store.check("a", t(3600)).unwrap_err(), TokenError::Expired);
        assert!(store.touch("a", t(3600)).is_none());
        assert_eq!(store.prune(t(3600)), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn revoke_all_keeps_the_excepted_session_and_queues_one_write() {
        let mut store = SessionStore::new(10);
        for (i, j) in ["a", "b", "c"].iter().enumerate() {
            store.insert(rec(j, i as i64), t(i as i64));
        }
        store.drain_pending();
        store.touch("b", t(5));
        assert_eq!(store.revoke_all(t(10), Some("c")), 2);
        assert_eq!(store.list(t(11)).len(), 1);
        assert_eq!(store.list(t(11))[0].jti, "c");
        let writes = store.drain_pending();
        assert_eq!(writes.len(), 2);
        // The queued touch of "b" now carries the revocation.
        assert!(
            matches!(&writes[0], SessionWrite::Upsert(r) if r.jti == "b" && r.revoked_at == Some(t(10)))
        );
        assert_eq!(
            writes[1],
            SessionWrite::RevokeAll {
                at: t(10),
                except: Some("c".into())
            }
        );
        store.revoke_all(t(20), None);
        assert_eq!(store.drain_pending().len(), 1);
    }

    #[test]
    fn load_seeds_from_db_but_applies_revocations_made_while_it_was_down() {
        let mut store = SessionStore::new(10);
        // While the DB was down: logout of a session only the DB knows,
        // then a logout-all.
        store.revoke("old", t(50));
        store.revoke_all(t(60), None);
        store.insert(rec("fresh", 100), t(100));
        store.load(
            [
                rec("old", 0),
                rec("other", 10),
                rec("later", 70),
                rec("gone", -7200),
                rec("fresh", 100),
            ],
            t(100),
        );
        assert_eq!(store.check("old", t(101)).unwrap_err(), TokenError::Revoked);
        assert_eq!(
            store.check("other", t(101)).unwrap_err(),
            TokenError::Revoked
        );
        assert!(store.check("later", t(101)).is_ok());
        assert!(store.get("gone").is_none());
        assert!(store.check("fresh", t(101)).is_ok());
    }

    #[test]
    fn sessions_issued_after_a_revoke_all_are_live_even_with_the_clock_behind_it() {
        let mut store = SessionStore::new(10);
        store.insert(rec("a", 100), t(100));
        // The clock went back 50 s: the mark still covers "a".
        store.revoke_all(t(50), None);
        assert_eq!(store.check("a", t(51)).unwrap_err(), TokenError::Revoked);
        let mut b = rec("b", 0);
        b.created_at = store.issue_time(t(51));
        assert!(b.created_at > t(100));
        store.insert(b, t(51));
        assert!(store.check("b", t(52)).is_ok());
        // Without a mark ahead of it, the clock is taken as is (to the µs).
        let fresh = SessionStore::new(10);
        let now = t(0) + chrono::Duration::nanoseconds(1_500);
        assert_eq!(
            fresh.issue_time(now),
            t(0) + chrono::Duration::microseconds(1)
        );
    }

    #[test]
    fn restore_pending_keeps_order_and_drops_superseded_upserts() {
        let mut store = SessionStore::new(10);
        store.insert(rec("a", 0), t(0));
        store.insert(rec("b", 0), t(0));
        let failed = store.drain_pending();
        store.touch("a", t(30));
        store.restore_pending(failed);
        let w = store.drain_pending();
        assert_eq!(w.len(), 2);
        assert!(matches!(&w[0], SessionWrite::Upsert(r) if r.jti == "b"));
        assert!(
            matches!(&w[1], SessionWrite::Upsert(r) if r.jti == "a" && r.last_activity == t(30))
        );
    }

    #[test]
    fn live_sessions_are_bounded_by_revoking_the_least_recently_used() {
        let mut store = SessionStore::new(2);
        store.insert(rec("a", 0), t(0));
        store.insert(rec("b", 1), t(1));
        store.touch("a", t(2));
        store.insert(rec("c", 3), t(3));
        assert_eq!(store.check("b", t(4)).unwrap_err(), TokenError::Revoked);
        assert_eq!(store.list(t(4)).len(), 2);
    }

    #[test]
    fn long_user_agents_are_truncated() {
        let r = SessionRecord::new(
            "x".into(),
            "::1".parse().unwrap(),
            Some(&"é".repeat(1000)),
            t(0),
            t(1),
        );
        assert_eq!(r.user_agent.unwrap().chars().count(), MAX_USER_AGENT_LEN);
    }
}
