//! Login throttling per source address and per account. Pure state driven
//! by an injected monotonic `now` (tokio's `Instant`, so tests can pause the
//! clock); nothing here sleeps, spawns or talks to the DB.
//!
//! Per source: after `ip_threshold` (5) failures the source is locked for
//! 1 min, doubling with each further lockout up to 15 min. A success resets
//! the source. A source is one address, IPv6 included (see [`SourceKey`]).
//! Concurrent attempts are reserved up front (`begin_attempt`), so firing
//! 200 requests at once does not get 200 guesses past a limit of 5; an
//! [`Attempt`] releases its reservation however its caller ends.
//!
//! Per account: at most 100 failures in any sliding hour, whatever their
//! source. Beyond that the account is closed to *suspect* sources only, so an
//! attacker cannot lock the real admin out from another address:
//! - a known-good source (one that logged in successfully in the last
//!   30 days) is still let through, subject to its own per-source limit;
//! - a clean source (no failure in the last hour, no attempt in flight) is
//!   let through too: the admin may be somewhere new. Its first failure
//!   makes it suspect, so while the cap holds each fresh address is worth
//!   one guess, not five.
//!
//! The price of that choice: an attacker with many addresses keeps about one
//! guess per new source per hour beyond the cap. Against a 12+ character
//! password with four character classes, behind argon2 and the HTTP rate
//! limiter, that is acceptable; locking the owner out is not. Memory is
//! bounded: at most `max_tracked_sources` entries (the least recently seen
//! is evicted) and `max_known_good` known-good sources.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockoutConfig {
    /// Failures from one source before it is locked.
    pub ip_threshold: u32,
    /// First lock duration; doubles with each further lockout.
    pub base_lock: Duration,
    pub max_lock: Duration,
    /// Failures per account in `account_window` before suspect sources are refused.
    pub account_max_failures: usize,
    pub account_window: Duration,
    /// How long a successful login keeps a source trusted.
    pub known_good_ttl: Duration,
    pub max_known_good: usize,
    pub max_tracked_sources: usize,
    /// A source idle this long starts from scratch (its lockout level too).
    pub forget_after: Duration,
    /// `retry_after` when an attempt is refused only because others from the
    /// same source are still being checked.
    pub in_flight_retry: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        Self {
            ip_threshold: 5,
            base_lock: Duration::from_secs(60),
            max_lock: Duration::from_secs(15 * 60),
            account_max_failures: 100,
            account_window: Duration::from_secs(3600),
            known_good_ttl: Duration::from_secs(30 * 24 * 3600),
            max_known_good: 32,
            max_tracked_sources: 10_000,
            forget_after: Duration::from_secs(24 * 3600),
            in_flight_retry: Duration::from_secs(1),
        }
    }
}

/// What is throttled: one client address. Never an IPv6 prefix: on a LAN
/// every SLAAC host shares one /64, and one phone guessing must not lock out
/// every other IPv6 client (the rate limiter keeps a coarse /64 bucket for
/// global addresses; the lockout has the account-wide cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceKey(IpAddr);

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        Self(ip.to_canonical())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    /// This source failed too often.
    Source,
    /// The account-wide cap is reached and this source is suspect.
    Account,
    /// Other attempts from this source are still being checked.
    InFlight,
}

/// A refused attempt. `Display` is what the client is told: what happened
/// and for how long, the same whatever the scope and whatever user name was
/// tried (the lock is checked before the name is looked at), so it reveals
/// nothing about the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed attempts from this address: locked, retry in {} s", self.retry_after_secs())]
pub struct Locked {
    pub retry_after: Duration,
    pub scope: LockScope,
}

impl Locked {
    /// Whole seconds to wait, rounded up and at least 1 (for `Retry-After`:
    /// a client retrying after a rounded-down value would still be locked).
    pub fn retry_after_secs(&self) -> u64 {
        let d = self.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }
}

/// What a recorded failure changed, for audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureOutcome {
    /// The source was just locked for this long.
    pub source_locked: Option<Duration>,
    /// This failure reached the account-wide cap.
    pub account_capped: bool,
}

#[derive(Debug, Clone)]
struct SourceState {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last_failure: Option<Instant>,
    last_seen: Instant,
    in_flight: u32,
}

impl SourceState {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            lockouts: 0,
            locked_until: None,
            last_failure: None,
            last_seen: now,
            in_flight: 0,
        }
    }

    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|until| *until > now)
            .map(|until| until - now)
    }
}

/// A reservation made by [`LockoutTracker::begin_attempt`] on a shared
/// tracker, released on drop unless an outcome was recorded. The caller may
/// be dropped at any await (the client went away and axum dropped the
/// handler mid-hash): a leaked reservation would count as an attempt in
/// flight for good and lock the source out until a restart.
#[derive(Debug)]
pub struct Attempt<'a> {
    tracker: &'a Mutex<LockoutTracker>,
    ip: IpAddr,
    settled: bool,
}

fn lock(tracker: &Mutex<LockoutTracker>) -> MutexGuard<'_, LockoutTracker> {
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Attempt<'a> {
    pub fn begin(
        tracker: &'a Mutex<LockoutTracker>,
        ip: IpAddr,
        now: Instant,
    ) -> Result<Self, Locked> {
        lock(tracker).begin_attempt(ip, now)?;
        Ok(Self {
            tracker,
            ip,
            settled: false,
        })
    }

    /// See [`LockoutTracker::record_failure`].
    pub fn failure(mut self, now: Instant) -> FailureOutcome {
        self.settled = true;
        lock(self.tracker).record_failure(self.ip, now)
    }

    /// See [`LockoutTracker::record_source_failure`].
    pub fn source_failure(mut self, now: Instant) -> FailureOutcome {
        self.settled = true;
        lock(self.tracker).record_source_failure(self.ip, now)
    }

    /// See [`LockoutTracker::record_success`].
    pub fn success(mut self, now: Instant) {
        self.settled = true;
        lock(self.tracker).record_success(self.ip, now);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            lock(self.tracker).end_attempt(self.ip);
        }
    }
}

#[derive(Debug)]
pub struct LockoutTracker {
    cfg: LockoutConfig,
    sources: HashMap<SourceKey, SourceState>,
    /// Times of the most recent account failures, oldest first, at most
    /// `account_max_failures` of them.
    account: VecDeque<Instant>,
    known_good: HashMap<SourceKey, Instant>,
}

fn since(now: Instant, then: Instant) -> Duration {
    now.saturating_duration_since(then)
}

impl LockoutTracker {
    pub fn new(cfg: LockoutConfig) -> Self {
        Self {
            cfg,
            sources: HashMap::new(),
            account: VecDeque::new(),
            known_good: HashMap::new(),
        }
    }

    pub fn config(&self) -> &LockoutConfig {
        &self.cfg
    }

    /// Whether `ip` may try now. Does not reserve anything; see `begin_attempt`.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Locked> {
        let key = SourceKey::from(ip);
        let source = self.sources.get(&key);
        if let Some(retry_after) = source.and_then(|s| s.locked_for(now)) {
            return Err(Locked {
                retry_after,
                scope: LockScope::Source,
            });
        }
        if let Some(retry_after) = self.account_capped_for(now)
            && !self.is_known_good(ip, now)
            && self.has_recent_failure(key, now)
        {
            return Err(Locked {
                retry_after,
                scope: LockScope::Account,
            });
        }
        Ok(())
    }

    /// `check`, then reserves a slot for an attempt whose outcome will be
    /// reported by `record_failure`, `record_success` or `end_attempt`.
    /// Attempts in flight count towards the source's threshold.
    pub fn begin_attempt(&mut self, ip: IpAddr, now: Instant) -> Result<(), Locked> {
        self.check(ip, now)?;
        let key = SourceKey::from(ip);
        let capped = self.account_capped_for(now).is_some() && !self.is_known_good(ip, now);
        let threshold = self.cfg.ip_threshold;
        let retry = self.cfg.in_flight_retry;
        let s = self.source_mut(key, now);
        // Under the account cap a suspect-free source gets one at a time.
        let limit = if capped { 1 } else { threshold };
        if s.failures + s.in_flight >= limit {
            return Err(Locked {
                retry_after: retry,
                scope: LockScope::InFlight,
            });
        }
        s.in_flight += 1;
        s.last_seen = now;
        Ok(())
    }

    /// Releases a reservation without an outcome (e.g. an internal error).
    pub fn end_attempt(&mut self, ip: IpAddr) {
        if let Some(s) = self.sources.get_mut(&SourceKey::from(ip)) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
    }

    /// Counts a failure against the source and the account.
    pub fn record_failure(&mut self, ip: IpAddr, now: Instant) -> FailureOutcome {
        self.record_source_failure(ip, now)
            .merge(self.record_account_failure(now))
    }

    /// Counts a failure against the source only (an unknown user name: no
    /// account to protect).
    pub fn record_source_failure(&mut self, ip: IpAddr, now: Instant) -> FailureOutcome {
        let cfg = self.cfg.clone();
        let s = self.source_mut(SourceKey::from(ip), now);
        s.in_flight = s.in_flight.saturating_sub(1);
        s.failures += 1;
        s.last_failure = Some(now);
        s.last_seen = now;
        let mut outcome = FailureOutcome::default();
        if s.failures >= cfg.ip_threshold {
            s.lockouts = s.lockouts.saturating_add(1);
            let doublings = (s.lockouts - 1).min(16);
            let lock = cfg
                .base_lock
                .saturating_mul(1u32 << doublings)
                .min(cfg.max_lock);
            s.locked_until = Some(now + lock);
            s.failures = 0;
            outcome.source_locked = Some(lock);
        }
        outcome
    }

    fn record_account_failure(&mut self, now: Instant) -> FailureOutcome {
        let was_capped = self.account_capped_for(now).is_some();
        self.trim_account(now);
        self.account.push_back(now);
        while self.account.len() > self.cfg.account_max_failures {
            self.account.pop_front();
        }
        FailureOutcome {
            source_locked: None,
            account_capped: !was_capped && self.account_capped_for(now).is_some(),
        }
    }

    /// A successful login: the source starts afresh and becomes known-good.
    pub fn record_success(&mut self, ip: IpAddr, now: Instant) {
        let key = SourceKey::from(ip);
        self.sources.remove(&key);
        self.mark_known_good(ip, now);
    }

    /// Trusts `ip` as of `at` (a success); also used to seed from the DB.
    pub fn mark_known_good(&mut self, ip: IpAddr, at: Instant) {
        let key = SourceKey::from(ip);
        let entry = self.known_good.entry(key).or_insert(at);
        if at > *entry {
            *entry = at;
        }
        while self.known_good.len() > self.cfg.max_known_good {
            let oldest = self
                .known_good
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.known_good.remove(&k),
                None => break,
            };
        }
    }

    pub fn is_known_good(&self, ip: IpAddr, now: Instant) -> bool {
        self.known_good
            .get(&SourceKey::from(ip))
            .is_some_and(|t| since(now, *t) < self.cfg.known_good_ttl)
    }

    /// Account failures within the current window.
    pub fn account_failures(&self, now: Instant) -> usize {
        self.account
            .iter()
            .filter(|t| since(now, **t) < self.cfg.account_window)
            .count()
    }

    pub fn tracked_sources(&self) -> usize {
        self.sources.len()
    }

    /// Drops what no longer matters; call it now and then (e.g. hourly).
    pub fn prune(&mut self, now: Instant) {
        let forget = self.cfg.forget_after;
        self.sources.retain(|_, s| {
            s.locked_for(now).is_some() || s.in_flight > 0 || since(now, s.last_seen) < forget
        });
        let ttl = self.cfg.known_good_ttl;
        self.known_good.retain(|_, t| since(now, *t) < ttl);
        self.trim_account(now);
    }

    /// `Some(retry_after)` while the account-wide cap is reached.
    fn account_capped_for(&self, now: Instant) -> Option<Duration> {
        if self.account_failures(now) < self.cfg.account_max_failures {
            return None;
        }
        // The deque holds exactly the last `max` failures, all in the window:
        // the cap lifts when the oldest of them leaves it.
        let oldest = *self.account.front()?;
        Some(self.cfg.account_window.saturating_sub(since(now, oldest)))
    }

    fn has_recent_failure(&self, key: SourceKey, now: Instant) -> bool {
        self.sources.get(&key).is_some_and(|s| {
            s.last_failure
                .is_some_and(|t| since(now, t) < self.cfg.account_window)
        })
    }

    fn trim_account(&mut self, now: Instant) {
        while self
            .account
            .front()
            .is_some_and(|t| since(now, *t) >= self.cfg.account_window)
        {
            self.account.pop_front();
        }
    }

    fn source_mut(&mut self, key: SourceKey, now: Instant) -> &mut SourceState {
        if !self.sources.contains_key(&key) && self.sources.len() >= self.cfg.max_tracked_sources {
            self.evict(now);
        }
        let forget = self.cfg.forget_after;
        let s = self
            .sources
            .entry(key)
            .or_insert_with(|| SourceState::new(now));
        if s.locked_for(now).is_none() && s.in_flight == 0 && since(now, s.last_seen) >= forget {
            *s = SourceState::new(now);
        }
        s
    }

    fn evict(&mut self, now: Instant) {
        self.prune(now);
        while self.sources.len() >= self.cfg.max_tracked_sources {
            let oldest = self
                .sources
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.sources.remove(&k),
                None => break,
            };
        }
    }
}

impl FailureOutcome {
    fn merge(self, other: FailureOutcome) -> FailureOutcome {
        FailureOutcome {
            source_locked: self.source_locked.or(other.source_locked),
            account_capped: self.account_capped || other.account_capped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail_n(t: &mut LockoutTracker, addr: IpAddr, n: usize, now: Instant) -> FailureOutcome {
        let mut last = FailureOutcome::default();
        for _ in 0..n {
            t.begin_attempt(addr, now).unwrap();
            last = t.record_failure(addr, now);
        }
        last
    }

    #[test]
    fn five_failures_lock_for_a_minute_then_doubling_up_to_fifteen() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let a = ip("203.0.113.5");
        let mut now = Instant::now();
        for expected in [60, 120, 240, 480, 900, 900] {
            let out = fail_n(&mut t, a, 4, now);
            assert_eq!(out.source_locked, None);
            let out = fail_n(&mut t, a, 1, now);
            assert_eq!(out.source_locked, Some(Duration::from_secs(expected)));
            let err = t.check(a, now).unwrap_err();
            assert_eq!(err.scope, LockScope::Source);
            assert_eq!(err.retry_after, Duration::from_secs(expected));
            assert!(t.check(a, now + Duration::from_secs(expected - 1)).is_err());
            now += Duration::from_secs(expected);
            t.check(a, now).unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lock_expires_with_the_paused_clock() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let a = ip("203.0.113.5");
        fail_n(&mut t, a, 5, Instant::now());
        assert!(t.check(a, Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(t.check(a, Instant::now()).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        t.check(a, Instant::now()).unwrap();
    }

    #[test]
    fn another_source_is_unaffected_and_success_resets_a_source() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let now = Instant::now();
        let (a, b) = (ip("198.51.100.1"), ip("198.51.100.2"));
        fail_n(&mut t, a, 5, now);
        assert!(t.check(a, now).is_err());
        t.begin_attempt(b, now).unwrap();
        t.record_success(b, now);

        // success after 4 failures: the count starts again
        fail_n(&mut t, b, 4, now);
        t.begin_attempt(b, now).unwrap();
        t.record_success(b, now);
        assert_eq!(fail_n(&mut t, b, 4, now).source_locked, None);
        t.check(b, now).unwrap();
    }

    #[test]
    fn ipv6_hosts_in_one_slash_64_are_locked_one_by_one() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let now = Instant::now();
        let guesser = ip("2001:db8:1:2::bad");
        fail_n(&mut t, guesser, 5, now);
        assert!(t.check(guesser, now).is_err());
        // Its neighbours on the same LAN prefix may still log in.
        t.check(ip("2001:db8:1:2::1"), now).unwrap();
        t.check(ip("fe80::1"), now).unwrap();
        // IPv4-mapped IPv6 is the IPv4 address
        fail_n(&mut t, ip("192.0.2.9"), 5, now);
        assert!(t.check(ip("::ffff:192.0.2.9"), now).is_err());
    }

    #[test]
    fn concurrent_attempts_cannot_exceed_the_threshold() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let now = Instant::now();
        let a = ip("203.0.113.7");
        for _ in 0..5 {
            t.begin_attempt(a, now).unwrap();
        }
        let err = t.begin_attempt(a, now).unwrap_err();
        assert_eq!(err.scope, LockScope::InFlight);
        t.end_attempt(a);
        t.begin_attempt(a, now).unwrap();
    }

    #[test]
    fn an_attempt_dropped_without_an_outcome_releases_its_reservation() {
        let t = Mutex::new(LockoutTracker::new(LockoutConfig::default()));
        let now = Instant::now();
        let a = ip("203.0.113.8");
        for _ in 0..10 {
            drop(Attempt::begin(&t, a, now).unwrap());
        }
        let held: Vec<Attempt> = (0..5)
            .map(|_| Attempt::begin(&t, a, now).unwrap())
            .collect();
        assert_eq!(
            Attempt::begin(&t, a, now).unwrap_err().scope,
            LockScope::InFlight
        );
        // Settled attempts are not released twice.
        for attempt in held {
            attempt.failure(now);
        }
        assert_eq!(t.lock().unwrap().sources[&SourceKey::from(a)].in_flight, 0);
        assert_eq!(
            Attempt::begin(&t, a, now).unwrap_err().scope,
            LockScope::Source
        );
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let l = |ms| Locked {
            retry_after: Duration::from_millis(ms),
            scope: LockScope::Source,
        };
        assert_eq!(l(60_000).retry_after_secs(), 60);
        assert_eq!(l(59_001).retry_after_secs(), 60);
        assert_eq!(l(0).retry_after_secs(), 1);
        assert_eq!(
            l(59_001).to_string(),
            "too many failed attempts from this address: locked, retry in 60 s"
        );
    }

    #[test]
    fn account_cap_refuses_suspect_sources_but_not_clean_or_known_good_ones() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let start = Instant::now();
        let admin_home = ip("192.168.1.10");
        t.begin_attempt(admin_home, start).unwrap();
        t.record_success(admin_home, start);

        let now = start + Duration::from_secs(60);
        // 99 failures from 33 addresses (3 each: none gets locked) ...
        for i in 0..33 {
            let out = fail_n(&mut t, ip(&format!("203.0.113.{i}")), 3, now);
            assert!(!out.account_capped);
        }
        // ... and the admin mistypes once at home: the 100th.
        t.begin_attempt(admin_home, now).unwrap();
        assert!(t.record_failure(admin_home, now).account_capped);
        assert_eq!(t.account_failures(now), 100);

        // An attacker address with recent failures is now refused ...
        let err = t.check(ip("203.0.113.1"), now).unwrap_err();
        assert_eq!(err.scope, LockScope::Account);
        assert_eq!(err.retry_after, Duration::from_secs(3600));
        // ... the known-good address, despite its own failure, is not ...
        t.begin_attempt(admin_home, now).unwrap();
        t.record_success(admin_home, now);
        // ... nor is a clean address, which gets one attempt at a time ...
        let fresh = ip("198.51.100.77");
        t.begin_attempt(fresh, now).unwrap();
        assert_eq!(
            t.begin_attempt(fresh, now).unwrap_err().scope,
            LockScope::InFlight
        );
        // ... and becomes suspect after one failure.
        t.record_failure(fresh, now);
        assert_eq!(t.check(fresh, now).unwrap_err().scope, LockScope::Account);

        // The cap lifts when the window slides past the failures.
        let later = now + Duration::from_secs(3600);
        t.check(ip("203.0.113.1"), later).unwrap();
        t.check(fresh, later).unwrap();
    }

    #[test]
    fn tracked_sources_are_bounded() {
        let cfg = LockoutConfig {
            max_tracked_sources: 100,
            ..LockoutConfig::default()
        };
        let mut t = LockoutTracker::new(cfg);
        let now = Instant::now();
        for i in 0..1000u32 {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            t.begin_attempt(a, now).unwrap();
            t.record_failure(a, now + Duration::from_millis(u64::from(i)));
        }
        assert!(t.tracked_sources() <= 100);
        // account window keeps only the last `max` failures
        assert!(t.account.len() <= 100);
    }

    #[test]
    fn known_good_expires_after_thirty_days_and_is_bounded() {
        let mut t = LockoutTracker::new(LockoutConfig::default());
        let now = Instant::now();
        let a = ip("192.168.1.10");
        t.record_success(a, now);
        assert!(t.is_known_good(a, now + Duration::from_secs(29 * 86_400)));
        assert!(!t.is_known_good(a, now + Duration::from_secs(30 * 86_400)));
        for i in 0..100u32 {
            t.mark_known_good(IpAddr::V4(std::net::Ipv4Addr::from(i)), now);
        }
        assert!(t.known_good.len() <= 32);
    }
}
