//! Admin authentication through the HTTP API: the router in-process with
//! `ConnectInfo` injected (so client addresses are real to the guard, the
//! lockout and the rate limiter), and the real binary against a private
//! PostgreSQL that the test stops and starts.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use arasuld::config::Config;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};

const NEW_PASSWORD: &str = "Brand-New-Passw0rd!";

/// The router over a fresh secrets dir (cheap argon2), the DB unreachable.
struct App(common::App);

impl std::ops::Deref for App {
    type Target = common::App;
    fn deref(&self) -> &common::App {
        &self.0
    }
}

impl App {
    fn new() -> App {
        Self::with_config(|_| {})
    }

    fn with_config(f: impl FnOnce(&mut Config)) -> App {
        App(common::App::new(|_, config| f(config)))
    }

    fn jwt_key(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("secrets/jwt.key")).unwrap()
    }

    async fn send(&self, req: Request<Body>, ip: &str) -> (StatusCode, HeaderMap, Value) {
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        self.0.send_from(req, addr).await
    }

    async fn login(&self, password: &str, ip: &str) -> (StatusCode, HeaderMap, Value) {
        self.send(
            post_json(
                "/api/auth/login",
                &json!({"username": "admin", "password": password}),
            ),
            ip,
        )
        .await
    }

    /// Logs in with the initial password and changes it; returns the token.
    async fn ready_token(&self, ip: &str) -> String {
        let addr: SocketAddr = format!("{ip}:40000").parse().unwrap();
        self.0.ready_token(NEW_PASSWORD, Some(addr)).await
    }
}

fn post_json(uri: &str, body: &Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn with_bearer(mut req: Request<Body>, token: &str) -> Request<Body> {
    req.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {token}").parse().unwrap(),
    );
    req
}

fn assert_envelope(v: &Value, code: &str) {
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A JWT with any header and claims, HMAC-SHA256-signed with `key`
/// (or unsigned when `key` is None).
fn forge(header: &Value, claims: &Value, key: Option<&[u8]>) -> String {
    let input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = match key {
        Some(k) => {
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k);
            b64url(ring::hmac::sign(&k, input.as_bytes()).as_ref())
        }
        None => String::new(),
    };
    format!("{input}.{sig}")
}

fn claims_for(jti: &str) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "iss": "arasuld", "aud": "arasuld-admin", "sub": "admin",
        "iat": now, "nbf": now, "exp": now + 3600, "jti": jti, "typ": "access",
    })
}

/// (method, path) of every operation in the served OpenAPI document whose
/// security has no anonymous alternative: the admin routes.
async fn admin_operations(app: &App) -> Vec<(Method, String)> {
    let (s, _, doc) = app.send(get("/api/openapi.json"), "10.9.9.9").await;
    assert_eq!(s, StatusCode::OK);
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(sec) = op["security"].as_array() else {
                continue;
            };
            let anonymous_ok = sec
                .iter()
                .any(|r| r.as_object().is_some_and(|o| o.is_empty()));
            if !anonymous_ok {
                let concrete = path.replace(['{', '}'], "");
                ops.push((method.to_uppercase().parse().unwrap(), concrete));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_admin_route_refuses_missing_expired_forged_and_revoked_tokens() {
    let app = App::new();
    let token = app.ready_token("192.168.1.10").await;
    let key = app.jwt_key();
    let (_, _, me) = app
        .send(with_bearer(get("/api/auth/me"), &token), "192.168.1.10")
        .await;
    let jti = me["session"]["jti"].as_str().unwrap().to_owned();

    // A second live session, then revoked: its token is well-formed and signed.
    let (_, _, v) = app.login(NEW_PASSWORD, "192.168.1.11").await;
    let revoked = v["token"].as_str().unwrap().to_owned();
    let (s, _, _) = app
        .send(
            with_bearer(
                Request::post("/api/auth/logout")
                    .body(Body::empty())
                    .unwrap(),
                &revoked,
            ),
            "192.168.1.11",
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let hs = json!({"alg": "HS256", "typ": "JWT"});
    // Control: a hand-made token with the live jti passes, so each forgery
    // below fails only for its one defect.
    let control = forge(&hs, &claims_for(&jti), Some(&key));
    let (s, _, v) = app
        .send(with_bearer(get("/api/auth/me"), &control), "10.0.0.1")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    let mut expired = claims_for(&jti);
    let past = chrono::Utc::now().timestamp() - 2 * 3600;
    expired["iat"] = past.into();
    expired["nbf"] = past.into();
    expired["exp"] = (past + 3600).into();
    let mut wrong_aud = claims_for(&jti);
    wrong_aud["aud"] = "someone-else".into();
    let mut wrong_typ = claims_for(&jti);
    wrong_typ["typ"] = "refresh".into();
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 2;
    flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();

    let bad: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("expired", Some(forge(&hs, &expired, Some(&key)))),
        (
            "alg none",
            Some(forge(
                &json!({"alg": "none", "typ": "JWT"}),
                &claims_for(&jti),
                None,
            )),
        ),
        (
            "RS256 header, HMAC signature with the shared key",
            Some(forge(
                &json!({"alg": "RS256", "typ": "JWT"}),
                &claims_for(&jti),
                Some(&key),
            )),
        ),
        (
            "HS384 with the right key",
            Some(forge(
                &json!({"alg": "HS384", "typ": "JWT"}),
                &claims_for(&jti),
                Some(&key),
            )),
        ),
        ("wrong aud", Some(forge(&hs, &wrong_aud, Some(&key)))),
        ("wrong typ", Some(forge(&hs, &wrong_typ, Some(&key)))),
        ("flipped signature byte", Some(flipped)),
        ("revoked jti", Some(revoked)),
        (
            "another key",
            Some(forge(&hs, &claims_for(&jti), Some(&[1u8; 64]))),
        ),
    ];

    let ops = admin_operations(&app).await;
    for must in [
        "/api/database/pool",
        "/api/system/reload-config",
        "/api/system/workers",
        "/api/auth/me",
        "/api/auth/logout",
        "/api/auth/logout-all",
        "/api/auth/sessions",
        "/api/auth/change-password",
        "/api/auth/verify",
    ] {
        assert!(
            ops.iter().any(|(_, p)| p == must),
            "{must} is not documented as admin"
        );
    }
    for public in [
        "/api/auth/login",
        "/api/auth/password-requirements",
        "/api/health",
    ] {
        assert!(
            !ops.iter().any(|(_, p)| p == public),
            "{public} must stay public"
        );
    }
    let mut n = 0u32;
    for (method, path) in &ops {
        for (what, tok) in &bad {
            n += 1;
            // A new source each time, so the API rate limit never answers first.
            let ip = format!("10.1.{}.{}", n / 250, n % 250 + 1);
            let mut req = Request::builder()
                .method(method.clone())
                .uri(path.as_str())
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from("{}"))
                .unwrap();
            if let Some(t) = tok {
                req = with_bearer(req, t);
            }
            let (s, h, v) = app.send(req, &ip).await;
            assert_eq!(
                s,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}: {v}"
            );
            assert_envelope(&v, "unauthorized");
            assert!(h.contains_key(header::WWW_AUTHENTICATE));
        }
    }
    // The live session survived all of that.
    let (s, _, _) = app
        .send(with_bearer(get("/api/auth/me"), &token), "192.168.1.10")
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn first_login_must_change_the_password_before_anything_else() {
    let app = App::new();
    let ip = "192.168.1.20";
    let initial = app.initial_password();
    let (s, h, v) = app.login(&initial, ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["must_change_password"], true);
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(h[header::CACHE_CONTROL], "no-store");
    let token = v["token"].as_str().unwrap().to_owned();

    for uri in [
        "/api/auth/sessions",
        "/api/database/pool",
        "/api/system/workers",
        "/api/auth/verify",
    ] {
        let (s, _, v) = app.send(with_bearer(get(uri), &token), ip).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{uri}");
        assert_envelope(&v, "password_change_required");
    }
    let (s, _, v) = app.send(with_bearer(get("/api/auth/me"), &token), ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["must_change_password"], true);
    assert_eq!(v["username"], "admin");

    // The policy is enforced, and says why.
    let weak = post_json(
        "/api/auth/change-password",
        &json!({"current_password": app.initial_password(), "new_password": "short"}),
    );
    let (s, _, v) = app.send(with_bearer(weak, &token), ip).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_envelope(&v, "password_policy");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at least 12")
    );

    let wrong = post_json(
        "/api/auth/change-password",
        &json!({"current_password": "not-it", "new_password": NEW_PASSWORD}),
    );
    let (s, _, v) = app.send(with_bearer(wrong, &token), ip).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_envelope(&v, "wrong_current_password");

    let good = post_json(
        "/api/auth/change-password",
        &json!({"current_password": app.initial_password(), "new_password": NEW_PASSWORD}),
    );
    let (s, _, v) = app.send(with_bearer(good, &token), ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(
        !app.dir
            .path()
            .join("secrets/initial-admin-password")
            .exists()
    );

    let (s, _, v) = app
        .send(with_bearer(get("/api/auth/sessions"), &token), ip)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["sessions"].as_array().unwrap().len(), 1);
    let (s, h, v) = app
        .send(with_bearer(get("/api/auth/verify"), &token), ip)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-auth-user"], "admin");
    assert_eq!(v["user"], "admin");
    let (s, _, _) = app
        .send(with_bearer(get("/api/database/pool"), &token), ip)
        .await;
    assert_eq!(s, StatusCode::OK);
    // The old password is gone.
    let (s, _, _) = app.login(&initial, "192.168.1.21").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn dashboard_cookie_needs_the_csrf_header_on_state_changing_requests() {
    let app = App::new();
    let ip = "192.168.1.30";
    app.ready_token(ip).await;
    let (s, h, v) = app.login(NEW_PASSWORD, ip).await;
    assert_eq!(s, StatusCode::OK);
    let cookies: Vec<&str> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("arasul_session="))
        .unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=86400"] {
        assert!(session.contains(attr), "{session} lacks {attr}");
    }
    assert!(!session.contains("Secure"), "plain HTTP: no Secure flag");
    let csrf_cookie = cookies
        .iter()
        .find(|c| c.starts_with("arasul_csrf="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly"));
    let csrf = v["csrf_token"].as_str().unwrap();
    assert!(csrf_cookie.contains(csrf));
    let token = v["token"].as_str().unwrap();
    let cookie = format!("arasul_session={token}; arasul_csrf={csrf}");

    let with_cookie = |mut r: Request<Body>| {
        r.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        r
    };
    let (s, _, v) = app.send(with_cookie(get("/api/auth/me")), ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["auth_method"], "cookie");
    let (s, h, _) = app.send(with_cookie(get("/api/auth/verify")), ip).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-auth-user"], "admin");

    let post = || {
        Request::post("/api/auth/logout")
            .body(Body::empty())
            .unwrap()
    };
    let (s, _, v) = app.send(with_cookie(post()), ip).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_envelope(&v, "csrf_failed");
    let mut wrong = with_cookie(post());
    wrong
        .headers_mut()
        .insert("x-csrf-token", "0".repeat(48).parse().unwrap());
    let (s, _, _) = app.send(wrong, ip).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let mut right = with_cookie(post());
    right
        .headers_mut()
        .insert("x-csrf-token", csrf.parse().unwrap());
    let (s, h, v) = app.send(right, ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["revoked"], 1);
    let cleared: Vec<&str> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    assert!(
        cleared
            .iter()
            .any(|c| c.starts_with("arasul_session=;") && c.contains("Max-Age=0"))
    );
    let (s, _, _) = app.send(with_cookie(get("/api/auth/verify")), ip).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// Five failed logins as `user` from `ip`, straight at the auth core (the
/// HTTP rate limiter would stop a sixth request before the lockout is seen).
async fn lock_out(app: &App, user: &str, ip: &str) {
    for _ in 0..5 {
        app.state
            .auth
            .login(
                user,
                "guess",
                ip.parse().unwrap(),
                None,
                arasuld::auth::Now::current(),
            )
            .await
            .unwrap_err();
    }
}

#[tokio::test(start_paused = true)]
async fn locked_source_gets_429_while_the_admin_logs_in_from_another_address() {
    let app = App::new();
    let attacker = "198.51.100.7";
    let home = "192.168.1.40";
    let pw = app.initial_password();
    lock_out(&app, "admin", attacker).await;
    let (s_wrong, _, wrong) = app.login("wrong", "203.0.113.1").await;
    assert_eq!(s_wrong, StatusCode::UNAUTHORIZED);
    assert_envelope(&wrong, "invalid_credentials");

    // The locked source: even the right password is refused.
    let (s, h, v) = app.login(&pw, attacker).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_envelope(&v, "too_many_attempts");
    assert_eq!(h[header::RETRY_AFTER], "60");

    // The real admin, elsewhere, is not locked out.
    let (s, _, v) = app.login(&pw, home).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The lock runs out on the (paused) clock.
    tokio::time::advance(Duration::from_secs(61)).await;
    let (s, _, v) = app.login(&pw, attacker).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// A locked source is told so, and for how long, in words that are the same
/// whether the user name exists or not (the lock is checked before the name
/// is looked at); login and change-password alike.
#[tokio::test(start_paused = true)]
async fn locked_source_is_told_it_is_locked_and_when_to_retry_whatever_the_user_name() {
    let app = App::new();
    let attacker = "198.51.100.8";
    let pw = app.initial_password();
    lock_out(&app, "nobody", attacker).await;
    let (_, _, invalid) = app.login("wrong", "203.0.113.2").await;
    let mut messages = Vec::new();
    for user in ["admin", "nobody"] {
        let (s, h, v) = app
            .send(
                post_json(
                    "/api/auth/login",
                    &json!({"username": user, "password": pw}),
                ),
                attacker,
            )
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{user}: {v}");
        assert_envelope(&v, "too_many_attempts");
        assert_eq!(h[header::RETRY_AFTER], "60");
        messages.push(v["error"]["message"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        messages[0], messages[1],
        "the message tells the user names apart"
    );
    let m = &messages[0];
    assert_ne!(m, invalid["error"]["message"].as_str().unwrap());
    assert!(m.contains("locked") && m.contains("60 s"), "{m}");

    // Change-password: five wrong current passwords lock the caller's address.
    let home = "192.168.1.41";
    let token = app.ready_token(home).await;
    let change = || {
        with_bearer(
            post_json(
                "/api/auth/change-password",
                &json!({"current_password": "not-it", "new_password": "Another-Passw0rd!"}),
            ),
            &token,
        )
    };
    for _ in 0..5 {
        let (s, _, v) = app.send(change(), home).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    }
    let (s, h, v) = app.send(change(), home).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_envelope(&v, "too_many_attempts");
    assert_eq!(h[header::RETRY_AFTER], "60");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("locked") && m.contains("60 s"), "{m}");
}

#[tokio::test(start_paused = true)]
async fn login_rate_limit_is_five_per_fifteen_minutes_per_address() {
    let app = App::new();
    let ip = "203.0.113.50";
    for i in 0..5 {
        let (s, _, v) = app.login("wrong", ip).await;
        assert!(
            s == StatusCode::UNAUTHORIZED || s == StatusCode::TOO_MANY_REQUESTS,
            "attempt {i}: {s} {v}"
        );
    }
    let (s, h, v) = app.login(&app.initial_password(), ip).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_envelope(&v, "rate_limited");
    let retry: u64 = h[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!((170..=180).contains(&retry), "Retry-After {retry}");
    // Other addresses and other routes are unaffected.
    let (s, _, _) = app.login(&app.initial_password(), "203.0.113.51").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = app.send(get("/api/health"), ip).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn other_api_routes_allow_a_burst_of_fifty_then_answer_429() {
    let app = App::new();
    let ip = "203.0.113.60";
    // All at once: the limiter sees them within microseconds, so the
    // 100/s refill cannot hide the burst limit however slow the machine is.
    let results = futures::future::join_all(
        (0..120).map(|_| app.send(get("/api/auth/password-requirements"), ip)),
    )
    .await;
    let ok = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    let limited: Vec<_> = results
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(ok + limited.len(), 120);
    assert!((50..=55).contains(&ok), "{ok} let through");
    let (_, h, v) = limited[0];
    assert_envelope(v, "rate_limited");
    assert_eq!(h[header::RETRY_AFTER], "1");
    // Another address has its own quota.
    let (s, _, _) = app
        .send(get("/api/auth/password-requirements"), "203.0.113.61")
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_bodies_get_413_415_and_400_in_the_envelope() {
    let app = App::with_config(|c| c.http.body_limit_bytes = 1024);
    let ip = "192.168.1.50";
    let big = json!({"username": "admin", "password": "x".repeat(4096)});
    let (s, _, v) = app.send(post_json("/api/auth/login", &big), ip).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_envelope(&v, "payload_too_large");

    let text = Request::post("/api/auth/login")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from("admin:secret"))
        .unwrap();
    let (s, _, v) = app.send(text, ip).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_envelope(&v, "unsupported_media_type");

    let broken = Request::post("/api/auth/login")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from("{\"username\": \"admin\", "))
        .unwrap();
    let (s, _, v) = app.send(broken, ip).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_envelope(&v, "malformed_json");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = App::new();
    for uri in ["/", "/api/health", "/api/nope", "/api/auth/me"] {
        let (_, h, _) = app.send(get(uri), "192.168.1.60").await;
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{uri}");
        assert_eq!(h["x-frame-options"], "DENY", "{uri}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{uri}: {csp}");
    }
    let (_, h, _) = app.send(get("/"), "192.168.1.60").await;
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(
        csp.contains("script-src 'self' 'sha256-"),
        "inline module script allowed by hash: {csp}"
    );
    // Revalidation (304) must not replace the page's CSP with a generic one.
    let mut again = get("/");
    again
        .headers_mut()
        .insert(header::IF_NONE_MATCH, h[header::ETAG].clone());
    let (s, h, _) = app.send(again, "192.168.1.60").await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
}

#[tokio::test]
async fn status_switch_makes_status_routes_need_a_login() {
    // Public by default ...
    let app = App::new();
    let (s, _, _) = app
        .send(get("/api/auth/password-requirements"), "192.168.1.70")
        .await;
    assert_eq!(s, StatusCode::OK);
    // ... and the status routes follow the config switch.
    let app = App::with_config(|c| c.http.require_auth_for_status = true);
    let (s, _, _) = app.send(get("/api/services"), "192.168.1.71").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let token = app.ready_token("192.168.1.71").await;
    let (s, _, v) = app
        .send(with_bearer(get("/api/services"), &token), "192.168.1.71")
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_metrics_key_reads_the_status_routes_when_they_need_a_login_and_nothing_else() {
    use arasuld::auth::keys::{self, ApiKey, Scope};
    let app = App::with_config(|c| c.http.require_auth_for_status = true);
    let key = |scopes: &[Scope]| {
        let k = keys::generate();
        app.state.keys.insert(
            k.hash,
            ApiKey {
                id: scopes.len() as i64,
                name: "prometheus".into(),
                scopes: scopes.to_vec(),
                hint: k.hint.clone(),
                created_at: chrono::Utc::now(),
                expires_at: None,
                last_used_at: None,
            },
        );
        k.secret
    };
    let metrics = key(&[Scope::Metrics]);
    let llm = key(&[Scope::Llm, Scope::Embeddings]);
    let ip = "192.168.1.72";
    for path in ["/metrics", "/api/system/status", "/api/services"] {
        let (s, _, v) = app.send(with_bearer(get(path), &metrics), ip).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        let (s, _, v) = app.send(with_bearer(get(path), &llm), ip).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {v}");
        assert_eq!(v["error"]["code"], "insufficient_scope");
    }
    // Not an admin key: the admin routes stay shut, the session routes too.
    for path in ["/api/system/workers", "/api/keys", "/api/auth/me"] {
        let (s, _, v) = app.send(with_bearer(get(path), &metrics), ip).await;
        assert!(
            s == StatusCode::FORBIDDEN || s == StatusCode::UNAUTHORIZED,
            "{path}: {s} {v}"
        );
    }
    // A key that is not known is 401 with the challenge.
    let (s, h, _) = app
        .send(
            with_bearer(get("/metrics"), &format!("ak_{}", "x".repeat(43))),
            ip,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(h.contains_key(header::WWW_AUTHENTICATE));
}

// --- The HTTP edge (issue 13): what a LAN host or another site's page can do.

/// `app.send` from a full socket address (IPv6 needs the brackets).
async fn send_from(app: &App, req: Request<Body>, addr: &str) -> (StatusCode, HeaderMap, Value) {
    app.0.send_from(req, addr.parse().unwrap()).await
}

fn login_request(password: &str) -> Request<Body> {
    post_json(
        "/api/auth/login",
        &json!({"username": "admin", "password": password}),
    )
}

#[tokio::test(start_paused = true)]
async fn junk_login_posts_from_another_page_do_not_burn_the_login_quota() {
    let app = App::new();
    let ip = "192.168.1.77";
    // What a `no-cors` form or fetch on any web page can send: text/plain.
    for _ in 0..5 {
        let req = Request::post("/api/auth/login")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("x"))
            .unwrap();
        let (s, _, v) = app.send(req, ip).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{v}");
    }
    let (s, _, v) = app.login(&app.initial_password(), ip).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the admin's login after five junk posts: {v}"
    );
}

#[tokio::test]
async fn state_changing_requests_from_another_origin_are_refused() {
    let app = App::new();
    let ip = "192.168.1.78";
    let with_origin = |origin: &str| {
        let mut r = login_request(&app.initial_password());
        r.headers_mut()
            .insert(header::HOST, "arasul.local".parse().unwrap());
        r.headers_mut()
            .insert(header::ORIGIN, origin.parse().unwrap());
        r
    };
    for origin in ["http://evil.example", "null", "http://arasul.local:5678"] {
        let (s, _, v) = app.send(with_origin(origin), ip).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{origin}: {v}");
        assert_envelope(&v, "cross_origin");
    }
    // Nothing was counted: the box's own page and a client without Origin
    // (curl, scripts) still log in.
    let (s, _, v) = app.send(with_origin("http://arasul.local"), ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, _, v) = app.login(&app.initial_password(), ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_session_cookie_covers_the_origin_and_logout_clears_the_old_api_scope_too() {
    let app = App::new();
    let ip = "192.168.1.79";
    let (s, h, v) = app.login(&app.initial_password(), ip).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let cookies: Vec<&str> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("arasul_session="))
        .unwrap();
    // The whole origin: the front door's apps (/n8n/, /minio/) are let in by it.
    assert!(session.contains("; Path=/;"), "{session}");
    let csrf = cookies
        .iter()
        .find(|c| c.starts_with("arasul_csrf="))
        .unwrap();
    assert!(csrf.contains("; Path=/;"), "the dashboard reads it: {csrf}");

    // Logout clears both scopes of the session cookie (older versions set `/api`).
    let token = v["token"].as_str().unwrap();
    let req = with_bearer(
        Request::post("/api/auth/logout")
            .body(Body::empty())
            .unwrap(),
        token,
    );
    let (s, h, _) = app.send(req, ip).await;
    assert_eq!(s, StatusCode::OK);
    let cleared: Vec<&str> = h
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| c.to_str().unwrap())
        .filter(|c| c.starts_with("arasul_session=;"))
        .collect();
    assert!(
        cleared.iter().any(|c| c.contains("Path=/api;")),
        "{cleared:?}"
    );
    assert!(cleared.iter().any(|c| c.contains("Path=/;")), "{cleared:?}");
}

#[tokio::test(start_paused = true)]
async fn one_ipv6_host_guessing_does_not_lock_out_its_lan_neighbours() {
    let app = App::new();
    let pw = app.initial_password();
    // A phone on the LAN (SLAAC: its own address in the shared /64) guesses
    // five times: its login quota and its lockout are spent ...
    for _ in 0..5 {
        let (s, _, v) = send_from(&app, login_request("guess"), "[fd00:1:2:3::bad]:5000").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    }
    let (s, _, v) = send_from(&app, login_request(&pw), "[fd00:1:2:3::bad]:5000").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    // ... and the admin's laptop in the same /64, link-local or unique-local,
    // logs in.
    for laptop in ["[fd00:1:2:3::10]:5000", "[fe80::10]:5000"] {
        let (s, _, v) = send_from(&app, login_request(&pw), laptop).await;
        assert_eq!(s, StatusCode::OK, "{laptop}: {v}");
    }
}

#[tokio::test]
async fn exempt_clients_are_never_limited_and_forwarded_for_needs_a_trusted_proxy() {
    let app = App::with_config(|c| {
        c.http.rate_limit_exempt = vec!["127.0.0.0/8".parse().unwrap()];
        c.http.trusted_proxies = vec!["10.0.0.1".parse().unwrap()];
        c.http.rate_limits.api = arasuld::net::RateQuota::new(3, Duration::from_secs(60), 3);
    });
    let results =
        futures::future::join_all((0..500).map(|_| app.send(get("/api/health"), "127.0.0.1")))
            .await;
    assert!(results.iter().all(|(s, _, _)| *s == StatusCode::OK));

    let forwarded = |from: &str| {
        let mut r = get("/api/health");
        r.headers_mut()
            .insert("x-forwarded-for", from.parse().unwrap());
        r
    };
    // An untrusted peer cannot claim to be an exempt client ...
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.send(forwarded("127.0.0.1"), "192.0.2.50").await.0);
    }
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    // ... while the trusted proxy's clients are told apart by the header.
    for client in ["192.0.2.60", "192.0.2.61"] {
        for i in 0..3 {
            let (s, _, _) = app.send(forwarded(client), "10.0.0.1").await;
            assert_eq!(s, StatusCode::OK, "{client} request {i}");
        }
        let (s, _, _) = app.send(forwarded(client), "10.0.0.1").await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{client}'s fourth");
    }
}

#[tokio::test]
async fn bad_query_strings_are_answered_in_the_error_envelope() {
    let app = App::new();
    let ip = "192.168.1.90";
    let token = app.ready_token(ip).await;
    for (uri, code) in [
        ("/api/metrics/history?points=many", "invalid_parameters"),
        ("/api/metrics/history?from=yesterday", "invalid_parameters"),
        ("/api/self-healing/events?limit=x", "invalid_parameters"),
        ("/api/self-healing/events?limit=0", "invalid_limit"),
        (
            "/api/self-healing/recovery-actions?offset=-1",
            "invalid_offset",
        ),
        ("/api/update/history?limit=501", "invalid_limit"),
        ("/api/update/history?offset=ten", "invalid_parameters"),
        ("/api/services/llm/logs?tail=lots", "invalid_parameters"),
        (
            "/api/workflows/history?status=sleeping",
            "invalid_parameters",
        ),
    ] {
        let (s, h, v) = app.send(with_bearer(get(uri), &token), ip).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{uri}: {v}");
        assert_eq!(h[header::CONTENT_TYPE], "application/json", "{uri}");
        assert_envelope(&v, code);
    }
}

/// The same edge on the real binary over real sockets: junk posts do not
/// spend the login quota, another site's page cannot log the admin out, the
/// session cookie is scoped to `/api`, and an exempt range is never limited
/// while its neighbour is.
#[test]
fn the_daemon_edge_over_real_sockets() {
    use common::*;
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "");
    let notify = NotifySocket::new();
    let _d = Daemon::start(
        &cfg.path(),
        &[
            ("NOTIFY_SOCKET", notify.path.to_str().unwrap()),
            ("ARASUL_HTTP__RATE_LIMIT_EXEMPT", "[127.0.0.2/32]"),
        ],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let token = admin_token(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client_from = |ip: &str| {
        reqwest::Client::builder()
            .local_address(ip.parse::<std::net::IpAddr>().unwrap())
            .build()
            .unwrap()
    };
    let local = client_from("127.0.0.1");
    rt.block_on(async {
        // Four junk posts (admin_token spent one login): 415 each ...
        for _ in 0..4 {
            let r = local
                .post(cfg.url("/api/auth/login"))
                .header("content-type", "text/plain")
                .body("x")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 415);
        }
        // ... and the admin still logs in, with a cookie only the API gets.
        let r = local
            .post(cfg.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": common::TEST_ADMIN_PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|c| c.to_str().unwrap().to_owned())
            .find(|c| c.starts_with("arasul_session="))
            .unwrap();
        assert!(session.contains("; Path=/;"), "{session}");

        // Another site's page cannot log everyone out.
        let r = local
            .post(cfg.url("/api/auth/logout-all"))
            .bearer_auth(&token)
            .header("origin", "http://evil.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        let r = local
            .get(cfg.url("/api/auth/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "the token survived");

        // 32 at a time against /api/health: the exempt address gets no 429,
        // its neighbour does (burst 50).
        let flood = |client: reqwest::Client| {
            let url = cfg.url("/api/health");
            async move {
                let mut tasks = tokio::task::JoinSet::new();
                for _ in 0..32 {
                    let (c, url) = (client.clone(), url.clone());
                    tasks.spawn(async move {
                        let mut limited = 0;
                        for _ in 0..10 {
                            let s = c.get(&url).send().await.unwrap().status();
                            assert!(s == 200 || s == 429, "{s}");
                            limited += usize::from(s == 429);
                        }
                        limited
                    });
                }
                tasks.join_all().await.into_iter().sum::<usize>()
            }
        };
        assert_eq!(flood(client_from("127.0.0.2")).await, 0);
        assert!(flood(client_from("127.0.0.3")).await > 0);
    });
}

/// The real binary: clients that give up while argon2 checks their password
/// (`curl -m 0.05`; the daemon drops the handler mid-hash) leave nothing
/// behind: after many such attempts the right password still logs in from
/// that address.
#[test]
fn logins_abandoned_by_the_client_mid_hash_do_not_lock_the_address_out() {
    use common::*;
    let cfg = TestConfig::with_http(
        "postgres://nobody@127.0.0.1:1/x",
        // More logins than the default 5 per 15 min per address.
        "  rate_limits:\n    login: {count: 100, per: 1m, burst: 100}\n",
        "",
    );
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let pw = std::fs::read_to_string(cfg.dir.path().join("secrets/initial-admin-password"))
        .unwrap()
        .trim()
        .to_owned();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let login = |timeout: Duration| {
        rt.block_on(async {
            let r = client
                .post(cfg.url("/api/auth/login"))
                .json(&json!({"username": "admin", "password": pw}))
                .timeout(timeout)
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, reqwest::Error>((status, r.text().await?))
        })
    };

    // How long one login takes here (argon2 at the real cost).
    let started = std::time::Instant::now();
    let (status, _) = login(Duration::from_secs(20)).unwrap();
    assert_eq!(status, 200);
    let one = started.elapsed();
    assert!(
        one >= Duration::from_millis(6),
        "a login took {one:?}: too fast to cut one off mid-hash"
    );
    // Six sent whole and then cut off: the socket is closed a third of a
    // login's time after the request went out, so the daemon is hashing
    // (a raw socket, so the request is surely complete when it closes).
    let body = json!({"username": "admin", "password": pw}).to_string();
    let request = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..6 {
        use std::io::Write;
        let mut sock = std::net::TcpStream::connect(("127.0.0.1", cfg.port)).unwrap();
        sock.write_all(request.as_bytes()).unwrap();
        std::thread::sleep(one / 3);
        drop(sock);
        // The next one goes out only once this hash is over, so each is
        // abandoned on its own (at most 2 hash at a time).
        std::thread::sleep(one * 2);
    }
    let (status, body) = login(Duration::from_secs(20)).unwrap();
    assert_eq!(status, 200, "{body}");

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

/// The real binary: login, token checks and logout keep working while
/// PostgreSQL is stopped; sessions and the revocation reach it once it is back.
#[test]
fn login_logout_and_token_checks_work_with_postgres_stopped() {
    use common::*;
    let mut pg = PrivatePostgres::init(free_port());
    pg.start();
    let cfg = TestConfig::new(&pg.url(), "");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    assert!(
        d.log_contains("initial-admin-password"),
        "the log names the file"
    );
    let initial =
        std::fs::read_to_string(cfg.dir.path().join("secrets/initial-admin-password")).unwrap();
    assert!(
        !d.log_contains(initial.trim()),
        "the password itself is never logged"
    );
    let first = admin_token(&cfg);
    wait_until("database up", Duration::from_secs(30), || {
        let (_, p) = get_json_auth(&cfg.url("/api/database/pool"), &first)?;
        (p["up"] == true && p["migrated"] == true).then_some(())
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let login = |pw: &str| -> (u16, Value) {
        rt.block_on(async {
            let r = client
                .post(cfg.url("/api/auth/login"))
                .json(&json!({"username": "admin", "password": pw}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    };
    let post = |path: &str, token: &str| -> u16 {
        rt.block_on(async {
            client
                .post(cfg.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    let jti_of = |token: &str| -> String {
        let (s, me) = get_json_auth(&cfg.url("/api/auth/me"), token).unwrap();
        assert_eq!(s, 200, "{me}");
        me["session"]["jti"].as_str().unwrap().to_owned()
    };
    let first_jti = jti_of(&first);

    pg.stop();
    wait_until(
        "the daemon to see the outage",
        Duration::from_secs(20),
        || {
            let (_, p) = get_json_auth(&cfg.url("/api/database/pool"), &first)?;
            (p["up"] == false).then_some(())
        },
    );
    let (s, v) = login(TEST_ADMIN_PASSWORD);
    assert_eq!(s, 200, "login with the DB down: {v}");
    let second = v["token"].as_str().unwrap().to_owned();
    let second_jti = jti_of(&second);
    assert_eq!(
        get_json_auth(&cfg.url("/api/auth/verify"), &second)
            .unwrap()
            .0,
        200
    );
    assert_eq!(login("wrong-password").0, 401);
    assert_eq!(post("/api/auth/logout", &first), 200);
    assert_eq!(
        get_json_auth(&cfg.url("/api/auth/verify"), &first)
            .unwrap()
            .0,
        401
    );

    pg.start();
    let (rows, revoked): (i64, bool) = wait_until(
        "sessions and the revocation written to the DB",
        Duration::from_secs(60),
        || {
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&pg.url()).await.ok()?;
                let rows: i64 =
                    sqlx::query_scalar("SELECT count(*) FROM sessions WHERE jti = $1 OR jti = $2")
                        .bind(&first_jti)
                        .bind(&second_jti)
                        .fetch_one(&pool)
                        .await
                        .ok()?;
                let revoked: bool = sqlx::query_scalar(
                    "SELECT revoked_at IS NOT NULL FROM sessions WHERE jti = $1",
                )
                .bind(&first_jti)
                .fetch_optional(&pool)
                .await
                .ok()??;
                pool.close().await;
                (rows == 2 && revoked).then_some((rows, revoked))
            })
        },
    );
    assert_eq!((rows, revoked), (2, true));
    // The audit trail is flushed on its own path, after the sessions.
    let wanted = [
        "login_success",
        "password_change",
        "login_failure",
        "logout",
    ];
    wait_until(
        "login_success, password_change, login_failure and logout in the audit log",
        Duration::from_secs(30),
        || {
            let audit: Vec<String> = rt.block_on(async {
                let pool = sqlx::PgPool::connect(&pg.url()).await.ok()?;
                let rows = sqlx::query_scalar("SELECT action FROM audit_log ORDER BY id")
                    .fetch_all(&pool)
                    .await
                    .ok();
                pool.close().await;
                rows
            })?;
            eprintln!("audit log: {audit:?}");
            wanted
                .iter()
                .all(|w| audit.iter().any(|a| a == w))
                .then_some(())
        },
    );
    // Still valid after all that.
    assert_eq!(
        get_json_auth(&cfg.url("/api/auth/verify"), &second)
            .unwrap()
            .0,
        200
    );

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

/// `arasuld admin set-password`: stdin when it is not a terminal, the policy
/// applies, and a bad password changes nothing and exits non-zero.
#[test]
fn admin_set_password_reads_stdin_and_applies_the_policy() {
    use std::process::Command;
    let cfg = common::TestConfig::new("postgres://nobody@127.0.0.1:1/x", "");
    let run = |input: &str| {
        let out = common::with_stdin(
            Command::new(common::bin())
                .arg("--config")
                .arg(cfg.path())
                .args(["admin", "set-password"]),
            input.as_bytes(),
        );
        (out.status.code(), common::printed(&out))
    };
    let (code, out) = run("weak\n");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("at least 12 characters"), "{out}");
    assert!(out.contains("uppercase"), "{out}");

    let (code, out) = run("Set-By-Root-Passw0rd\n");
    assert_eq!(code, Some(0), "{out}");
    let secrets = cfg.dir.path().join("secrets");
    assert!(!secrets.join("initial-admin-password").exists());
    let hash = std::fs::read_to_string(secrets.join("admin.hash")).unwrap();
    assert!(hash.starts_with("$argon2id$"));
    assert!(!out.contains("Set-By-Root-Passw0rd"), "never echoed: {out}");
    // The same password again is refused by the history rule.
    let (code, out) = run("Set-By-Root-Passw0rd\n");
    assert_ne!(code, Some(0), "{out}");
}

/// `admin set-password` beside a running daemon: after SIGHUP the daemon
/// knows the new password and every old session is revoked.
#[test]
fn set_password_then_reload_revokes_sessions_of_the_running_daemon() {
    use common::*;
    use std::process::Command;
    let cfg = TestConfig::new("postgres://nobody@127.0.0.1:1/x", "");
    let notify = NotifySocket::new();
    let mut d = Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    let token = admin_token(&cfg);
    assert_eq!(
        get_json_auth(&cfg.url("/api/auth/verify"), &token)
            .unwrap()
            .0,
        200
    );

    let out = common::with_stdin(
        Command::new(bin())
            .arg("--config")
            .arg(cfg.path())
            .args(["admin", "set-password"]),
        b"Root-Reset-Passw0rd\n",
    );
    assert!(out.status.success(), "{}", common::printed(&out));

    d.signal(libc::SIGHUP);
    d.wait_for_log("every session revoked", Duration::from_secs(10));
    assert_eq!(
        get_json_auth(&cfg.url("/api/auth/verify"), &token)
            .unwrap()
            .0,
        401
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = |pw: &str| {
        rt.block_on(async {
            reqwest::Client::new()
                .post(cfg.url("/api/auth/login"))
                .json(&json!({"username": "admin", "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(status(TEST_ADMIN_PASSWORD), 401);
    assert_eq!(status("Root-Reset-Passw0rd"), 200);

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

/// Blocking HTTP against a running daemon, for the real-binary tests.
struct Http<'a> {
    cfg: &'a common::TestConfig,
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http<'_> {
    fn new(cfg: &common::TestConfig) -> Http<'_> {
        Http {
            cfg,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            // No kept-alive connections: they would outlive a killed daemon.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
        }
    }

    fn login(&self, password: &str) -> (u16, Value) {
        self.rt.block_on(async {
            let r = self
                .client
                .post(self.cfg.url("/api/auth/login"))
                .json(&json!({"username": "admin", "password": password}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
        })
    }

    fn token(&self, password: &str) -> String {
        let (s, v) = self.login(password);
        assert_eq!(s, 200, "login: {v}");
        v["token"].as_str().unwrap().to_owned()
    }

    fn post(&self, path: &str, token: &str) -> u16 {
        self.rt.block_on(async {
            let r = self.client.post(self.cfg.url(path)).bearer_auth(token);
            r.send().await.unwrap().status().as_u16()
        })
    }

    /// `GET /api/auth/verify`: 200 for a live token, 401 otherwise.
    fn verify(&self, token: &str) -> u16 {
        common::get_json_auth(&self.cfg.url("/api/auth/verify"), token)
            .unwrap()
            .0
    }

    fn jti(&self, token: &str) -> String {
        let (s, me) = common::get_json_auth(&self.cfg.url("/api/auth/me"), token).unwrap();
        assert_eq!(s, 200, "{me}");
        me["session"]["jti"].as_str().unwrap().to_owned()
    }

    fn wait_db(&self, token: &str, up: bool) {
        common::wait_until(
            &format!("the daemon to see the database up={up}"),
            Duration::from_secs(60),
            || {
                let (_, p) = common::get_json_auth(&self.cfg.url("/api/database/pool"), token)?;
                (p["up"] == up && (!up || p["migrated"] == true)).then_some(())
            },
        );
    }

    /// Waits until the `sessions` table holds `jti` in the given state.
    fn wait_row(&self, pg: &common::PrivatePostgres, jti: &str, revoked: bool) {
        common::wait_until(
            &format!("session {jti} in the database, revoked={revoked}"),
            Duration::from_secs(60),
            || {
                self.rt.block_on(async {
                    let pool = sqlx::PgPool::connect(&pg.url()).await.ok()?;
                    let row: Option<bool> = sqlx::query_scalar(
                        "SELECT revoked_at IS NOT NULL FROM sessions WHERE jti = $1",
                    )
                    .bind(jti)
                    .fetch_optional(&pool)
                    .await
                    .ok()?;
                    pool.close().await;
                    (row == Some(revoked)).then_some(())
                })
            },
        );
    }
}

/// The real binary on a private PostgreSQL, the admin password set
/// (`TEST_ADMIN_PASSWORD`); returns a token.
fn daemon_on_postgres() -> (
    common::PrivatePostgres,
    common::TestConfig,
    common::NotifySocket,
    common::Daemon,
    String,
) {
    let mut pg = common::PrivatePostgres::init(common::free_port());
    pg.start();
    let cfg = common::TestConfig::new(&pg.url(), "");
    let notify = common::NotifySocket::new();
    let d = start_daemon(&cfg, &notify);
    let token = common::admin_token(&cfg);
    (pg, cfg, notify, d, token)
}

fn start_daemon(cfg: &common::TestConfig, notify: &common::NotifySocket) -> common::Daemon {
    let d = common::Daemon::start(
        &cfg.path(),
        &[("NOTIFY_SOCKET", notify.path.to_str().unwrap())],
    );
    notify.wait_for("READY=1", Duration::from_secs(30));
    d
}

/// Kills the daemon without warning (no last flush) and starts it again.
fn crash_and_restart(
    d: common::Daemon,
    cfg: &common::TestConfig,
    notify: &common::NotifySocket,
) -> common::Daemon {
    d.signal(libc::SIGKILL);
    drop(d);
    start_daemon(cfg, notify)
}

/// The real binary: a logout-all made while PostgreSQL is down still holds
/// after the daemon is killed and PostgreSQL comes back with the old rows.
#[test]
fn logout_all_during_a_db_outage_holds_after_a_crash_and_the_db_coming_back() {
    let (mut pg, cfg, notify, d, token) = daemon_on_postgres();
    let http = Http::new(&cfg);
    http.wait_db(&token, true);
    http.wait_row(&pg, &http.jti(&token), false);

    pg.stop();
    http.wait_db(&token, false);
    assert_eq!(http.post("/api/auth/logout-all", &token), 200);
    assert_eq!(http.verify(&token), 401, "refused at once");

    let d = crash_and_restart(d, &cfg, &notify);
    pg.start();
    let fresh = http.token(common::TEST_ADMIN_PASSWORD);
    http.wait_db(&fresh, true);
    d.wait_for_log(
        "admin sessions loaded from the database",
        Duration::from_secs(30),
    );
    assert_eq!(
        http.verify(&token),
        401,
        "the live row must not bring it back"
    );
    assert_eq!(http.verify(&fresh), 200);
}

/// The real binary: a logout during a PostgreSQL outage and a login made
/// during it both hold after the daemon is killed, before and after
/// PostgreSQL comes back; the other tokens stay valid and the DB gets it all.
#[test]
fn logout_and_login_during_a_db_outage_hold_after_a_crash() {
    let (mut pg, cfg, notify, d, first) = daemon_on_postgres();
    let http = Http::new(&cfg);
    let second = http.token(common::TEST_ADMIN_PASSWORD);
    let (first_jti, second_jti) = (http.jti(&first), http.jti(&second));
    http.wait_db(&first, true);
    http.wait_row(&pg, &first_jti, false);
    http.wait_row(&pg, &second_jti, false);

    pg.stop();
    http.wait_db(&first, false);
    let third = http.token(common::TEST_ADMIN_PASSWORD);
    let third_jti = http.jti(&third);
    assert_eq!(http.post("/api/auth/logout", &first), 200);
    assert_eq!(http.verify(&first), 401);

    let mut d = crash_and_restart(d, &cfg, &notify);
    assert_eq!(http.verify(&first), 401);
    assert_eq!(http.verify(&third), 200, "the login made during the outage");

    pg.start();
    http.wait_db(&third, true);
    d.wait_for_log(
        "admin sessions loaded from the database",
        Duration::from_secs(30),
    );
    assert_eq!(
        http.verify(&first),
        401,
        "the live row must not bring it back"
    );
    assert_eq!(http.verify(&second), 200);
    assert_eq!(http.verify(&third), 200);
    http.wait_row(&pg, &first_jti, true);
    http.wait_row(&pg, &third_jti, false);
    let spool = cfg.dir.path().join("state/auth-session-spool.json");
    common::wait_until("the spool to go", Duration::from_secs(30), || {
        (!spool.exists()).then_some(())
    });

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

/// Runs `arasuld admin set-password` on the config's secrets dir.
fn set_password_from_the_box(cfg: &common::TestConfig, password: &str) {
    use std::process::Command;
    let out = common::with_stdin(
        Command::new(common::bin())
            .arg("--config")
            .arg(cfg.path())
            .args(["admin", "set-password"]),
        format!("{password}\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", common::printed(&out));
}

/// The real binary: `admin set-password` and then a restart (no reload in
/// between) revokes the old tokens, although their rows say they are live.
#[test]
fn set_password_then_a_restart_revokes_the_old_tokens() {
    let (pg, cfg, notify, mut d, token) = daemon_on_postgres();
    let http = Http::new(&cfg);
    http.wait_db(&token, true);
    http.wait_row(&pg, &http.jti(&token), false);

    set_password_from_the_box(&cfg, "Root-Reset-Passw0rd");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
    let mut d = start_daemon(&cfg, &notify);
    let fresh = http.token("Root-Reset-Passw0rd");
    http.wait_db(&fresh, true);
    d.wait_for_log(
        "admin sessions loaded from the database",
        Duration::from_secs(30),
    );
    assert_eq!(http.verify(&token), 401);
    assert_eq!(http.login(common::TEST_ADMIN_PASSWORD).0, 401);

    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}

/// The real binary: a spool or a revocation mark that cannot be parsed is
/// named in the log; the daemon serves, and the admin logs in.
#[test]
fn corrupt_spool_and_revocation_mark_are_logged_and_the_daemon_serves() {
    let cfg = common::TestConfig::new("postgres://nobody@127.0.0.1:1/x", "");
    let dir = cfg.dir.path();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/auth-session-spool.json"), "{\"vers").unwrap();
    std::fs::create_dir_all(dir.join("secrets")).unwrap();
    std::fs::write(dir.join("secrets/revoked-before.json"), "garbage").unwrap();
    let notify = common::NotifySocket::new();
    let mut d = start_daemon(&cfg, &notify);
    for needle in [
        "auth-session-spool.json is not a valid session spool",
        "revoked-before.json is not a valid revocation mark",
        "every session issued before now is revoked",
    ] {
        assert!(d.log_contains(needle), "no {needle:?} in the log");
    }
    let token = common::admin_token(&cfg);
    assert_eq!(Http::new(&cfg).verify(&token), 200);
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)).0.code(), Some(0));
}
