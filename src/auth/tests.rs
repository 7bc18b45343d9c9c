//! Tests of `Auth` as a whole: secrets on disk, login, lockout, password
//! changes, sessions and revocation.

use super::*;
use std::os::unix::fs::PermissionsExt;

const FAST: HashParams = HashParams {
    m_kib: 64,
    t: 1,
    p: 1,
};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn cfg(dir: &std::path::Path, params: HashParams) -> AuthConfig {
    AuthConfig {
        secrets_dir: dir.join("secrets"),
        hash_params: params,
        ..AuthConfig::default()
    }
}

fn initial_password(auth: &Auth) -> String {
    std::fs::read_to_string(auth.secrets().initial_password_path())
        .unwrap()
        .trim()
        .to_owned()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A fresh instance with cheap argon2 and a known password set.
async fn fast_auth(dir: &std::path::Path) -> (Auth, String) {
    let (auth, _) = Auth::open(cfg(dir, FAST)).unwrap();
    let initial = initial_password(&auth);
    (auth, initial)
}

#[tokio::test]
async fn first_open_creates_secrets_and_second_open_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let config = cfg(tmp.path(), HashParams::default());
    let (auth, created) = Auth::open(config.clone()).unwrap();
    let s = auth.secrets().clone();
    assert_eq!(
        created.as_deref(),
        Some(s.initial_password_path().as_path())
    );
    assert_eq!(mode(s.path()), 0o700);
    for p in [
        s.jwt_key_path(),
        s.admin_hash_path(),
        s.initial_password_path(),
        s.history_path(),
    ] {
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
    assert!(std::fs::read(s.jwt_key_path()).unwrap().len() >= 32);
    let hash = s.read_admin_hash().unwrap().unwrap();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    let initial = initial_password(&auth);
    assert!(initial.len() >= 20);
    assert!(auth.must_change_password());
    let key = std::fs::read(s.jwt_key_path()).unwrap();
    drop(auth);

    let (again, created) = Auth::open(config).unwrap();
    assert_eq!(created, None);
    assert_eq!(again.secrets().read_admin_hash().unwrap().unwrap(), hash);
    assert_eq!(std::fs::read(s.jwt_key_path()).unwrap(), key);
    assert_eq!(initial_password(&again), initial);
    assert!(again.must_change_password());

    // The real-cost hash logs in, and the token carries the session.
    let now = Now::current();
    let ok = again
        .login("admin", &initial, ip("192.168.1.2"), Some("test"), now)
        .await
        .unwrap();
    assert!(ok.must_change_password);
    assert_eq!(ok.expires_at.timestamp(), now.wall.timestamp() + 24 * 3600);
    let v = again.verify(ok.token.expose(), now).unwrap();
    assert_eq!(v.session.jti, ok.session.jti);
    assert_eq!(v.claims.sub, "admin");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_alike_and_a_locked_source_is_told_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, initial) = fast_auth(tmp.path()).await;
    let now = Now::current();
    let a = ip("203.0.113.9");

    let wrong = auth.login("admin", "nope", a, None, now).await.unwrap_err();
    let unknown = auth
        .login("root", &initial, a, None, now)
        .await
        .unwrap_err();
    assert_eq!(wrong.to_string(), "invalid username or password");
    assert_eq!(unknown.to_string(), wrong.to_string());
    assert_eq!(wrong.failure(), Some(LoginFailure::WrongPassword));
    assert_eq!(unknown.failure(), Some(LoginFailure::UnknownUser));
    for _ in 0..3 {
        auth.login("admin", "nope", a, None, now).await.unwrap_err();
    }
    // Locked: even the right password is refused, and told why; an unknown
    // user name gets the very same answer.
    let locked = auth
        .login("admin", &initial, a, None, now)
        .await
        .unwrap_err();
    assert_eq!(
        locked.to_string(),
        "too many failed attempts from this address: locked, retry in 60 s"
    );
    assert_eq!(locked.retry_after(), Some(Duration::from_secs(60)));
    let unknown_locked = auth
        .login("root", &initial, a, None, now)
        .await
        .unwrap_err();
    assert_eq!(unknown_locked.to_string(), locked.to_string());

    // Another address is unaffected.
    auth.login("admin", &initial, ip("192.168.1.2"), None, now)
        .await
        .unwrap();
    // The lock expires.
    auth.login(
        "admin",
        &initial,
        a,
        None,
        now.after(Duration::from_secs(60)),
    )
    .await
    .unwrap();

    let audit = auth.drain_audit();
    let kinds: Vec<AuditKind> = audit.iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&AuditKind::Lockout));
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::LoginSuccess)
            .count(),
        2
    );
    let json = serde_json::to_string(&audit).unwrap();
    assert!(!json.contains(&initial) && !json.contains("nope"));
}

#[tokio::test]
async fn account_cap_does_not_lock_out_a_clean_or_known_good_address() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = cfg(tmp.path(), FAST);
    config.lockout.account_max_failures = 4;
    let (auth, _) = Auth::open(config).unwrap();
    let pw = initial_password(&auth);
    let now = Now::current();
    let home = ip("192.168.1.10");
    auth.login("admin", &pw, home, None, now).await.unwrap();

    for i in 0..4 {
        let attacker = ip(&format!("198.51.100.{i}"));
        auth.login("admin", "guess", attacker, None, now)
            .await
            .unwrap_err();
    }
    // A suspect address is refused even with the right password ...
    let e = auth
        .login("admin", &pw, ip("198.51.100.1"), None, now)
        .await
        .unwrap_err();
    assert!(matches!(
        e.failure(),
        Some(LoginFailure::Locked(Locked {
            scope: LockScope::Account,
            ..
        }))
    ));
    // ... the known-good and a clean address are not.
    auth.login("admin", &pw, home, None, now).await.unwrap();
    auth.login("admin", &pw, ip("10.1.1.1"), None, now)
        .await
        .unwrap();
}

#[tokio::test]
async fn change_password_applies_policy_and_history_and_revokes_other_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, initial) = fast_auth(tmp.path()).await;
    let now = Now::current();
    let a = ip("192.168.1.2");
    let mine = auth.login("admin", &initial, a, None, now).await.unwrap();
    let other = auth.login("admin", &initial, a, None, now).await.unwrap();

    // Policy violations are listed.
    match auth
        .change_password(&initial, "short", a, Some(&mine.session.jti), now)
        .await
    {
        Err(ChangePasswordError::Policy(v)) => {
            let codes: Vec<PolicyCode> = v.iter().map(|v| v.code).collect();
            assert!(codes.contains(&PolicyCode::TooShort));
            assert!(codes.contains(&PolicyCode::MissingUppercase));
        }
        r => panic!("{r:?}"),
    }
    // The current (initial) password cannot be reused.
    assert!(matches!(
        auth.change_password(&initial, &initial, a, None, now).await,
        Err(ChangePasswordError::Policy(v)) if v[0].code == PolicyCode::RecentlyUsed
    ));
    assert!(matches!(
        auth.change_password("wrong", "New-Password-001", a, None, now)
            .await,
        Err(ChangePasswordError::WrongCurrentPassword)
    ));

    let done = auth
        .change_password(
            &initial,
            "New-Password-001",
            a,
            Some(&mine.session.jti),
            now,
        )
        .await
        .unwrap();
    assert_eq!(done.revoked_sessions, 1);
    assert_eq!(
        done.removed_initial_password.as_deref(),
        Some(auth.secrets().initial_password_path().as_path())
    );
    assert!(!auth.secrets().initial_password_exists());
    assert!(!auth.must_change_password());
    auth.verify(mine.token.expose(), now).unwrap();
    assert_eq!(
        auth.verify(other.token.expose(), now).unwrap_err(),
        TokenError::Revoked
    );
    auth.login("admin", &initial, a, None, now)
        .await
        .unwrap_err();
    let ok = auth
        .login("admin", "New-Password-001", a, None, now)
        .await
        .unwrap();
    assert!(!ok.must_change_password);

    // Four more changes: the last five are refused, the sixth-oldest is not.
    let pw = |i: u32| format!("New-Password-{i:03}");
    for i in 2..=5 {
        auth.change_password(&pw(i - 1), &pw(i), a, None, now)
            .await
            .unwrap();
    }
    for i in 1..=5 {
        assert!(
            matches!(
                auth.change_password(&pw(5), &pw(i), a, None, now).await,
                Err(ChangePasswordError::Policy(v)) if v[0].code == PolicyCode::RecentlyUsed
            ),
            "{i}"
        );
    }
    auth.change_password(&pw(5), &initial, a, None, now)
        .await
        .unwrap();

    // Persisted: a reopened instance knows the new password and history.
    drop(auth);
    let (again, created) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    assert_eq!(created, None);
    assert!(!again.must_change_password());
    assert_eq!(again.secrets().read_history().unwrap().len(), 5);
    again.login("admin", &initial, a, None, now).await.unwrap();
    let json = serde_json::to_string(&again.drain_audit()).unwrap();
    assert!(!json.contains("New-Password"));
}

#[tokio::test]
async fn logout_and_logout_all_revoke_tokens_and_queue_db_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = fast_auth(tmp.path()).await;
    let now = Now::current();
    let a = ip("192.168.1.2");
    let one = auth
        .login("admin", &pw, a, Some("ua-1"), now)
        .await
        .unwrap();
    let two = auth
        .login("admin", &pw, a, Some("ua-2"), now)
        .await
        .unwrap();
    let three = auth.login("admin", &pw, a, None, now).await.unwrap();
    assert_eq!(auth.sessions(now).len(), 3);

    let later = now.after(Duration::from_secs(5));
    assert_eq!(auth.logout(&one.session.jti, Some(a), later).count, 1);
    assert_eq!(
        auth.verify(one.token.expose(), later).unwrap_err(),
        TokenError::Revoked
    );
    let v = auth.verify(two.token.expose(), later).unwrap();
    assert_eq!(v.session.last_activity, later.wall);

    let writes = auth.drain_session_writes();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(auth.logout_all(Some(a), later).count, 2);
    assert!(auth.verify(three.token.expose(), later).is_err());
    assert!(matches!(
        auth.drain_session_writes().as_slice(),
        [SessionWrite::RevokeAll { except: None, .. }]
    ));
    assert!(auth.sessions(later).is_empty());

    // A token whose session this process never saw (restart, DB down).
    let (fresh, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    assert_eq!(
        fresh.verify(two.token.expose(), later).unwrap_err(),
        TokenError::UnknownSession
    );
    // Expired tokens are refused as such.
    let ok = auth.login("admin", &pw, a, None, now).await.unwrap();
    assert_eq!(
        auth.verify(ok.token.expose(), now.after(Duration::from_secs(25 * 3600)))
            .unwrap_err(),
        TokenError::Expired
    );
}

#[tokio::test]
async fn password_set_by_another_process_is_picked_up_on_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let (daemon, initial) = fast_auth(tmp.path()).await;
    let now = Now::current();
    let a = ip("192.168.1.2");
    let s = daemon.login("admin", &initial, a, None, now).await.unwrap();

    // `arasuld admin set-password`: its own instance on the same dir.
    let (cli, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    cli.set_password("Reset-By-Root-42", now).await.unwrap();

    assert!(daemon.reload_credentials(now).unwrap());
    assert!(!daemon.must_change_password());
    assert_eq!(
        daemon.verify(s.token.expose(), now).unwrap_err(),
        TokenError::Revoked
    );
    daemon
        .login("admin", "Reset-By-Root-42", a, None, now)
        .await
        .unwrap();
    assert!(!daemon.reload_credentials(now).unwrap());
}

#[test]
fn unusable_admin_hash_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let config = cfg(tmp.path(), FAST);
    let s = SecretsDir::open(&config.secrets_dir).unwrap();
    s.write_admin_hash("plaintext-password").unwrap();
    let err = format!("{:#}", Auth::open(config).unwrap_err());
    assert!(err.contains("admin.hash"), "{err}");
    assert!(!err.contains("plaintext-password"), "{err}");
}

/// Real argon2 cost, one hash at a time: a call can be dropped while its
/// hash runs, and `idle_hasher` waits for that orphaned hash to finish.
fn real_cost_auth(dir: &std::path::Path) -> (Auth, String) {
    let config = AuthConfig {
        hash_concurrency: 1,
        ..cfg(dir, HashParams::default())
    };
    let (auth, _) = Auth::open(config).unwrap();
    let pw = initial_password(&auth);
    (auth, pw)
}

async fn idle_hasher(auth: &Auth) {
    auth.hasher().run(|_| ()).await.unwrap();
}

const MID_HASH: Duration = Duration::from_millis(2);

#[tokio::test]
async fn logins_dropped_mid_hash_do_not_lock_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = real_cost_auth(tmp.path());
    let a = ip("192.168.1.30");
    // The client goes away while argon2 runs: axum drops the handler future.
    // As many as the source's threshold: each leaked reservation would count.
    for i in 0..5 {
        let login = auth.login("admin", &pw, a, None, Now::current());
        assert!(
            tokio::time::timeout(MID_HASH, login).await.is_err(),
            "attempt {i} finished before it could be dropped"
        );
        idle_hasher(&auth).await;
    }
    auth.login("admin", &pw, a, None, Now::current())
        .await
        .unwrap();
}

#[tokio::test]
async fn password_changes_dropped_mid_hash_do_not_lock_the_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = real_cost_auth(tmp.path());
    let a = ip("192.168.1.31");
    // As many as the source's threshold: each leaked reservation would count.
    for i in 0..5 {
        let change = auth.change_password(&pw, "New-Password-001", a, None, Now::current());
        assert!(
            tokio::time::timeout(MID_HASH, change).await.is_err(),
            "attempt {i} finished before it could be dropped"
        );
        idle_hasher(&auth).await;
    }
    auth.change_password(&pw, "New-Password-001", a, None, Now::current())
        .await
        .unwrap();
    auth.login("admin", "New-Password-001", a, None, Now::current())
        .await
        .unwrap();
}

fn with_spool(dir: &std::path::Path) -> AuthConfig {
    AuthConfig {
        session_spool: Some(dir.join("state").join(spool::SPOOL_FILE)),
        ..cfg(dir, FAST)
    }
}

/// What the rows in the DB would say after the process died with its
/// revoke-all still queued: every session live.
fn as_the_db_kept_them(sessions: &[&LoginOk]) -> Vec<SessionRecord> {
    sessions
        .iter()
        .map(|s| SessionRecord {
            revoked_at: None,
            ..s.session.clone()
        })
        .collect()
}

#[tokio::test]
async fn logout_all_outlives_a_restart_to_the_microsecond_not_the_second() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = fast_auth(tmp.path()).await;
    let a = ip("192.168.1.2");
    // All within one wall-clock second, as `iat` (whole seconds) sees it.
    let t0 = Now {
        wall: DateTime::from_timestamp(1_900_000_000, 100_000_000).unwrap(),
        mono: tokio::time::Instant::now(),
    };
    let before = auth.login("admin", &pw, a, None, t0).await.unwrap();
    let at = t0.after(Duration::from_millis(200));
    let same_instant_before = auth.login("admin", &pw, a, None, at).await.unwrap();
    assert_eq!(auth.logout_all(Some(a), at).count, 2);
    let same_instant_after = auth.login("admin", &pw, a, None, at).await.unwrap();
    let after = auth
        .login("admin", &pw, a, None, at.after(Duration::from_millis(300)))
        .await
        .unwrap();
    let check =
        |auth: &Auth, s: &LoginOk| auth.verify(s.token.expose(), at.after(Duration::from_secs(1)));
    for s in [&same_instant_after, &after] {
        check(&auth, s).unwrap();
    }

    // Restart: the revoke-all never reached the DB, whose rows come back live.
    drop(auth);
    let (again, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    let all = [&before, &same_instant_before, &same_instant_after, &after];
    again.load_sessions(as_the_db_kept_them(&all), at);
    for s in [&before, &same_instant_before] {
        assert_eq!(check(&again, s).unwrap_err(), TokenError::Revoked);
    }
    for s in [&same_instant_after, &after] {
        check(&again, s).unwrap();
    }
    assert_eq!(again.sessions(at).len(), 2);
}

#[tokio::test]
async fn password_change_revocation_outlives_a_restart_but_keeps_the_callers_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = fast_auth(tmp.path()).await;
    let a = ip("192.168.1.2");
    let now = Now::current();
    let mine = auth.login("admin", &pw, a, None, now).await.unwrap();
    let other = auth.login("admin", &pw, a, None, now).await.unwrap();
    auth.change_password(&pw, "New-Password-001", a, Some(&mine.session.jti), now)
        .await
        .unwrap();
    drop(auth);

    let (again, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    again.load_sessions(as_the_db_kept_them(&[&mine, &other]), now);
    again.verify(mine.token.expose(), now).unwrap();
    assert_eq!(
        again.verify(other.token.expose(), now).unwrap_err(),
        TokenError::Revoked
    );

    // `admin set-password` (another process) revokes the kept one too, on
    // reload and after a restart alike.
    let (cli, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    let later = now.after(Duration::from_millis(1));
    cli.set_password("Reset-By-Root-42", later).await.unwrap();
    again.reload_credentials(later).unwrap();
    assert!(again.verify(mine.token.expose(), later).is_err());
    let (restarted, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    restarted.load_sessions(as_the_db_kept_them(&[&mine]), later);
    assert!(restarted.verify(mine.token.expose(), later).is_err());
}

#[tokio::test]
async fn spooled_logins_and_logouts_outlive_a_restart_with_the_db_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, _) = Auth::open(with_spool(tmp.path())).unwrap();
    let pw = initial_password(&auth);
    let a = ip("192.168.1.2");
    let now = Now::current();
    let one = auth.login("admin", &pw, a, None, now).await.unwrap();
    let two = auth.login("admin", &pw, a, None, now).await.unwrap();
    // The logout is on disk before it returns (the logins go with it).
    assert_eq!(auth.logout(&one.session.jti, Some(a), now).count, 1);
    drop(auth);

    let (again, _) = Auth::open(with_spool(tmp.path())).unwrap();
    assert_eq!(
        again.verify(one.token.expose(), now).unwrap_err(),
        TokenError::Revoked
    );
    again.verify(two.token.expose(), now).unwrap();
    // Rows the DB kept from before are revoked as they arrive, and every
    // spooled write is queued for it (the touch of `two` just now last).
    again.load_sessions(as_the_db_kept_them(&[&one]), now);
    assert!(again.verify(one.token.expose(), now).is_err());
    let writes = again.drain_session_writes();
    assert!(
        matches!(writes.as_slice(), [SessionWrite::Upsert(a), SessionWrite::Upsert(b)]
            if a.jti == one.session.jti && a.revoked_at.is_some() && b.jti == two.session.jti),
        "{writes:?}"
    );
}

#[tokio::test]
async fn the_spool_holds_what_is_being_written_and_goes_once_the_db_has_it_all() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = {
        let (auth, _) = Auth::open(with_spool(tmp.path())).unwrap();
        let pw = initial_password(&auth);
        (auth, pw)
    };
    let path = tmp.path().join("state").join(spool::SPOOL_FILE);
    let a = ip("192.168.1.2");
    let now = Now::current();
    let one = auth.login("admin", &pw, a, None, now).await.unwrap();
    let two = auth.login("admin", &pw, a, None, now).await.unwrap();
    // A healthy DB: nothing is written to disk.
    auth.sync_spool(SpoolSync::Tidy).unwrap();
    assert!(!path.exists());

    // The persister takes the queue; while it writes, a logout comes in.
    let in_flight = auth.drain_session_writes();
    assert_eq!(in_flight.len(), 2);
    auth.logout(&two.session.jti, Some(a), now);
    let on_disk = spool::SessionSpool::new(path.clone()).load().unwrap();
    assert_eq!(on_disk.len(), 3, "both logins and the logout: {on_disk:?}");

    // The DB took the first batch: the spool keeps only the logout ...
    auth.session_writes_persisted();
    auth.sync_spool(SpoolSync::Tidy).unwrap();
    let on_disk = spool::SessionSpool::new(path.clone()).load().unwrap();
    assert!(
        matches!(on_disk.as_slice(), [SessionWrite::Upsert(r)] if r.jti == two.session.jti),
        "{on_disk:?}"
    );
    // ... and goes when the DB has that too.
    auth.drain_session_writes();
    auth.session_writes_persisted();
    auth.sync_spool(SpoolSync::Tidy).unwrap();
    assert!(!path.exists());

    // A failed DB write puts the batch back; the spool keeps it meanwhile.
    auth.verify(one.token.expose(), now).unwrap();
    let batch = auth.drain_session_writes();
    auth.restore_session_writes(batch);
    auth.sync_spool(SpoolSync::Always).unwrap();
    assert_eq!(spool::SessionSpool::new(path).load().unwrap().len(), 1);
}

#[tokio::test]
async fn a_corrupt_spool_or_mark_is_survived_by_revoking_every_earlier_session() {
    let tmp = tempfile::tempdir().unwrap();
    let (auth, pw) = {
        let (auth, _) = Auth::open(with_spool(tmp.path())).unwrap();
        let pw = initial_password(&auth);
        (auth, pw)
    };
    let a = ip("192.168.1.2");
    let now = Now::current();
    let old = auth.login("admin", &pw, a, None, now).await.unwrap();
    let secrets = auth.secrets().clone();
    drop(auth);

    let spool_path = tmp.path().join("state").join(spool::SPOOL_FILE);
    std::fs::create_dir_all(spool_path.parent().unwrap()).unwrap();
    std::fs::write(&spool_path, "{\"version\":1,\"writes\":[{\"ups").unwrap();
    let (again, _) = Auth::open(with_spool(tmp.path())).unwrap();
    again.load_sessions(as_the_db_kept_them(&[&old]), now);
    assert_eq!(
        again.verify(old.token.expose(), now).unwrap_err(),
        TokenError::Revoked
    );
    let later = Now::current();
    let fresh = again.login("admin", &pw, a, None, later).await.unwrap();
    again.verify(fresh.token.expose(), later).unwrap();
    // The revocation is on disk: it holds after another restart.
    assert!(
        secrets
            .read_revocation_mark()
            .unwrap()
            .all_through
            .is_some()
    );
    drop(again);

    std::fs::write(secrets.revocation_mark_path(), "garbage").unwrap();
    let (third, _) = Auth::open(cfg(tmp.path(), FAST)).unwrap();
    third.load_sessions(as_the_db_kept_them(&[&fresh]), later);
    assert!(third.verify(fresh.token.expose(), later).is_err());
    assert!(secrets.read_revocation_mark().is_ok(), "rewritten");
}
