//! Password hashing (argon2id, PHC strings) and the password policy.
//! Hashing is bounded: at most `permits` argon2 runs at once, each on the
//! blocking pool, so a burst of logins costs time, not memory (19 MiB each).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, anyhow};
use argon2::password_hash::phc::PasswordHash;
use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use base64::Engine as _;
use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use super::secrets::Secret;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashParams {
    /// Memory in KiB.
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for HashParams {
    /// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
    fn default() -> Self {
        Self {
            m_kib: 19_456,
            t: 2,
            p: 1,
        }
    }
}

impl HashParams {
    /// Upper bounds accepted when verifying a stored hash, so a tampered
    /// `admin.hash` cannot make every login allocate gigabytes.
    const MAX_M_KIB: u32 = 256 * 1024;
    const MAX_T: u32 = 16;
    const MAX_P: u32 = 8;

    fn argon2(&self) -> anyhow::Result<Argon2<'static>> {
        let params = Params::new(self.m_kib, self.t, self.p, None)
            .map_err(|e| anyhow!("invalid argon2 parameters: {e}"))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes a password synchronously (tens of ms, 19 MiB). Prefer [`Hasher`].
pub fn hash_blocking(params: &HashParams, password: &str) -> anyhow::Result<String> {
    let hash = params
        .argon2()?
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow!("argon2 hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// Checks that `phc` is an argon2id PHC string with bounded costs.
pub fn validate_phc(phc: &str) -> anyhow::Result<()> {
    let parsed = PasswordHash::new(phc).map_err(|e| anyhow!("not a PHC string: {e}"))?;
    if parsed.algorithm.as_str() != "argon2id" {
        anyhow::bail!("expected an argon2id hash, found {}", parsed.algorithm);
    }
    let params =
        Params::try_from(&parsed).map_err(|e| anyhow!("bad argon2 parameters in hash: {e}"))?;
    if params.m_cost() > HashParams::MAX_M_KIB
        || params.t_cost() > HashParams::MAX_T
        || params.p_cost() > HashParams::MAX_P
    {
        anyhow::bail!(
            "argon2 parameters m={} t={} p={} exceed the accepted maximum",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        );
    }
    if parsed.salt.is_none() || parsed.hash.is_none() {
        anyhow::bail!("PHC string lacks salt or hash");
    }
    Ok(())
}

/// Verifies synchronously. A malformed or over-costly hash never matches.
pub fn verify_blocking(password: &str, phc: &str) -> bool {
    if validate_phc(phc).is_err() {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

struct HasherInner {
    params: HashParams,
    permits: Arc<Semaphore>,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// Hash of a random password with `params`, verified against when the
    /// user is unknown so that path costs the same as a wrong password.
    dummy: OnceLock<String>,
}

/// Bounded, async front of argon2: a semaphore caps concurrent runs and each
/// run happens on `spawn_blocking`. Cheap to clone.
#[derive(Clone)]
pub struct Hasher {
    inner: Arc<HasherInner>,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("params", &self.inner.params)
            .field("available_permits", &self.inner.permits.available_permits())
            .finish()
    }
}

/// Default number of concurrent argon2 runs.
pub const DEFAULT_HASH_CONCURRENCY: usize = 2;

impl Hasher {
    pub fn new(params: HashParams, permits: usize) -> Self {
        Self {
            inner: Arc::new(HasherInner {
                params,
                permits: Arc::new(Semaphore::new(permits.max(1))),
                in_flight: AtomicUsize::new(0),
                peak: AtomicUsize::new(0),
                dummy: OnceLock::new(),
            }),
        }
    }

    pub fn params(&self) -> HashParams {
        self.inner.params
    }

    /// Highest number of argon2 runs seen at the same time (a metric, and
    /// what the tests check the semaphore against).
    pub fn peak_concurrency(&self) -> usize {
        self.inner.peak.load(Ordering::SeqCst)
    }

    /// Runs `work` on the blocking pool while holding one permit. The
    /// permit moves into the blocking task: if the caller is dropped (client
    /// gone), the slot stays taken until argon2 has really finished, so
    /// aborted requests cannot pile up work beyond the bound.
    pub async fn run<T, F>(&self, work: F) -> anyhow::Result<T>
    where
        F: FnOnce(&HashParams) -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.inner.permits)
            .acquire_owned()
            .await
            .context("hasher semaphore closed")?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let now = inner.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            inner.peak.fetch_max(now, Ordering::SeqCst);
            let out = work(&inner.params);
            inner.in_flight.fetch_sub(1, Ordering::SeqCst);
            drop(permit);
            out
        })
        .await
        .context("password hashing task failed")
    }

    pub async fn hash(&self, password: Secret<String>) -> anyhow::Result<String> {
        self.run(move |params| hash_blocking(params, password.expose()))
            .await?
    }

    /// `phc = None` (unknown user) verifies against a dummy hash with the
    /// same parameters and returns false: same work, same timing.
    pub async fn verify(
        &self,
        password: Secret<String>,
        phc: Option<String>,
    ) -> anyhow::Result<bool> {
        let inner = Arc::clone(&self.inner);
        self.run(move |params| match phc {
            Some(phc) => verify_blocking(password.expose(), &phc),
            None => {
                let _ = verify_blocking(password.expose(), inner.dummy(params));
                false
            }
        })
        .await
    }

    /// Builds the dummy hash now so the first unknown-user login does not
    /// pay for it and stand out by its timing (cheap: no argon2 run).
    pub fn prepare_blocking(&self) {
        let params = self.inner.params;
        self.inner.dummy(&params);
    }
}

impl HasherInner {
    /// A PHC string with the configured parameters, a random salt and a
    /// random output: verifying against it costs one full argon2 run (the
    /// output is only compared after computing) and can never succeed.
    /// Built without hashing, so start-up pays no 19 MiB argon2 run.
    fn dummy(&self, params: &HashParams) -> &str {
        self.dummy.get_or_init(|| {
            let mut salt = [0u8; 16];
            let mut out = [0u8; 32];
            rand::fill(&mut salt[..]);
            rand::fill(&mut out[..]);
            format!(
                "$argon2id$v=19$m={},t={},p={}${}${}",
                params.m_kib,
                params.t,
                params.p,
                b64_unpadded(&salt),
                b64_unpadded(&out)
            )
        })
    }
}

/// Base64 (standard alphabet) without padding, as PHC strings use it.
fn b64_unpadded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// Machine-readable reason a password was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyCode {
    TooShort,
    TooLong,
    MissingUppercase,
    MissingLowercase,
    MissingDigit,
    MissingSpecial,
    RecentlyUsed,
}

/// One broken rule: `code` for programs, `message` (English) for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PolicyViolation {
    pub code: PolicyCode,
    pub message: String,
}

/// What `GET /api/auth/password-requirements` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PasswordRequirements {
    pub min_length: usize,
    pub max_length: usize,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub require_digit: bool,
    pub require_special: bool,
    /// A new password may not equal any of this many most recent ones.
    pub history: usize,
    /// The same rules as sentences, in the order they are checked.
    pub rules: Vec<PolicyViolation>,
}

/// Admin password rules. Lengths count Unicode scalar values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    /// How many of the most recent passwords (the current one included) may
    /// not be reused.
    pub history: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            min_length: 12,
            max_length: 128,
            history: 5,
        }
    }
}

fn is_special(c: char) -> bool {
    !c.is_alphanumeric()
}

impl PasswordPolicy {
    fn message(&self, code: PolicyCode) -> String {
        match code {
            PolicyCode::TooShort => {
                format!("Must be at least {} characters long.", self.min_length)
            }
            PolicyCode::TooLong => format!("Must be at most {} characters long.", self.max_length),
            PolicyCode::MissingUppercase => "Must contain an uppercase letter.".to_owned(),
            PolicyCode::MissingLowercase => "Must contain a lowercase letter.".to_owned(),
            PolicyCode::MissingDigit => "Must contain a digit (0-9).".to_owned(),
            PolicyCode::MissingSpecial => {
                "Must contain a special character (anything but a letter or digit).".to_owned()
            }
            PolicyCode::RecentlyUsed => {
                format!("Must differ from the last {} passwords.", self.history)
            }
        }
    }

    fn violation(&self, code: PolicyCode) -> PolicyViolation {
        PolicyViolation {
            code,
            message: self.message(code),
        }
    }

    /// Checks `candidate` against every rule and lists all that fail.
    /// `previous_hashes` are PHC strings, newest first; only the first
    /// `history` are consulted. Runs argon2 once per hash: call it through
    /// [`Hasher::run`] from async code.
    pub fn check(
        &self,
        candidate: &str,
        previous_hashes: &[String],
    ) -> Result<(), Vec<PolicyViolation>> {
        let len = candidate.chars().count();
        let mut codes = Vec::new();
        if len < self.min_length {
            codes.push(PolicyCode::TooShort);
        }
        if len > self.max_length {
            codes.push(PolicyCode::TooLong);
        }
        if !candidate.chars().any(char::is_uppercase) {
            codes.push(PolicyCode::MissingUppercase);
        }
        if !candidate.chars().any(char::is_lowercase) {
            codes.push(PolicyCode::MissingLowercase);
        }
        if !candidate.chars().any(|c| c.is_ascii_digit()) {
            codes.push(PolicyCode::MissingDigit);
        }
        if !candidate.chars().any(is_special) {
            codes.push(PolicyCode::MissingSpecial);
        }
        // Hashing a huge candidate would be wasted work; it is refused anyway.
        if len <= self.max_length
            && previous_hashes
                .iter()
                .take(self.history)
                .any(|phc| verify_blocking(candidate, phc))
        {
            codes.push(PolicyCode::RecentlyUsed);
        }
        if codes.is_empty() {
            Ok(())
        } else {
            Err(codes.into_iter().map(|c| self.violation(c)).collect())
        }
    }

    pub fn describe(&self) -> PasswordRequirements {
        PasswordRequirements {
            min_length: self.min_length,
            max_length: self.max_length,
            require_uppercase: true,
            require_lowercase: true,
            require_digit: true,
            require_special: true,
            history: self.history,
            rules: [
                PolicyCode::TooShort,
                PolicyCode::TooLong,
                PolicyCode::MissingUppercase,
                PolicyCode::MissingLowercase,
                PolicyCode::MissingDigit,
                PolicyCode::MissingSpecial,
                PolicyCode::RecentlyUsed,
            ]
            .into_iter()
            .map(|c| self.violation(c))
            .collect(),
        }
    }
}

// No look-alikes (0/O, 1/l/I) so the initial password can be read off a
// screen and typed; still ~6 bits per character.
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
const SPECIAL: &[u8] = b"-_.!@#%+=";

/// Makes glibc return argon2's 19 MiB work areas to the OS when a hash is
/// done. Without it glibc's adaptive mmap threshold keeps one such block
/// cached per malloc arena (one per blocking-pool thread, up to 8 per core),
/// so a burst of logins left ~470 MB resident on a 2-core box although only
/// two hashes ever ran at once. Call once at process start; a no-op off glibc.
pub fn release_large_allocations() {
    crate::os::sys::mmap_large_allocations();
}

/// A random password of `len` (at least 20) characters with at least one of
/// each class, so it satisfies the default policy.
pub fn generate_password(len: usize) -> Secret<String> {
    let len = len.max(20);
    let mut rng = rand::rng();
    let all: Vec<u8> = [UPPER, LOWER, DIGITS, SPECIAL].concat();
    let mut chars: Vec<u8> = [UPPER, LOWER, DIGITS, SPECIAL]
        .iter()
        .map(|class| *class.choose(&mut rng).expect("class is not empty"))
        .collect();
    while chars.len() < len {
        chars.push(all[rng.random_range(0..all.len())]);
    }
    chars.shuffle(&mut rng);
    Secret::new(String::from_utf8(chars).expect("alphabet is ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters for tests that exercise plumbing, not cost.
    pub(crate) const FAST: HashParams = HashParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    fn codes(r: Result<(), Vec<PolicyViolation>>) -> Vec<PolicyCode> {
        r.err()
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.code)
            .collect()
    }

    #[test]
    fn default_params_produce_argon2id_phc_that_verifies() {
        let phc = hash_blocking(&HashParams::default(), "Correct-Horse-9").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        validate_phc(&phc).unwrap();
        assert!(verify_blocking("Correct-Horse-9", &phc));
        assert!(!verify_blocking("Correct-Horse-8", &phc));
    }

    #[test]
    fn malformed_or_overly_costly_hashes_never_verify() {
        assert!(!verify_blocking("x", "not a hash"));
        let huge = "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                    3J7h6kOSoCqvX8fTC3kOq0GyDFMdGaYx5AHkM9QcU2M";
        assert!(validate_phc(huge).is_err());
        assert!(!verify_blocking("x", huge));
    }

    #[test]
    fn policy_lists_every_violation_with_codes_and_messages() {
        let policy = PasswordPolicy::default();
        assert_eq!(
            codes(policy.check("abc", &[])),
            vec![
                PolicyCode::TooShort,
                PolicyCode::MissingUppercase,
                PolicyCode::MissingDigit,
                PolicyCode::MissingSpecial
            ]
        );
        assert_eq!(
            codes(policy.check(&"Aa1!".repeat(40), &[])),
            vec![PolicyCode::TooLong]
        );
        assert_eq!(
            codes(policy.check("ALLUPPER12345!", &[])),
            vec![PolicyCode::MissingLowercase]
        );
        policy.check("Good-Password-2024", &[]).unwrap();
        let v = policy.check("short", &[]).unwrap_err();
        assert!(v[0].message.contains("12"));
        let json = serde_json::to_value(&v[0]).unwrap();
        assert_eq!(json["code"], "too_short");
    }

    #[test]
    fn policy_refuses_any_of_the_last_five_but_not_the_sixth() {
        let policy = PasswordPolicy::default();
        let pws: Vec<String> = (0..6).map(|i| format!("Old-Password-{i}")).collect();
        // newest first: pws[5] is the newest, pws[0] the sixth most recent
        let history: Vec<String> = pws
            .iter()
            .rev()
            .map(|p| hash_blocking(&FAST, p).unwrap())
            .collect();
        for pw in &pws[1..] {
            assert_eq!(
                codes(policy.check(pw, &history)),
                vec![PolicyCode::RecentlyUsed],
                "{pw}"
            );
        }
        policy.check(&pws[0], &history).unwrap();
    }

    #[test]
    fn describe_serialises_the_requirements() {
        let json = serde_json::to_value(PasswordPolicy::default().describe()).unwrap();
        assert_eq!(json["min_length"], 12);
        assert_eq!(json["max_length"], 128);
        assert_eq!(json["history"], 5);
        assert_eq!(json["rules"].as_array().unwrap().len(), 7);
        assert_eq!(json["rules"][6]["code"], "recently_used");
    }

    #[test]
    fn generated_passwords_satisfy_the_policy_and_differ() {
        let policy = PasswordPolicy::default();
        let a = generate_password(24);
        let b = generate_password(24);
        assert_eq!(a.expose().len(), 24);
        assert_ne!(a, b);
        for _ in 0..200 {
            let pw = generate_password(20);
            assert!(pw.expose().len() >= 20);
            policy.check(pw.expose(), &[]).unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_concurrent_verifies_never_run_more_than_the_permits() {
        let hasher = Hasher::new(FAST, 2);
        let phc = hasher.hash(Secret::from("Some-Password-1")).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let hasher = hasher.clone();
            let phc = phc.clone();
            tasks.push(tokio::spawn(async move {
                let pw = if i % 2 == 0 {
                    "Some-Password-1"
                } else {
                    "wrong"
                };
                // Every other call is the unknown-user path.
                let stored = (i % 3 != 0).then_some(phc);
                hasher.verify(Secret::from(pw), stored).await.unwrap()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap());
        }
        // i even and i % 3 != 0: 2,4,8,10,14,16,20,22,26,28,32,34,38,40,44,46
        assert_eq!(ok, 16);
        assert!(
            hasher.peak_concurrency() <= 2,
            "{}",
            hasher.peak_concurrency()
        );
        assert!(hasher.peak_concurrency() >= 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn aborted_callers_do_not_release_their_slot_before_argon2_finishes() {
        // Heavy enough (8 MiB) that aborted runs are still going when the
        // next wave starts.
        let hasher = Hasher::new(
            HashParams {
                m_kib: 8192,
                t: 1,
                p: 1,
            },
            2,
        );
        let phc = hasher.hash(Secret::from("Some-Password-1")).await.unwrap();
        let spawn_wave = |n: usize| {
            (0..n)
                .map(|_| {
                    let (h, p) = (hasher.clone(), phc.clone());
                    tokio::spawn(async move { h.verify(Secret::from("x"), Some(p)).await })
                })
                .collect::<Vec<_>>()
        };
        let first = spawn_wave(20);
        // Abort while argon2 runs are under way.
        while hasher.inner.in_flight.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        for t in &first {
            t.abort();
        }
        for t in spawn_wave(10) {
            assert!(!t.await.unwrap().unwrap());
        }
        assert!(
            hasher.peak_concurrency() <= 2,
            "{}",
            hasher.peak_concurrency()
        );
    }

    #[tokio::test]
    async fn unknown_user_verification_does_real_work_and_fails() {
        let hasher = Hasher::new(FAST, 1);
        assert!(!hasher.verify(Secret::from("anything"), None).await.unwrap());
        let dummy = hasher.inner.dummy.get().unwrap();
        // A well-formed argon2id hash with the configured costs, so the
        // unknown-user path runs argon2 exactly like a wrong password does.
        validate_phc(dummy).unwrap();
        let parsed = PasswordHash::new(dummy).unwrap();
        let p = Params::try_from(&parsed).unwrap();
        assert_eq!(
            (p.m_cost(), p.t_cost(), p.p_cost()),
            (FAST.m_kib, FAST.t, FAST.p)
        );
        assert_eq!(parsed.hash.unwrap().len(), 32);
    }

    #[test]
    fn unpadded_base64_matches_the_phc_alphabet() {
        assert_eq!(b64_unpadded(b""), "");
        assert_eq!(b64_unpadded(b"f"), "Zg");
        assert_eq!(b64_unpadded(b"fo"), "Zm8");
        assert_eq!(b64_unpadded(b"foo"), "Zm9v");
        assert_eq!(b64_unpadded(&[0xfb, 0xff]), "+/8");
    }
}
