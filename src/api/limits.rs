//! The HTTP edge as middleware: who the client is, whether its request may
//! come from the page that sent it, per-client rate limits (SPEC §5), the
//! request counters of `GET /metrics`, and the security headers every
//! answer but the front door's apps' carries. Quotas come from
//! `http.rate_limits`; one middleware picks the quota by path, so routes
//! added later are covered without touching this file:
//!
//! | class | paths | default quota |
//! |---|---|---|
//! | login | `POST /api/auth/login` with a well-formed body (counted by the handler) | 5 per 15 min |
//! | llm | `/api/llm/*`, `/api/embeddings`, `/ollama/*` | 10/s |
//! | metrics | `/api/metrics/*`, `/metrics` | 20/s |
//! | webhook | `/api/workflows/execution`, `/webhook/*`, `/webhook-test/*` | 100/min |
//! | api | any other `/api/*` (malformed logins included) | 100/s, burst 50 |
//!
//! Each API key also has its own quota (`api_key`, 20/s, burst 40),
//! checked by the guard once the key is known.
//!
//! A client is its full address (IPv4, or IPv6 on our links, link-local or
//! unique-local); a global IPv6 client off our links also shares a coarse
//! bucket ([`PREFIX_FACTOR`] × the quota) with its /64. Clients in
//! `http.rate_limit_exempt` are never limited; `X-Forwarded-For` is believed
//! only from `http.trusted_proxies`. The dashboard's static files are not
//! limited. Exceeding a quota is a 429 in the error envelope with
//! `Retry-After` (seconds, rounded up).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::error::ApiError;
use super::guard::{ClientAddr, peer_ip};
use crate::config::HttpConfig;
use crate::metrics::counters::{self, HttpRoute};
use crate::net::{self, Cidr, RateKey, RateQuota};

/// How much more a global IPv6 /64 may send than one of its addresses.
pub const PREFIX_FACTOR: u32 = 16;
/// How long the list of our own IPv6 links is trusted before it is read again.
const ON_LINK_REFRESH: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Login,
    Llm,
    Metrics,
    Webhook,
    Api,
}

const CLASSES: [Class; 5] = [
    Class::Login,
    Class::Llm,
    Class::Metrics,
    Class::Webhook,
    Class::Api,
];

/// `path` is `prefix` or below it (`/api` and `/api/x`, not `/apix`).
fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Which quota a request counts against; None for the dashboard's files.
pub fn classify(method: &Method, path: &str) -> Option<Class> {
    let under = |prefix: &str| is_under(path, prefix);
    Some(if path == "/api/auth/login" && method == Method::POST {
        Class::Login
    } else if under("/api/llm") || under("/api/embeddings") || under("/ollama") {
        Class::Llm
    } else if under("/api/metrics") || under("/metrics") {
        Class::Metrics
    } else if path == "/api/workflows/execution" || under("/webhook") || under("/webhook-test") {
        Class::Webhook
    } else if under("/api") {
        Class::Api
    } else {
        return None;
    })
}

/// The route class `GET /metrics` counts a request under: the quota's
/// class, with the health probe apart from the rest of the API and the
/// front door's web apps apart from the dashboard.
fn http_route(class: Option<Class>, path: &str) -> HttpRoute {
    match class {
        Some(Class::Login) => HttpRoute::Login,
        Some(Class::Llm) => HttpRoute::Llm,
        Some(Class::Metrics) => HttpRoute::Metrics,
        Some(Class::Webhook) => HttpRoute::Webhook,
        Some(Class::Api) if path == "/api/health" => HttpRoute::Health,
        Some(Class::Api) => HttpRoute::Api,
        None if is_under(path, "/n8n") || is_under(path, "/minio") => HttpRoute::Apps,
        None => HttpRoute::Web,
    }
}

/// One quota: a bucket per client address and a coarse one per global /64.
struct Limiter {
    host: DefaultKeyedRateLimiter<RateKey>,
    prefix: DefaultKeyedRateLimiter<RateKey>,
}

fn governor_quota(q: &RateQuota, factor: u32) -> Quota {
    let burst = NonZeroU32::new(q.burst.saturating_mul(factor)).unwrap_or(NonZeroU32::MIN);
    let every = (q.replenish_every() / factor).max(Duration::from_nanos(1));
    Quota::with_period(every)
        .expect("the period is not zero")
        .allow_burst(burst)
}

impl Limiter {
    fn new(q: &RateQuota) -> Self {
        Limiter {
            host: RateLimiter::keyed(governor_quota(q, 1)),
            prefix: RateLimiter::keyed(governor_quota(q, PREFIX_FACTOR)),
        }
    }

    fn check(&self, (host, prefix): (RateKey, Option<RateKey>)) -> Result<(), Duration> {
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(DefaultClock::default().now());
        self.host.check_key(&host).map_err(wait)?;
        match prefix {
            Some(p) => self.prefix.check_key(&p).map_err(wait),
            None => Ok(()),
        }
    }

    fn shrink(&self) {
        for l in [&self.host, &self.prefix] {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// The quotas, one keyed limiter each, and who is exempt.
pub struct RateLimits {
    login: Limiter,
    llm: Limiter,
    metrics: Limiter,
    webhook: Limiter,
    api: Limiter,
    keys: DefaultKeyedRateLimiter<i64>,
    exempt: Vec<Cidr>,
    trusted_proxies: Vec<Cidr>,
    /// Our IPv6 links, read at most every [`ON_LINK_REFRESH`].
    on_link: RwLock<(Option<std::time::Instant>, Arc<Vec<Cidr>>)>,
    checks: AtomicU64,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self::new(&HttpConfig::default())
    }
}

impl RateLimits {
    pub fn new(http: &HttpConfig) -> Self {
        let q = &http.rate_limits;
        Self {
            login: Limiter::new(&q.login),
            llm: Limiter::new(&q.llm),
            metrics: Limiter::new(&q.metrics),
            webhook: Limiter::new(&q.webhook),
            api: Limiter::new(&q.api),
            keys: RateLimiter::keyed(governor_quota(&q.api_key, 1)),
            exempt: http.rate_limit_exempt.clone(),
            trusted_proxies: http.trusted_proxies.clone(),
            on_link: RwLock::new((None, Arc::new(Vec::new()))),
            checks: AtomicU64::new(0),
        }
    }

    fn limiter(&self, class: Class) -> &Limiter {
        match class {
            Class::Login => &self.login,
            Class::Llm => &self.llm,
            Class::Metrics => &self.metrics,
            Class::Webhook => &self.webhook,
            Class::Api => &self.api,
        }
    }

    fn on_link(&self) -> Arc<Vec<Cidr>> {
        {
            let cached = self.on_link.read().unwrap_or_else(|e| e.into_inner());
            if cached.0.is_some_and(|at| at.elapsed() < ON_LINK_REFRESH) {
                return cached.1.clone();
            }
        }
        let fresh = Arc::new(net::on_link_ipv6_prefixes());
        *self.on_link.write().unwrap_or_else(|e| e.into_inner()) =
            (Some(std::time::Instant::now()), fresh.clone());
        fresh
    }

    /// The client's address: the peer, or what a trusted proxy forwarded.
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let xff = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        net::client_address(peer, xff, &self.trusted_proxies)
    }

    /// An API key's own quota: Ok, or how long its caller must wait.
    pub fn check_key(&self, id: i64) -> Result<(), Duration> {
        self.keys
            .check_key(&id)
            .map_err(|n| n.wait_time_from(DefaultClock::default().now()))
    }

    /// Ok, or how long the caller must wait.
    pub fn check(&self, class: Class, ip: IpAddr) -> Result<(), Duration> {
        if net::any_contains(&self.exempt, ip) {
            return Ok(());
        }
        // Keys of clients that went quiet are dropped now and then, so the
        // tables stay bounded by the number of recently active clients.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            for c in CLASSES {
                self.limiter(c).shrink();
            }
            self.keys.retain_recent();
            self.keys.shrink_to_fit();
        }
        let keys = match ip {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => net::rate_keys(ip, &self.on_link()),
            _ => net::rate_keys(ip, &[]),
        };
        self.limiter(class).check(keys)
    }
}

/// 429 `rate_limited` with `Retry-After` (whole seconds, rounded up).
pub fn rate_limited(wait: Duration) -> ApiError {
    let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
    let mut e = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests; retry in {secs} s"),
    );
    e.retry_after_secs = Some(secs);
    e
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// `host[:port]` without the scheme's default port, lower-cased.
fn authority_of(scheme: &str, authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let default = match scheme {
        "https" | "wss" => ":443",
        _ => ":80",
    };
    a.strip_suffix(default).map(str::to_owned).unwrap_or(a)
}

/// Whether an `Origin` header names the site the request was sent to (its
/// `Host`, or what a trusted proxy says in `X-Forwarded-Host`).
pub(crate) fn same_origin(origin: &str, host: Option<&str>, forwarded_host: Option<&str>) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false; // "null" and anything that is not scheme://host[:port]
    };
    if rest.contains('/') {
        return false;
    }
    let origin = authority_of(scheme, rest);
    [host, forwarded_host]
        .into_iter()
        .flatten()
        .any(|h| authority_of(scheme, h) == origin)
}

/// What the edge middleware holds: the quotas, and the live-stream slots it
/// hands to the handlers (as request extensions).
#[derive(Clone)]
pub struct Edge {
    pub limits: Arc<RateLimits>,
    pub slots: super::serve::StreamSlots,
}

/// The edge middleware: resolves the client's address (for the guard, the
/// lockout and the limits), refuses state-changing requests sent by another
/// site's page, applies the quota of the request's class, adds the security
/// headers, logs a response that failed, and counts every answer for `GET /metrics` (one clock read
/// at each end, three atomic additions: no lock, no allocation).
pub async fn edge(edge: Edge, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let class = classify(req.method(), req.uri().path());
    let route = http_route(class, req.uri().path());
    let front_door = super::proxy::is_front_door(req.uri().path());
    let mut resp = admit(edge, class, req, next).await;
    if !front_door {
        add_security_headers(&mut resp);
    }
    let took = started.elapsed();
    if resp.status().is_server_error() {
        log_failure(resp.status(), took);
    }
    counters::HTTP.observe(route, resp.status().as_u16(), took);
    resp
}

/// The checks of [`edge`], then the handler.
async fn admit(edge: Edge, class: Option<Class>, mut req: Request, next: Next) -> Response {
    let Edge { limits, slots } = edge;
    let peer = peer_ip(req.extensions());
    let client = limits.client_address(peer, req.headers());
    let ext = req.extensions_mut();
    ext.insert(ClientAddr(client));
    ext.insert(slots);
    ext.insert(limits.clone());

    if !is_safe(req.method())
        && !super::proxy::is_cross_site_ok(req.uri().path())
        && let Some(origin) = req.headers().get(header::ORIGIN)
    {
        let h = req.headers();
        let host = h
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let forwarded = (peer != client || net::any_contains(&limits.trusted_proxies, peer))
            .then(|| h.get("x-forwarded-host").and_then(|v| v.to_str().ok()))
            .flatten();
        if !origin
            .to_str()
            .is_ok_and(|o| same_origin(o, host, forwarded))
        {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "state-changing requests are accepted only from this box's own pages",
            )
            .into_response();
        }
    }

    if let Some(class) = class {
        // A login counts against its own quota only once its body is a
        // well-formed attempt (the handler checks); until then it is an
        // ordinary API request, so junk cannot burn the admin's logins.
        let class = if class == Class::Login {
            Class::Api
        } else {
            class
        };
        if let Err(wait) = limits.check(class, client) {
            return rate_limited(wait).into_response();
        }
    }
    next.run(req).await
}

/// A 503 is an answer we chose to give (an app or the database down, too
/// many streams; each says why): logged at debug, or the front door's own
/// webhook probe would log an error every minute on a box without n8n.
/// Any other 5xx is an error.
fn log_failure(status: StatusCode, latency: Duration) {
    let ms = latency.as_millis();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::debug!(latency_ms = ms, "answered 503");
    } else {
        tracing::error!(status = status.as_u16(), latency_ms = ms, "response failed");
    }
}

/// The headers every answer of the API and the dashboard carries (the front
/// door's apps send their own). An HTML page brings its own policy naming
/// its inline blocks (`web::serve`); anything else may run nothing.
fn add_security_headers(resp: &mut Response) {
    // A 304 would replace the cached page's headers: no generic CSP there,
    // or revalidating the dashboard would strip its script hashes.
    let not_modified = resp.status() == StatusCode::NOT_MODIFIED;
    let h = resp.headers_mut();
    if !not_modified {
        h.entry(header::CONTENT_SECURITY_POLICY).or_insert_with(|| {
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
        });
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_per_spec() {
        let p = Method::POST;
        let g = Method::GET;
        assert_eq!(classify(&p, "/api/auth/login"), Some(Class::Login));
        assert_eq!(classify(&g, "/api/auth/login"), Some(Class::Api));
        assert_eq!(classify(&p, "/api/llm/chat"), Some(Class::Llm));
        assert_eq!(classify(&p, "/api/embeddings"), Some(Class::Llm));
        assert_eq!(classify(&g, "/api/metrics/live"), Some(Class::Metrics));
        assert_eq!(classify(&g, "/metrics"), Some(Class::Metrics));
        assert_eq!(
            classify(&p, "/api/workflows/execution"),
            Some(Class::Webhook)
        );
        assert_eq!(classify(&g, "/api/health"), Some(Class::Api));
        assert_eq!(classify(&g, "/api/llmx"), Some(Class::Api));
        assert_eq!(classify(&g, "/"), None);
        assert_eq!(classify(&g, "/assets/app.js"), None);
    }

    #[test]
    fn requests_are_counted_under_a_few_route_classes() {
        let route = |m: &Method, p: &str| http_route(classify(m, p), p);
        let (g, p) = (Method::GET, Method::POST);
        assert_eq!(route(&g, "/api/health"), HttpRoute::Health);
        assert_eq!(route(&g, "/api/health/x"), HttpRoute::Api);
        assert_eq!(route(&g, "/api/services"), HttpRoute::Api);
        assert_eq!(route(&p, "/api/auth/login"), HttpRoute::Login);
        assert_eq!(route(&p, "/ollama/api/chat"), HttpRoute::Llm);
        assert_eq!(route(&g, "/metrics"), HttpRoute::Metrics);
        assert_eq!(route(&p, "/webhook/abc"), HttpRoute::Webhook);
        assert_eq!(route(&g, "/n8n/"), HttpRoute::Apps);
        assert_eq!(route(&g, "/minio"), HttpRoute::Apps);
        assert_eq!(route(&g, "/minions"), HttpRoute::Web);
        assert_eq!(route(&g, "/"), HttpRoute::Web);
        assert_eq!(route(&g, "/assets/app.js"), HttpRoute::Web);
    }

    #[test]
    fn login_quota_allows_five_then_asks_to_wait_about_three_minutes() {
        let l = RateLimits::default();
        let a: IpAddr = "203.0.113.5".parse().unwrap();
        for _ in 0..5 {
            l.check(Class::Login, a).unwrap();
        }
        let wait = l.check(Class::Login, a).unwrap_err();
        assert!(
            wait > Duration::from_secs(170) && wait <= Duration::from_secs(180),
            "{wait:?}"
        );
        // Another client, and another class, are unaffected.
        l.check(Class::Login, "203.0.113.6".parse().unwrap())
            .unwrap();
        l.check(Class::Api, a).unwrap();
    }

    #[test]
    fn ipv6_lan_hosts_have_their_own_quota_and_a_global_slash_64_a_coarse_one() {
        let l = RateLimits::default();
        // Five SLAAC hosts on one LAN (unique-local and link-local): each has
        // its own five logins.
        for prefix in ["fd00:1:2:3:", "fe80:"] {
            for host in 1..=5 {
                let ip: IpAddr = format!("{prefix}:{host}").parse().unwrap();
                for _ in 0..5 {
                    l.check(Class::Login, ip).unwrap();
                }
                assert!(l.check(Class::Login, ip).is_err());
            }
        }
        // Global addresses: per address too, but the /64 stops after
        // PREFIX_FACTOR times the quota.
        let mut refused_hosts = 0;
        for host in 1..=(PREFIX_FACTOR + 2) {
            let ip: IpAddr = format!("2001:db8:1:2::{host:x}").parse().unwrap();
            if (0..5).any(|_| l.check(Class::Login, ip).is_err()) {
                refused_hosts += 1;
            }
        }
        assert_eq!(
            refused_hosts, 2,
            "the /64 allows {PREFIX_FACTOR} hosts' worth"
        );
        l.check(Class::Login, "2001:db8:1:3::1".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn each_api_key_has_its_own_quota_even_from_an_exempt_address() {
        let http = HttpConfig {
            rate_limit_exempt: vec!["127.0.0.0/8".parse().unwrap()],
            rate_limits: crate::net::RateLimitsConfig {
                api_key: RateQuota::new(2, Duration::from_secs(60), 2),
                ..Default::default()
            },
            ..HttpConfig::default()
        };
        let l = RateLimits::new(&http);
        l.check_key(7).unwrap();
        l.check_key(7).unwrap();
        let wait = l.check_key(7).unwrap_err();
        assert!(wait > Duration::from_secs(20), "{wait:?}");
        // Another key is not held back by the first one's use.
        l.check_key(8).unwrap();
        assert_eq!(
            classify(&Method::POST, "/ollama/api/chat"),
            Some(Class::Llm)
        );
        assert_eq!(classify(&Method::POST, "/webhook/x"), Some(Class::Webhook));
        assert_eq!(classify(&Method::GET, "/n8n/"), None);
    }

    #[test]
    fn exempt_ranges_are_never_limited_and_quotas_come_from_config() {
        let http = HttpConfig {
            rate_limit_exempt: vec!["127.0.0.0/8".parse().unwrap()],
            rate_limits: crate::net::RateLimitsConfig {
                api: RateQuota::new(2, Duration::from_secs(60), 2),
                ..Default::default()
            },
            ..HttpConfig::default()
        };
        let l = RateLimits::new(&http);
        for _ in 0..10_000 {
            l.check(Class::Api, "127.0.0.1".parse().unwrap()).unwrap();
        }
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        l.check(Class::Api, other).unwrap();
        l.check(Class::Api, other).unwrap();
        let wait = l.check(Class::Api, other).unwrap_err();
        assert!(wait > Duration::from_secs(25), "{wait:?}");
    }

    #[test]
    fn origin_must_name_the_host_the_request_went_to() {
        let host = Some("arasul.local");
        assert!(same_origin("http://arasul.local", host, None));
        assert!(same_origin("http://ARASUL.local:80", host, None));
        assert!(same_origin(
            "http://127.0.0.1:8080",
            Some("127.0.0.1:8080"),
            None
        ));
        assert!(!same_origin(
            "http://127.0.0.1:8081",
            Some("127.0.0.1:8080"),
            None
        ));
        assert!(!same_origin("http://evil.example", host, None));
        assert!(!same_origin("null", host, None));
        assert!(!same_origin(
            "https://arasul.local",
            Some("arasul.local:80"),
            None
        ));
        assert!(same_origin(
            "https://box.example",
            host,
            Some("box.example")
        ));
    }
}
