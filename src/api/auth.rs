//! `/api/auth/*`: login (token + dashboard cookies), logout, password change,
//! the caller's session, and `verify` for a forward-auth proxy. The rules
//! live in `crate::auth`; this file only maps them to HTTP.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::guard::{
    AUTH_USER_HEADER, AdminSession, CSRF_COOKIE, SESSION_COOKIE, SESSION_COOKIE_TLS, client_ip,
    csrf_token_for,
};
use super::limits::{Class, RateLimits, rate_limited};
use crate::auth::{
    ADMIN_USERNAME, ChangePasswordError, LoginError, Now, PasswordRequirements, SessionRecord,
};
use crate::state::AppState;

#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(example = "admin", max_length = 256)]
    pub username: String,
    #[schema(max_length = 4096)]
    pub password: String,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// HS256 JWT for `Authorization: Bearer` (the dashboard uses the cookie instead).
    pub token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    pub expires_at: DateTime<Utc>,
    /// Echo this in `X-CSRF-Token` on state-changing requests made with the cookie.
    pub csrf_token: String,
    /// True while the generated initial password is in use: every admin
    /// endpoint but `me`, `logout` and `change-password` answers 403 until it is changed.
    pub must_change_password: bool,
    pub timestamp: DateTime<Utc>,
}

/// Whether the request reached us over TLS. arasuld itself serves plain
/// HTTP (the URI of a request it accepted never has the https scheme), so
/// the cookies go without `Secure`; `X-Forwarded-Proto` is not trusted.
fn is_tls(uri: &axum::http::Uri) -> bool {
    uri.scheme_str() == Some("https")
}

fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    max_age: i64,
    http_only: bool,
    secure: bool,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite=Strict");
    if http_only {
        c.push_str("; HttpOnly");
    }
    if secure {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are ASCII")
}

/// The session cookie is sent to the whole origin (`Path=/`): besides the
/// API, the apps behind the front door (`/n8n/`, `/minio/`) are let in by
/// it, and the proxy strips it before anything reaches them
/// (`api::proxy`). Over TLS the `__Host-` prefix (which demands `Path=/`
/// and `Secure`) pins it to this origin.
fn session_cookie(token: &str, max_age: i64, tls: bool) -> HeaderValue {
    if tls {
        cookie_header(SESSION_COOKIE_TLS, token, "/", max_age, true, true)
    } else {
        cookie_header(SESSION_COOKIE, token, "/", max_age, true, false)
    }
}

/// The CSRF cookie is not a credential (a hash of the token); the
/// dashboard's script reads it on any page, so it stays at `Path=/`.
fn csrf_cookie(csrf: &str, max_age: i64, tls: bool) -> HeaderValue {
    cookie_header(CSRF_COOKIE, csrf, "/", max_age, false, tls)
}

fn clear_cookies(resp: &mut Response, tls: bool) {
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, session_cookie("", 0, tls));
    // Versions before the front door scoped the session cookie to `/api`.
    h.append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, "", "/api", 0, true, false),
    );
    h.append(header::SET_COOKIE, csrf_cookie("", 0, tls));
}

fn user_agent(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
}

/// Logs in the admin. Unknown user and wrong password get the same message;
/// a locked source gets 429 with `Retry-After`, told it is locked whatever
/// user name it tried.
/// Sets `arasul_session` (HttpOnly, SameSite=Strict, Path=/; under TLS
/// `__Host-arasul_session`, Path=/, Secure)
/// and `arasul_csrf` (readable, for the double submit).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; the cookies are set too", body = LoginResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 401, description = "`invalid_credentials`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts` (lockout) or `rate_limited`; see Retry-After", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn login(State(state): State<AppState>, req: Request) -> Result<Response, ApiError> {
    let ip = client_ip(req.extensions());
    let tls = is_tls(req.uri());
    let ua = user_agent(req.headers()).map(str::to_owned);
    let limits = req.extensions().get::<Arc<RateLimits>>().cloned();
    let ApiJson(body) =
        <ApiJson<LoginRequest> as axum::extract::FromRequest<AppState>>::from_request(req, &state)
            .await?;
    // Only a well-formed attempt spends the login quota: a junk body from
    // another site's page (a no-cors text/plain POST) was refused above.
    let limits = limits.ok_or_else(|| ApiError::internal("api::router installs RateLimits"))?;
    limits.check(Class::Login, ip).map_err(rate_limited)?;
    let now = Now::current();
    let ok = state
        .auth
        .login(&body.username, &body.password, ip, ua.as_deref(), now)
        .await
        .map_err(|e| login_error(&e))?;
    let token = ok.token.expose().clone();
    let csrf = csrf_token_for(&token);
    let max_age = (ok.expires_at.timestamp() - now.wall.timestamp()).max(0);
    let mut resp = Json(LoginResponse {
        token: token.clone(),
        token_type: "Bearer",
        expires_at: ok.expires_at,
        csrf_token: csrf.clone(),
        must_change_password: ok.must_change_password,
        timestamp: Utc::now(),
    })
    .into_response();
    let h = resp.headers_mut();
    h.append(header::SET_COOKIE, session_cookie(&token, max_age, tls));
    h.append(header::SET_COOKIE, csrf_cookie(&csrf, max_age, tls));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

fn login_error(e: &LoginError) -> ApiError {
    match e {
        LoginError::InvalidCredentials(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            e.to_string(),
        ),
        LoginError::Locked(l) => too_many_attempts(l),
        LoginError::Internal(cause) => {
            tracing::error!(error = %format!("{cause:#}"), "login failed internally");
            ApiError::unavailable("auth_unavailable", e.to_string())
        }
    }
}

/// 429 for a locked source: says so and for how long, never whether the
/// user name exists.
fn too_many_attempts(l: &crate::auth::Locked) -> ApiError {
    let mut err = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
        l.to_string(),
    );
    err.retry_after_secs = Some(l.retry_after_secs());
    err
}

#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    /// How many live sessions this call revoked.
    pub revoked: usize,
    pub timestamp: DateTime<Utc>,
}

/// The answer to a logout: the count and cleared cookies, or 503
/// `revocation_not_saved` when the revocation holds in memory but could not
/// be written to disk (a restart before the database takes it would undo it).
fn logged_out(revoked: crate::auth::Revoked, tls: bool) -> Result<Response, ApiError> {
    if let Some(e) = revoked.unsaved {
        return Err(ApiError::unavailable(
            "revocation_not_saved",
            format!(
                "revoked now, but not written to disk ({e:#}); until the database is back, a \
                 restart of the daemon would undo it: free the disk and log out again"
            ),
        ));
    }
    let mut resp = Json(LogoutResponse {
        revoked: revoked.count,
        timestamp: Utc::now(),
    })
    .into_response();
    clear_cookies(&mut resp, tls);
    Ok(resp)
}

/// Runs a logout (one small fsync'd write) off the async threads.
async fn blocking_logout(
    state: &AppState,
    f: impl FnOnce(&crate::auth::Auth) -> crate::auth::Revoked + Send + 'static,
) -> Result<crate::auth::Revoked, ApiError> {
    let auth = state.auth.clone();
    tokio::task::spawn_blocking(move || f(&auth))
        .await
        .map_err(ApiError::internal)
}

/// Revokes the caller's session and clears the cookies.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 200, body = LogoutResponse),
        (status = 503, description = "`revocation_not_saved`: revoked, but not on disk", body = ErrorBody)))]
pub async fn logout(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    session: AdminSession,
) -> Result<Response, ApiError> {
    let (jti, ip) = (session.verified.session.jti.clone(), session.ip);
    let revoked =
        blocking_logout(&state, move |a| a.logout(&jti, Some(ip), Now::current())).await?;
    logged_out(revoked, is_tls(&uri))
}

/// Revokes every session, the caller's included.
#[utoipa::path(post, path = "/api/auth/logout-all", tag = "auth",
    responses((status = 200, body = LogoutResponse),
        (status = 503, description = "`revocation_not_saved`: revoked, but not on disk", body = ErrorBody)))]
pub async fn logout_all(
    State(state): State<AppState>,
    uri: axum::http::Uri,
    session: AdminSession,
) -> Result<Response, ApiError> {
    let ip = session.ip;
    let revoked = blocking_logout(&state, move |a| a.logout_all(Some(ip), Now::current())).await?;
    logged_out(revoked, is_tls(&uri))
}

#[derive(Deserialize, ToSchema)]
pub struct ChangePasswordRequest {
    #[schema(max_length = 4096)]
    pub current_password: String,
    #[schema(max_length = 4096)]
    pub new_password: String,
}

#[derive(Serialize, ToSchema)]
pub struct ChangePasswordResponse {
    /// Other sessions revoked by the change (the caller's stays valid).
    pub revoked_sessions: usize,
    pub timestamp: DateTime<Utc>,
}

/// Changes the admin password (needs the current one). Every other session
/// is revoked; the caller's stays valid. Ends the initial-password state.
#[utoipa::path(post, path = "/api/auth/change-password", tag = "auth",
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, body = ChangePasswordResponse),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
        (status = 422, description = "`password_policy` (each broken rule in the message) or `invalid_body`", body = ErrorBody),
        (status = 429, description = "`too_many_attempts`; see Retry-After", body = ErrorBody),
        (status = 503, body = ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    session: AdminSession,
    ApiJson(body): ApiJson<ChangePasswordRequest>,
) -> Result<Json<ChangePasswordResponse>, ApiError> {
    let jti = session.verified.session.jti.clone();
    match state
        .auth
        .change_password(
            &body.current_password,
            &body.new_password,
            session.ip,
            Some(&jti),
            Now::current(),
        )
        .await
    {
        Ok(done) => Ok(Json(ChangePasswordResponse {
            revoked_sessions: done.revoked_sessions,
            timestamp: Utc::now(),
        })),
        Err(ChangePasswordError::WrongCurrentPassword) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_current_password",
            "the current password is incorrect",
        )),
        Err(ChangePasswordError::Locked(l)) => Err(too_many_attempts(&l)),
        Err(ChangePasswordError::Policy(v)) => Err(ApiError::unprocessable(
            "password_policy",
            v.iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        )),
        Err(ChangePasswordError::Internal(cause)) => {
            tracing::error!(error = %format!("{cause:#}"), "password change failed");
            Err(ApiError::unavailable(
                "auth_unavailable",
                "password change failed; see the daemon log",
            ))
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct Me {
    #[schema(example = "admin")]
    pub username: &'static str,
    pub must_change_password: bool,
    /// How the caller authenticated: `bearer` or `cookie`.
    #[schema(example = "bearer")]
    pub auth_method: &'static str,
    pub session: SessionRecord,
    pub timestamp: DateTime<Utc>,
}

/// The caller: user, session, and whether the password must be changed.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = Me)))]
pub async fn me(State(state): State<AppState>, session: AdminSession) -> Json<Me> {
    Json(Me {
        username: ADMIN_USERNAME,
        must_change_password: state.auth.must_change_password(),
        auth_method: if session.via_cookie {
            "cookie"
        } else {
            "bearer"
        },
        session: session.verified.session,
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionRecord>,
    /// The caller's session id.
    pub current: String,
    pub timestamp: DateTime<Utc>,
}

/// Live sessions, newest first.
#[utoipa::path(get, path = "/api/auth/sessions", tag = "auth",
    responses((status = 200, body = SessionList)))]
pub async fn sessions(State(state): State<AppState>, session: AdminSession) -> Json<SessionList> {
    Json(SessionList {
        sessions: state.auth.sessions(Now::current()),
        current: session.verified.session.jti,
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Requirements {
    #[serde(flatten)]
    pub requirements: PasswordRequirements,
    pub timestamp: DateTime<Utc>,
}

/// The password policy, as data and as sentences (public: the login and
/// change-password forms show it).
#[utoipa::path(get, path = "/api/auth/password-requirements", tag = "auth",
    responses((status = 200, body = Requirements)))]
pub async fn password_requirements(State(state): State<AppState>) -> Json<Requirements> {
    Json(Requirements {
        requirements: state.auth.password_requirements(),
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, ToSchema)]
pub struct VerifyResponse {
    #[schema(example = "admin")]
    pub user: &'static str,
    pub timestamp: DateTime<Utc>,
}

/// For a forward-auth proxy: 200 with `X-Auth-User` when the token or cookie
/// is valid, 401 otherwise.
#[utoipa::path(get, path = "/api/auth/verify", tag = "auth",
    responses((status = 200, body = VerifyResponse,
        headers(("X-Auth-User" = String, description = "The authenticated user")))))]
pub async fn verify(_session: AdminSession) -> Response {
    let mut resp = Json(VerifyResponse {
        user: ADMIN_USERNAME,
        timestamp: Utc::now(),
    })
    .into_response();
    resp.headers_mut()
        .insert(AUTH_USER_HEADER, HeaderValue::from_static(ADMIN_USERNAME));
    resp
}
