//! The front door: the apps the box runs, reached through arasuld's one port.
//!
//! | path | service (role) | port | who |
//! |---|---|---|---|
//! | `/ollama/…` | `llm` | its API port | an API key with `llm` (or an admin); model management (`/api/pull`, `/api/delete`, …) needs `admin` |
//! | `/n8n/…` | `workflow` | `web_port` | the admin session (forward auth) |
//! | `/webhook/…`, `/webhook-test/…` | `workflow` | `web_port` | anyone, within the webhook rate limit |
//! | `/minio/…` | `storage` | `web_port` (the console) | the admin session |
//!
//! `/ollama`, `/n8n` and `/minio` are stripped before forwarding (the apps
//! are configured for the sub-path: `N8N_PATH`, `MINIO_BROWSER_REDIRECT_URL`);
//! webhooks keep their path. Bodies stream both ways, never buffered; a
//! WebSocket upgrade (n8n's push channel) is tunnelled. Hop-by-hop headers
//! are dropped, `X-Forwarded-For/-Proto/-Host/-Prefix` set, and arasuld's
//! own credentials (its session cookies, a bearer token it checked) never
//! reach an app. A service that is not running answers 503 in the error
//! envelope with its state; containers are reached on their network
//! address, so no port needs publishing on the host.

use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::error::ApiError;
use super::guard::{self, Accept, CSRF_COOKIE, SESSION_COOKIE, SESSION_COOKIE_TLS, client_ip};
use crate::auth::keys::Scope;
use crate::docker::{Role, ServiceState, ServiceStatus};
use crate::state::AppState;

/// How long connecting to an app may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// An API key with this scope, or an admin session.
    Key(Scope),
    /// The admin session (or a key with `admin`).
    Admin,
    Public,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    /// The service's API port (its health check's).
    Api,
    /// Its web app's (`web_port`).
    Web,
}

#[derive(Debug)]
struct Route {
    prefix: &'static str,
    role: Role,
    port: Port,
    access: Access,
    /// Forward without the prefix.
    strip: bool,
    /// What the owner calls it, for messages.
    what: &'static str,
}

const ROUTES: [Route; 5] = [
    Route {
        prefix: "/ollama",
        role: Role::Llm,
        port: Port::Api,
        access: Access::Key(Scope::Llm),
        strip: true,
        what: "the LLM runtime",
    },
    Route {
        prefix: "/n8n",
        role: Role::Workflow,
        port: Port::Web,
        access: Access::Admin,
        strip: true,
        what: "n8n",
    },
    Route {
        prefix: "/webhook",
        role: Role::Workflow,
        port: Port::Web,
        access: Access::Public,
        strip: false,
        what: "n8n's webhooks",
    },
    Route {
        prefix: "/webhook-test",
        role: Role::Workflow,
        port: Port::Web,
        access: Access::Public,
        strip: false,
        what: "n8n's test webhooks",
    },
    Route {
        prefix: "/minio",
        role: Role::Storage,
        port: Port::Web,
        access: Access::Admin,
        strip: true,
        what: "the MinIO console",
    },
];

/// The route a path belongs to, and the path after its prefix.
fn route_of(path: &str) -> Option<(&'static Route, &str)> {
    ROUTES.iter().find_map(|r| {
        let rest = path.strip_prefix(r.prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then_some((r, rest))
    })
}

/// Whether `path` belongs to an app behind the front door (it answers with
/// its own headers).
pub fn is_front_door(path: &str) -> bool {
    route_of(path).is_some()
}

/// Paths whose callers are programs (a key, or a webhook sender), not pages
/// of this box: the edge does not ask their `Origin` to be ours.
pub fn is_cross_site_ok(path: &str) -> bool {
    route_of(path).is_some_and(|(r, _)| r.access != Access::Admin)
}

/// Ollama API calls that change the model store: `admin` only.
fn is_model_management(rest: &str) -> bool {
    [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
        "/api/blobs",
    ]
    .iter()
    .any(|p| {
        rest.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with('/'))
    })
}

/// The HTTP client to the apps, and the WebSocket tunnels it keeps open.
#[derive(Clone)]
pub struct Proxy {
    client: Client<HttpConnector, Body>,
    tunnels: TaskTracker,
}

impl Default for Proxy {
    fn default() -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.set_nodelay(true);
        Proxy {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(http),
            tunnels: TaskTracker::new(),
        }
    }
}

/// The front door's routes, to merge before the API's fallback.
pub fn routes() -> Router<AppState> {
    let mut r = Router::new();
    for route in &ROUTES {
        r = r
            .route(route.prefix, any(forward))
            .route(&format!("{}/", route.prefix), any(forward))
            .route(&format!("{}/{{*rest}}", route.prefix), any(forward));
    }
    r.layer(axum::Extension(Proxy::default()))
}

fn unavailable(route: &Route, why: String) -> Response {
    ApiError::unavailable(
        "service_unavailable",
        format!("{} is not available: {why}", route.what),
    )
    .into_response()
}

/// Whether a browser is asking for a page (it gets the login, not JSON).
fn wants_page(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"))
}

fn state_word(s: ServiceState) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Where the service of `route` answers: `http://addr:port`, or why not.
fn upstream(route: &Route, services: &[ServiceStatus]) -> Result<String, String> {
    let s = services
        .iter()
        .find(|s| s.role == route.role)
        .ok_or_else(|| "no service for it in the catalog".to_string())?;
    let running = matches!(
        s.state,
        ServiceState::Healthy | ServiceState::Unhealthy | ServiceState::Starting
    );
    let addr = s.address.as_deref().filter(|a| !a.is_empty());
    let port = match route.port {
        Port::Api => s.api_port,
        Port::Web => s.web_port,
    };
    match (running, addr, port) {
        (true, Some(addr), Some(port)) => Ok(if addr.contains(':') {
            format!("http://[{addr}]:{port}")
        } else {
            format!("http://{addr}:{port}")
        }),
        (true, _, None) => Err(format!(
            "service {:?} has no port for it in the catalog",
            s.name
        )),
        _ => Err(format!("service {:?} is {}", s.name, state_word(s.state))),
    }
}

/// Headers that concern one connection, never forwarded (RFC 9110 §7.6.1),
/// with those the `Connection` header names.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

/// The `Cookie` header without arasuld's own cookies.
fn strip_our_cookies(h: &mut HeaderMap) {
    let kept: Vec<String> = h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| {
            let name = kv.split_once('=').map_or(*kv, |(k, _)| k).trim();
            !kv.is_empty() && ![SESSION_COOKIE, SESSION_COOKIE_TLS, CSRF_COOKIE].contains(&name)
        })
        .map(str::to_owned)
        .collect();
    h.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        h.insert(header::COOKIE, v);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request to send upstream: path rewritten, headers cleaned and the
/// forwarding headers added.
fn upstream_request(
    mut req: Request,
    route: &Route,
    base: &str,
    path: &str,
    client: IpAddr,
    checked_bearer: bool,
) -> Result<Request, ApiError> {
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let path = if path.is_empty() { "/" } else { path };
    let uri: Uri = format!("{base}{path}{query}").parse().map_err(|e| {
        ApiError::bad_request("invalid_path", format!("cannot forward this path: {e}"))
    })?;
    let proto = if req.uri().scheme_str() == Some("https") {
        "https"
    } else {
        "http"
    };
    let h = req.headers_mut();
    let upgrade_to = is_upgrade(h)
        .then(|| h.get(header::UPGRADE).cloned())
        .flatten();
    strip_hop_by_hop(h);
    if let Some(u) = upgrade_to {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        h.insert(header::UPGRADE, u);
    }
    strip_our_cookies(h);
    if checked_bearer {
        h.remove(header::AUTHORIZATION);
    }
    // The client as the edge resolved it (a trusted proxy's word, else the
    // peer): what a caller wrote in X-Forwarded-For itself goes no further.
    if let Ok(v) = HeaderValue::from_str(&client.to_string()) {
        h.insert("x-forwarded-for", v);
    }
    h.insert("x-forwarded-proto", HeaderValue::from_static(proto));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert("x-forwarded-host", host);
    }
    if route.strip {
        h.insert("x-forwarded-prefix", HeaderValue::from_static(route.prefix));
    } else {
        h.remove("x-forwarded-prefix");
    }
    *req.uri_mut() = uri;
    *req.version_mut() = axum::http::Version::HTTP_11;
    Ok(req)
}

async fn forward(State(state): State<AppState>, mut req: Request) -> Response {
    let Some(proxy) = req.extensions().get::<Proxy>().cloned() else {
        return ApiError::internal("api::proxy::routes installs the Proxy").into_response();
    };
    let full = req.uri().path().to_owned();
    let Some((route, rest)) = route_of(&full) else {
        return ApiError::not_found(format!("no route {full}")).into_response();
    };
    if route.strip && rest.is_empty() {
        // `/n8n` → `/n8n/`, so the app's relative links resolve.
        let q = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        return Redirect::permanent(&format!("{}/{q}", route.prefix)).into_response();
    }
    let accept = match route.access {
        Access::Public => None,
        Access::Key(scope) => Some(Accept {
            key: Some(if is_model_management(rest) {
                Scope::Admin
            } else {
                scope
            }),
            ..Accept::ADMIN
        }),
        Access::Admin => Some(Accept {
            csrf_header: false,
            ..Accept::ADMIN
        }),
    };
    // A WebSocket handshake is a GET, so the edge's Origin check passes it;
    // the session cookie (SameSite=Strict) would not come along from
    // another site, but an app's socket is refused outright then too.
    if route.access == Access::Admin
        && is_upgrade(req.headers())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok());
        if !origin
            .to_str()
            .is_ok_and(|o| super::limits::same_origin(o, host, None))
        {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "a WebSocket to this app is accepted only from this box's own pages",
            )
            .into_response();
        }
    }
    let mut checked_bearer = false;
    if let Some(accept) = accept {
        if let Err(e) = guard::authenticate(&state, &mut req, accept) {
            if route.access == Access::Admin
                && e.status == StatusCode::UNAUTHORIZED
                && wants_page(&req)
            {
                // A browser without a session: the dashboard's login, then back.
                let back = match req.uri().query() {
                    Some(q) => format!("{full}?{q}"),
                    None => full.clone(),
                };
                let next = url_escape(&back);
                return Redirect::to(&format!("/?next={next}")).into_response();
            }
            return guard::refusal(e);
        }
        checked_bearer = req.headers().contains_key(header::AUTHORIZATION);
    }
    let base = match upstream(route, &state.services.services()) {
        Ok(b) => b,
        Err(why) => return unavailable(route, why),
    };
    let client = client_ip(req.extensions());
    let path = if route.strip { rest } else { full.as_str() }.to_owned();
    let mut up = match upstream_request(req, route, &base, &path, client, checked_bearer) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let timeout = state.config().http.upstream_timeout;
    // A WebSocket handshake goes without a body; the client's side of the
    // upgrade is taken before the request's extensions are dropped.
    let downstream = is_upgrade(up.headers()).then(|| hyper::upgrade::on(&mut up));
    let (mut parts, body) = up.into_parts();
    parts.extensions = Default::default();
    let body = if downstream.is_some() {
        Body::empty()
    } else {
        body
    };
    // Hyper's client takes the body as it comes: nothing is buffered.
    let up = Request::from_parts(parts, body);
    let resp = match tokio::time::timeout(timeout, proxy.client.request(up)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => return unavailable(route, connect_error(&e)),
        Err(_) => return timed_out(route, timeout),
    };
    match downstream {
        Some(downstream) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            tunnel(&proxy, route, downstream, resp)
        }
        _ => response(resp),
    }
}

/// Joins the client's and the app's upgraded connections in a task the
/// proxy keeps, and answers the client the app's 101 as it came.
fn tunnel(
    proxy: &Proxy,
    route: &Route,
    downstream: hyper::upgrade::OnUpgrade,
    mut resp: axum::http::Response<hyper::body::Incoming>,
) -> Response {
    let upstream = hyper::upgrade::on(&mut resp);
    let span = tracing::info_span!("ws-tunnel", route = route.prefix);
    proxy.tunnels.spawn(
        async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                    match tokio::io::copy_bidirectional(&mut d, &mut u).await {
                        Ok((to_app, to_client)) => {
                            tracing::debug!(to_app, to_client, "WebSocket tunnel closed")
                        }
                        Err(e) => tracing::debug!(error = %e, "WebSocket tunnel ended"),
                    }
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        }
        .instrument(span),
    );
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}

fn connect_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    tracing::debug!(error = %msg, "front door: upstream failed");
    if e.is_connect() {
        format!("it does not accept connections ({msg})")
    } else {
        format!("it broke off the answer ({msg})")
    }
}

fn timed_out(route: &Route, after: Duration) -> Response {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "upstream_timeout",
        format!(
            "{} did not start answering within {} s (http.upstream_timeout)",
            route.what,
            after.as_secs()
        ),
    )
    .into_response()
}

/// The app's answer, streamed on; hop-by-hop headers dropped.
fn response(resp: axum::http::Response<hyper::body::Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, Body::new(body))
}

/// Percent-encodes a path for a query value.
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_route_and_only_at_a_segment_boundary() {
        let (r, rest) = route_of("/ollama/v1/chat/completions").unwrap();
        assert_eq!((r.prefix, rest), ("/ollama", "/v1/chat/completions"));
        assert_eq!(route_of("/ollama").unwrap().1, "");
        assert!(route_of("/ollamax/api").is_none());
        assert_eq!(
            route_of("/webhook-test/abc").unwrap().0.prefix,
            "/webhook-test"
        );
        assert_eq!(route_of("/webhook/abc").unwrap().0.prefix, "/webhook");
        assert!(route_of("/api/keys").is_none());
        assert!(is_cross_site_ok("/ollama/api/chat") && is_cross_site_ok("/webhook/x"));
        assert!(!is_cross_site_ok("/n8n/rest/login") && !is_cross_site_ok("/api/keys"));
    }

    #[test]
    fn model_management_is_told_from_use() {
        for p in [
            "/api/pull",
            "/api/delete",
            "/api/blobs/sha256:abc",
            "/api/create",
        ] {
            assert!(is_model_management(p), "{p}");
        }
        for p in ["/api/chat", "/api/tags", "/v1/models", "/api/pulled"] {
            assert!(!is_model_management(p), "{p}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_our_cookies_stay_here() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static(
                "arasul_session=tok; n8n-auth=abc; arasul_csrf=c; __Host-arasul_session=t",
            ),
        );
        strip_hop_by_hop(&mut h);
        strip_our_cookies(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h[header::COOKIE], "n8n-auth=abc");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn a_stopped_or_unknown_service_is_not_forwarded_to() {
        let route = &ROUTES[1];
        let mut s = crate::docker::test_status(
            "n8n",
            Role::Workflow,
            ServiceState::Healthy,
            Some("172.18.0.5"),
        );
        s.web_port = Some(5678);
        assert_eq!(
            upstream(route, &[s.clone()]).unwrap(),
            "http://172.18.0.5:5678"
        );
        s.state = ServiceState::Stopped;
        assert_eq!(
            upstream(route, &[s.clone()]).unwrap_err(),
            "service \"n8n\" is stopped"
        );
        assert!(
            upstream(&ROUTES[0], &[s])
                .unwrap_err()
                .contains("no service")
        );
        assert_eq!(url_escape("/n8n/home?x=1&y"), "/n8n/home%3Fx%3D1%26y");
    }
}
