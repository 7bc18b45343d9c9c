//! Per-client rate limits (SPEC §5) and the security headers every response
//! carries. Limits are tower_governor quotas keyed by the peer address the
//! listener saw (`ConnectInfo`; `X-Forwarded-For` is never trusted); one
//! middleware picks the quota by path, so routes added later are covered
//! without touching this file:
//!
//! | class | paths | quota |
//! |---|---|---|
//! | login | `POST /api/auth/login` | 5 per 15 min |
//! | llm | `/api/llm/*`, `/api/embeddings` | 10/s |
//! | metrics | `/api/metrics/*`, `/metrics` | 20/s |
//! | webhook | `/api/workflows/execution` | 100/min |
//! | api | any other `/api/*` | 100/s, burst 50 |
//!
//! The dashboard's static files are not limited. Exceeding a quota is a 429
//! in the error envelope with `Retry-After` (seconds, rounded up).

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use super::error::ApiError;
use super::guard::client_ip;

/// The rate-limit key: the client address; IPv6 by /64 (one host usually
/// owns a whole /64, so single v6 addresses would be meaningless).
#[derive(Debug, Clone, Copy)]
pub struct ClientIpKey;

pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

impl KeyExtractor for ClientIpKey {
    type Key = IpAddr;

    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<IpAddr, GovernorError> {
        Ok(source_of(client_ip(req.extensions())))
    }
}

type Quota = GovernorConfig<ClientIpKey, NoOpMiddleware>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Login,
    Llm,
    Metrics,
    Webhook,
    Api,
}

/// Which quota a request counts against; None for the dashboard's files.
pub fn classify(method: &Method, path: &str) -> Option<Class> {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    Some(if path == "/api/auth/login" && method == Method::POST {
        Class::Login
    } else if under("/api/llm") || under("/api/embeddings") {
        Class::Llm
    } else if under("/api/metrics") || under("/metrics") {
        Class::Metrics
    } else if path == "/api/workflows/execution" {
        Class::Webhook
    } else if under("/api") {
        Class::Api
    } else {
        return None;
    })
}

/// The five quotas, one keyed limiter each.
pub struct RateLimits {
    login: Quota,
    llm: Quota,
    metrics: Quota,
    webhook: Quota,
    api: Quota,
    checks: AtomicU64,
}

fn quota(period: Duration, burst: u32) -> Quota {
    GovernorConfigBuilder::default()
        .key_extractor(ClientIpKey)
        .period(period)
        .burst_size(burst)
        .finish()
        .expect("period and burst are not zero")
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            // 5 per 15 min: a burst of 5, one more every 3 min.
            login: quota(Duration::from_secs(180), 5),
            llm: quota(Duration::from_millis(100), 10),
            metrics: quota(Duration::from_millis(50), 20),
            webhook: quota(Duration::from_millis(600), 100),
            // 100/s sustained with bursts of 50.
            api: quota(Duration::from_millis(10), 50),
            checks: AtomicU64::new(0),
        }
    }
}

impl RateLimits {
    fn quota(&self, class: Class) -> &Quota {
        match class {
            Class::Login => &self.login,
            Class::Llm => &self.llm,
            Class::Metrics => &self.metrics,
            Class::Webhook => &self.webhook,
            Class::Api => &self.api,
        }
    }

    /// Ok, or how long the caller must wait.
    pub fn check(&self, class: Class, ip: IpAddr) -> Result<(), Duration> {
        // Keys of clients that went quiet are dropped now and then, so the
        // tables stay bounded by the number of recently active clients.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            for c in [
                Class::Login,
                Class::Llm,
                Class::Metrics,
                Class::Webhook,
                Class::Api,
            ] {
                let l = self.quota(c).limiter();
                l.retain_recent();
                l.shrink_to_fit();
            }
        }
        self.quota(class)
            .limiter()
            .check_key(&source_of(ip))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The rate-limit middleware; `limits` is shared by every connection.
pub async fn rate_limit(limits: Arc<RateLimits>, req: Request, next: Next) -> Response {
    if let Some(class) = classify(req.method(), req.uri().path()) {
        let key = ClientIpKey
            .extract(&req)
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        if let Err(wait) = limits.check(class, key) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("too many requests; retry in {} s", secs.max(1)),
            );
            e.retry_after_secs = Some(secs.max(1));
            return e.into_response();
        }
    }
    next.run(req).await
}

/// Content-Security-Policy of the dashboard. Inline `<script>`/`<style>`
/// blocks of an HTML page are allowed by their hashes, nothing else inline.
fn csp(script_hashes: &[String], style_hashes: &[String]) -> String {
    let list = |h: &[String]| {
        h.iter()
            .map(|h| format!(" 'sha256-{h}'"))
            .collect::<String>()
    };
    format!(
        "default-src 'self'; script-src 'self'{}; style-src 'self'{}; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        list(script_hashes),
        list(style_hashes)
    )
}

/// Base64 (standard) of the SHA-256 of each inline `<tag>…</tag>` body.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    let open = format!("<{tag}");
    let close = format!("</{tag}>");
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(gt) = rest.find('>') else { break };
        let attrs = &rest[..gt];
        rest = &rest[gt + 1..];
        let Some(end) = rest.find(&close) else { break };
        let body = &rest[..end];
        rest = &rest[end + close.len()..];
        if tag == "script" && attrs.contains("src=") {
            continue;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, body.as_bytes());
        out.push(base64(digest.as_ref()));
    }
    out
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// HTML pages larger than this are not inspected for inline blocks.
const MAX_HTML_INSPECT: usize = 2 * 1024 * 1024;

/// Security headers on every response; HTML pages get a CSP naming the
/// hashes of their own inline blocks.
pub async fn security_headers(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let is_html = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let mut resp = if is_html {
        let (mut parts, body) = resp.into_parts();
        match axum::body::to_bytes(body, MAX_HTML_INSPECT).await {
            Ok(bytes) => {
                let html = String::from_utf8_lossy(&bytes);
                let policy = csp(
                    &inline_hashes(&html, "script"),
                    &inline_hashes(&html, "style"),
                );
                if let Ok(v) = HeaderValue::from_str(&policy) {
                    parts.headers.insert(header::CONTENT_SECURITY_POLICY, v);
                }
                Response::from_parts(parts, Body::from(bytes))
            }
            Err(e) => return ApiError::internal(format!("reading HTML body: {e}")).into_response(),
        }
    } else {
        resp
    };
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
    resp
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
    fn ipv6_clients_share_a_quota_per_slash_64() {
        let l = RateLimits::default();
        for i in 0..5 {
            let ip: IpAddr = format!("2001:db8:1:2::{i}").parse().unwrap();
            l.check(Class::Login, ip).unwrap();
        }
        assert!(
            l.check(Class::Login, "2001:db8:1:2::ff".parse().unwrap())
                .is_err()
        );
        l.check(Class::Login, "2001:db8:1:3::1".parse().unwrap())
            .unwrap();
    }

    #[test]
    fn csp_hashes_match_inline_blocks() {
        let html = "<style>a{}</style><script type=module>x()</script><script src=/a.js></script>";
        let s = inline_hashes(html, "script");
        assert_eq!(s.len(), 1);
        // echo -n 'x()' | openssl dgst -sha256 -binary | base64
        assert_eq!(
            s[0],
            base64(ring::digest::digest(&ring::digest::SHA256, b"x()").as_ref())
        );
        assert_eq!(base64(b"any carnal pleas"), "YW55IGNhcm5hbCBwbGVhcw==");
        assert_eq!(inline_hashes(html, "style").len(), 1);
        let p = csp(&s, &[]);
        assert!(p.contains("frame-ancestors 'none'") && p.contains("'sha256-"));
    }
}
