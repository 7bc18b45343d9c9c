//! Who may call what. Routes come in groups, and each group is wrapped here,
//! which both installs the check and documents it in the OpenAPI document:
//!
//! - `Admin { initial_ok: false }`: Bearer token or session cookie (+ CSRF
//!   header on state-changing cookie requests); 403 `password_change_required`
//!   while the generated initial password is in use.
//! - `Admin { initial_ok: true }`: the same, but usable with the initial
//!   password (`me`, `logout`, `change-password`).
//! - `Status`: public unless `http.require_auth_for_status` is true (read
//!   per request, so a reload applies at once); a logged-in caller is still
//!   recognised, and public bodies leave out what only the admin may see.
//!
//! Anything not put in a group is public. [`protect`] installs a group's
//! check with the state it needs (`from_fn_with_state`: no state, no
//! compile); [`describe`] only documents it, for `api::openapi`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder, path::Operation,
    security::SecurityRequirement,
};
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::limits::{RateLimits, rate_limited};
use crate::auth::keys::{self, Scope};
use crate::auth::{Now, Verified};
use crate::state::AppState;

/// HttpOnly cookie carrying the token for the dashboard and the apps behind
/// the front door, over plain HTTP (the proxy strips it before forwarding).
pub const SESSION_COOKIE: &str = "arasul_session";
/// The same over TLS: the `__Host-` prefix makes the browser insist on
/// `Secure`, `Path=/` and no `Domain`.
pub const SESSION_COOKIE_TLS: &str = "__Host-arasul_session";
/// Readable cookie carrying the CSRF token (double submit).
pub const CSRF_COOKIE: &str = "arasul_csrf";
/// Header the dashboard echoes the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Header `GET /api/auth/verify` sets for a forward-auth proxy.
pub const AUTH_USER_HEADER: &str = "x-auth-user";
/// Names of the security schemes in the OpenAPI document.
pub const BEARER_SCHEME: &str = "bearer";
pub const COOKIE_SCHEME: &str = "session_cookie";

/// The caller's verified session, put in the request extensions by the guard.
#[derive(Debug, Clone)]
pub struct AdminSession {
    pub verified: Verified,
    /// True when the token came from the cookie (not `Authorization`).
    pub via_cookie: bool,
    pub ip: IpAddr,
}

/// `Option<AdminSession>`: who is logged in on a route that does not require it.
impl<S: Send + Sync> OptionalFromRequestParts<S> for AdminSession {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<Option<Self>, std::convert::Infallible> {
        Ok(parts.extensions.get::<AdminSession>().cloned())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AdminSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        if let Some(s) = parts.extensions.get::<AdminSession>() {
            return Ok(s.clone());
        }
        Err(if parts.extensions.get::<KeyCaller>().is_some() {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "session_required",
                "this route acts on an admin session: log in (an API key has none)",
            )
        } else {
            unauthorized()
        })
    }
}

/// The client's address as the edge middleware resolved it (the peer, or
/// what a trusted proxy forwarded: `api::limits::edge`).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

/// The peer address as the listener saw it. Without `ConnectInfo`
/// (in-process tests) it is 0.0.0.0.
pub fn peer_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The client's address: what the edge resolved, else the peer.
pub fn client_ip(extensions: &axum::http::Extensions) -> IpAddr {
    extensions
        .get::<ClientAddr>()
        .map(|c| c.0)
        .unwrap_or_else(|| peer_ip(extensions))
}

/// The CSRF token bound to a session token: unguessable without the token
/// (HttpOnly, so page scripts of another origin never see it), stateless.
pub fn csrf_token_for(token: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"arasuld-csrf-v1\0");
    ctx.update(token.as_bytes());
    hex::encode(&ctx.finish().as_ref()[..24])
}

pub fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin token is required (Authorization: Bearer, or the session cookie)",
    )
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// Bearer first (an API client), then the cookie (the dashboard).
fn token_from(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(v) = headers.get(header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim(), false));
    }
    cookie(headers, SESSION_COOKIE_TLS)
        .or_else(|| cookie(headers, SESSION_COOKIE))
        .map(|t| (t, true))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a check accepts besides an admin session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// Usable while the initial password is still in use.
    pub initial_ok: bool,
    /// An API key with this scope (or `admin`) is accepted too.
    pub key: Option<Scope>,
    /// Cookie requests that change state must carry the CSRF header. Off
    /// only for the apps behind the front door, whose own pages cannot send
    /// it (there `SameSite=Strict`, the edge's Origin check and
    /// `Sec-Fetch-Site` stand in).
    pub csrf_header: bool,
}

impl Accept {
    pub const ADMIN: Accept = Accept {
        initial_ok: false,
        key: Some(Scope::Admin),
        csrf_header: true,
    };
}

/// An API key's caller, put in the request extensions by the guard.
#[derive(Debug, Clone)]
pub struct KeyCaller {
    pub key: Arc<keys::ApiKey>,
    pub ip: IpAddr,
}

fn key_refused(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        format!(
            "{why} (Authorization: Bearer ak_…, made in Settings or with `arasuld admin key create`)"
        ),
    )
}

/// Checks an API key: known, not expired, with the scope, within its rate
/// limit; on success the caller is added to the request extensions.
fn authenticate_key(
    state: &AppState,
    req: &mut Request,
    token: &str,
    scope: Option<Scope>,
) -> Result<(), ApiError> {
    let Some(scope) = scope else {
        return Err(key_refused(
            "API keys are not accepted on this route; log in",
        ));
    };
    let key = state.keys.check(token, chrono::Utc::now()).map_err(|e| {
        tracing::debug!(reason = %e, "API key refused");
        key_refused(&e.to_string())
    })?;
    if !key.allows(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "the API key {:?} lacks the `{}` scope this route needs",
                key.name,
                scope.as_str()
            ),
        ));
    }
    if let Some(limits) = req.extensions().get::<Arc<RateLimits>>() {
        limits.check_key(key.id).map_err(rate_limited)?;
    }
    let ip = client_ip(req.extensions());
    req.extensions_mut().insert(KeyCaller { key, ip });
    Ok(())
}

/// Checks the token (an admin session, or an API key where `accept` takes
/// one), the CSRF header and (unless `initial_ok`) that the initial
/// password has been changed; on success the caller is added to the request
/// extensions ([`AdminSession`] or [`KeyCaller`]).
pub fn authenticate(state: &AppState, req: &mut Request, accept: Accept) -> Result<(), ApiError> {
    let (token, via_cookie) = token_from(req.headers()).ok_or_else(|| match accept.key {
        Some(scope) if scope != Scope::Admin => key_refused(&format!(
            "an API key with the `{}` scope, or an admin login, is required",
            scope.as_str()
        )),
        _ => unauthorized(),
    })?;
    if !via_cookie && keys::is_key(token) {
        let token = token.to_owned();
        return authenticate_key(state, req, &token, accept.key);
    }
    let verified = state.auth.verify(token, Now::current()).map_err(|e| {
        tracing::debug!(reason = %e, "admin token refused");
        unauthorized()
    })?;
    if via_cookie && !is_safe(req.method()) {
        if accept.csrf_header {
            let expected = csrf_token_for(token);
            let sent = req
                .headers()
                .get(CSRF_HEADER)
                .map(HeaderValue::as_bytes)
                .unwrap_or_default();
            if !constant_time_eq(sent, expected.as_bytes()) {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf_failed",
                    "state-changing requests with the session cookie need the X-CSRF-Token header",
                ));
            }
        } else if req
            .headers()
            .get("sec-fetch-site")
            .is_some_and(|v| !matches!(v.as_bytes(), b"same-origin" | b"none"))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "state-changing requests are accepted only from this box's own pages",
            ));
        }
    }
    if !accept.initial_ok && state.auth.must_change_password() {
        return Err(password_change_required());
    }
    let ip = client_ip(req.extensions());
    req.extensions_mut().insert(AdminSession {
        verified,
        via_cookie,
        ip,
    });
    Ok(())
}

pub fn password_change_required() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "password_change_required",
        "the initial admin password is still in use: change it first (POST /api/auth/change-password)",
    )
}

/// The error response of a failed check (401 with `WWW-Authenticate`).
pub fn refusal(e: ApiError) -> Response {
    let unauth = e.status == StatusCode::UNAUTHORIZED;
    let mut resp = e.into_response();
    if unauth {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"arasuld\""),
        );
    }
    resp
}

async fn guard(
    State((state, protection)): State<(AppState, Protection)>,
    mut req: Request,
    next: Next,
) -> Response {
    let accept = match protection {
        Protection::Admin { initial_ok: false } => Accept::ADMIN,
        Protection::Admin { initial_ok: true } => Accept {
            initial_ok: true,
            key: None,
            csrf_header: true,
        },
        Protection::Key(scope) => Accept {
            key: Some(scope),
            ..Accept::ADMIN
        },
        Protection::Status => {
            if !state.config().http.require_auth_for_status {
                // Public, but a caller who is logged in still gets the
                // details (`Option<AdminSession>` in the handler).
                let _ = authenticate(&state, &mut req, Accept::ADMIN);
                return next.run(req).await;
            }
            Accept {
                key: Some(Scope::Metrics),
                ..Accept::ADMIN
            }
        }
    };
    match authenticate(&state, &mut req, accept) {
        Ok(()) => next.run(req).await,
        Err(e) => refusal(e),
    }
}

/// Who may call a group of routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// A valid admin session and, unless `initial_ok`, a changed initial
    /// password. Without `initial_ok`, an API key with the `admin` scope too.
    Admin { initial_ok: bool },
    /// An admin session, or an API key with this scope (or `admin`).
    Key(Scope),
    /// Public unless `http.require_auth_for_status` is set (then a session
    /// or a key with `metrics`); a logged-in caller is recognised either way.
    Status,
}

/// Installs the check for `protection` on every route of `group` and
/// documents it.
pub fn protect(
    group: OpenApiRouter<AppState>,
    protection: Protection,
    state: &AppState,
) -> OpenApiRouter<AppState> {
    let group = group.route_layer(middleware::from_fn_with_state(
        (state.clone(), protection),
        guard,
    ));
    describe(group, protection)
}

/// Only documents `protection` (for `api::openapi`, which serves nothing).
pub fn describe(
    mut group: OpenApiRouter<AppState>,
    protection: Protection,
) -> OpenApiRouter<AppState> {
    document(group.get_openapi_mut(), protection);
    group
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn operations(item: &mut utoipa::openapi::PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

fn document(doc: &mut OpenApi, protection: Protection) {
    let mut required = vec![
        SecurityRequirement::new(BEARER_SCHEME, Vec::<String>::new()),
        SecurityRequirement::new(COOKIE_SCHEME, Vec::<String>::new()),
    ];
    if matches!(protection, Protection::Status) {
        // Optional: public unless the config switch is on.
        required.insert(0, SecurityRequirement::default());
    }
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            op.security = Some(required.clone());
            let r = &mut op.responses.responses;
            r.entry("401".into()).or_insert_with(|| {
                error_response(
                    "No valid admin token (missing, expired, revoked, wrong signature or claims)",
                )
            });
            let forbidden = match protection {
                Protection::Admin { initial_ok: false } => Some(
                    "`password_change_required` while the initial password is in use, `csrf_failed`, or `insufficient_scope` (an API key without `admin`)",
                ),
                Protection::Key(_) => Some(
                    "`password_change_required`, `csrf_failed`, or `insufficient_scope` (an API key without the route's scope)",
                ),
                Protection::Admin { initial_ok: true } => {
                    Some("`csrf_failed`: a cookie request without the X-CSRF-Token header")
                }
                Protection::Status => Some(
                    "`password_change_required` (only when `http.require_auth_for_status` is on)",
                ),
            };
            if let Some(d) = forbidden {
                r.entry("403".into()).or_insert_with(|| error_response(d));
            }
        }
    }
}

/// Adds the security schemes and the responses every route may give
/// (429 from the rate limiter) to the finished document.
pub fn document_security(doc: &mut OpenApi) {
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        BEARER_SCHEME,
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "HS256 JWT from POST /api/auth/login (24 h), or an API key `ak_…` \
                     (POST /api/keys) where its scope allows: `admin` on the admin \
                     routes, `llm` on POST /api/llm/chat and /ollama/, `embeddings` on \
                     POST /api/embeddings, `metrics` on the status routes when they \
                     need a login.",
                ))
                .build(),
        ),
    );
    let mut cookie = ApiKeyValue::new(SESSION_COOKIE);
    cookie.description = Some(
        "HttpOnly, SameSite=Strict session cookie set by POST /api/auth/login, scoped to \
         Path=/ (over TLS it is `__Host-arasul_session`, Secure). State-changing \
         requests that \
         authenticate with it must echo the `arasul_csrf` cookie (also returned as \
         `csrf_token` by login) in the X-CSRF-Token header."
            .into(),
    );
    components.add_security_scheme(
        COOKIE_SCHEME,
        SecurityScheme::ApiKey(ApiKey::Cookie(cookie)),
    );
    for item in doc.paths.paths.values_mut() {
        for op in operations(item) {
            op.responses
                .responses
                .entry("429".into())
                .or_insert_with(|| {
                    error_response("Rate limit or login lockout; see the Retry-After header")
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_wins_over_cookie_and_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; arasul_session=tok.en.x; arasul_csrf=c"),
        );
        assert_eq!(token_from(&h), Some(("tok.en.x", true)));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(token_from(&h), Some(("abc", false)));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token_from(&h), None);
    }

    #[test]
    fn csrf_token_depends_on_the_session_token() {
        assert_ne!(csrf_token_for("a"), csrf_token_for("b"));
        assert_eq!(csrf_token_for("a"), csrf_token_for("a"));
        assert_eq!(csrf_token_for("a").len(), 48);
    }
}
