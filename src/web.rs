//! The dashboard, embedded in the binary (rust-embed with `debug-embed`, so
//! debug and release builds serve the same bytes). Content types from the
//! file name, a strong ETag from the embedded SHA-256, and caching that never
//! lets a browser keep a stale `index.html`.
//!
//! Fingerprinting without a build step: every file but `index.html` is also
//! served under `/assets/<version>/<path>`, where `<version>` is a hash over
//! all embedded files (names and contents). `index.html` names its scripts and
//! styles as `{{ASSETS}}/app.js`; that placeholder is replaced by
//! `/assets/<version>` when it is served. ES modules import each other with
//! relative paths, so they all stay under the same versioned prefix. Any
//! change to any file changes the version, so those URLs are cached for a
//! year as immutable; `index.html` itself is always revalidated.

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// The URL prefix of fingerprinted assets.
pub const ASSET_PREFIX: &str = "/assets/";
/// What `index.html` writes where the versioned prefix goes.
const PLACEHOLDER: &str = "{{ASSETS}}";
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "public, max-age=300, must-revalidate";

/// Hash over every embedded file but `index.html` (name and content), 16 hex
/// digits: the `<version>` in `/assets/<version>/…`.
pub fn asset_version() -> &'static str {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let mut names: Vec<_> = Assets::iter().filter(|n| n != "index.html").collect();
        names.sort();
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for n in names {
            if let Some(f) = Assets::get(&n) {
                ctx.update(n.as_bytes());
                ctx.update(&[0]);
                ctx.update(&f.metadata.sha256_hash());
            }
        }
        hex::encode(&ctx.finish().as_ref()[..8])
    })
}

/// `index.html` with the placeholder replaced, and its ETag.
fn index() -> Option<&'static (Vec<u8>, String)> {
    static I: OnceLock<Option<(Vec<u8>, String)>> = OnceLock::new();
    I.get_or_init(|| {
        let f = Assets::get("index.html")?;
        let text = String::from_utf8_lossy(&f.data)
            .replace(PLACEHOLDER, &format!("{ASSET_PREFIX}{}", asset_version()));
        let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
        let etag = format!("\"{}\"", hex::encode(&digest.as_ref()[..16]));
        Some((text.into_bytes(), etag))
    })
    .as_ref()
}

/// Content-Security-Policy of a dashboard page: inline `<script>`/`<style>`
/// blocks are allowed by their hashes, nothing else inline. The pages are
/// embedded, so each policy is worked out once.
fn page_policy(name: &str, html: &[u8]) -> HeaderValue {
    static POLICIES: std::sync::Mutex<Vec<(String, HeaderValue)>> =
        std::sync::Mutex::new(Vec::new());
    let mut known = POLICIES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = known.iter().find(|(n, _)| n == name) {
        return v.clone();
    }
    let html = String::from_utf8_lossy(html);
    let list = |tag| {
        inline_hashes(&html, tag)
            .iter()
            .map(|h| format!(" 'sha256-{h}'"))
            .collect::<String>()
    };
    let policy = format!(
        "default-src 'self'; script-src 'self'{}; style-src 'self'{}; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        list("script"),
        list("style")
    );
    let v = HeaderValue::from_str(&policy).expect("base64 hashes and ASCII are a valid header");
    known.push((name.to_owned(), v.clone()));
    v
}

/// Base64 (standard) of the SHA-256 of each inline `<tag>…</tag>` body.
fn inline_hashes(html: &str, tag: &str) -> Vec<String> {
    use base64::Engine as _;
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
        out.push(base64::engine::general_purpose::STANDARD.encode(digest));
    }
    out
}

/// Whether `If-None-Match` (a list, `*`, weak or strong tags) matches `etag`.
fn etag_matches(if_none_match: Option<&HeaderValue>, etag: &str) -> bool {
    let Some(v) = if_none_match.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

/// The content type of an embedded file, by its extension: the kinds a
/// dashboard is made of (text as UTF-8); anything else is served as bytes.
fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json; charset=utf-8",
        Some("webmanifest") => "application/manifest+json; charset=utf-8",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn respond(
    name: &str,
    data: Vec<u8>,
    etag: &str,
    cache: &'static str,
    if_none_match: Option<&HeaderValue>,
) -> Response {
    let builder = Response::builder()
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, cache)
        .header(header::VARY, "Accept-Encoding");
    if etag_matches(if_none_match, etag) {
        return builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response");
    }
    let kind = content_type(name);
    let builder = if kind.starts_with("text/html") {
        builder.header(header::CONTENT_SECURITY_POLICY, page_policy(name, &data))
    } else {
        builder
    };
    builder
        .header(header::CONTENT_TYPE, kind)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from(data))
        .expect("valid response")
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// Serves `path` from `web/`. `/assets/<version>/<file>` is the fingerprinted
/// form (immutable when `<version>` is the current one; an old version gets
/// today's file, revalidated). Paths without a file extension fall back to
/// `index.html` so the single-page app can own its routes.
pub fn serve(path: &str, if_none_match: Option<&HeaderValue>) -> Response {
    let mut name = path.trim_start_matches('/');
    let mut cache = REVALIDATE;
    if let Some(rest) = path.strip_prefix(ASSET_PREFIX) {
        let Some((version, file)) = rest.split_once('/') else {
            return not_found();
        };
        name = file;
        cache = if version == asset_version() {
            IMMUTABLE
        } else {
            "no-cache"
        };
    }
    let is_index = name.is_empty()
        || name == "index.html"
        || (Assets::get(name).is_none()
            && !path.starts_with(ASSET_PREFIX)
            && !name.rsplit('/').next().unwrap_or("").contains('.'));
    if is_index {
        let Some((data, etag)) = index() else {
            return not_found();
        };
        return respond("index.html", data.clone(), etag, "no-cache", if_none_match);
    }
    let Some(file) = Assets::get(name) else {
        return not_found();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    respond(name, file.data.into_owned(), &etag, cache, if_none_match)
}

/// Every embedded file name (for tests and the page-weight check).
pub fn files() -> Vec<String> {
    let mut v: Vec<String> = Assets::iter().map(|n| n.into_owned()).collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(r: &Response, h: header::HeaderName) -> &str {
        r.headers().get(h).unwrap().to_str().unwrap()
    }

    async fn body(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 10 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn index_names_versioned_assets_and_is_always_revalidated() {
        let r = serve("/", None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header(&r, header::CONTENT_TYPE), "text/html; charset=utf-8");
        let html = body(r).await;
        assert!(
            !html.contains(PLACEHOLDER),
            "placeholder left in index.html"
        );
        let prefix = format!("/assets/{}/", asset_version());
        assert!(html.contains(&format!("{prefix}app.js")), "{html}");
        assert!(html.contains(&format!("{prefix}style.css")), "{html}");
    }

    #[test]
    fn a_page_policy_allows_its_own_inline_blocks_by_hash() {
        let html = "<style>a{}</style><script type=module>x()</script><script src=/a.js></script>";
        let s = inline_hashes(html, "script");
        assert_eq!(s.len(), 1);
        // echo -n 'x()' | openssl dgst -sha256 -binary | base64
        assert_eq!(s[0], "D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI=");
        assert_eq!(inline_hashes(html, "style").len(), 1);
        let p = page_policy("test.html", html.as_bytes());
        let p = p.to_str().unwrap();
        assert!(p.contains("frame-ancestors 'none'"), "{p}");
        assert!(
            p.contains("script-src 'self' 'sha256-D6IGS8VMvCoyaR/l0h9tERrBTATY01CoPS7l6xDv0kI='"),
            "{p}"
        );
    }

    /// A file added to web/ of a kind the table does not know would be
    /// served as bytes and refused by the browser (nosniff).
    #[test]
    fn every_embedded_file_has_a_content_type() {
        for f in files() {
            assert_ne!(content_type(&f), "application/octet-stream", "{f}");
        }
        assert_eq!(content_type("x.bin"), "application/octet-stream");
    }

    #[tokio::test]
    async fn spa_routes_fall_back_to_index_but_missing_files_do_not() {
        assert_eq!(serve("/services", None).status(), StatusCode::OK);
        assert!(body(serve("/settings/x", None)).await.contains("<html"));
        assert_eq!(serve("/nope.js", None).status(), StatusCode::NOT_FOUND);
        let missing = format!("/assets/{}/nope.js", asset_version());
        assert_eq!(serve(&missing, None).status(), StatusCode::NOT_FOUND);
        assert_eq!(serve("/assets/x", None).status(), StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn versioned_assets_are_immutable_and_others_revalidated() {
        let v = asset_version();
        let r = serve(&format!("/assets/{v}/app.js"), None);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, header::CACHE_CONTROL), IMMUTABLE);
        assert!(header(&r, header::CONTENT_TYPE).contains("javascript"));
        assert!(header(&r, header::CONTENT_TYPE).ends_with("charset=utf-8"));
        let css = serve(&format!("/assets/{v}/style.css"), None);
        assert_eq!(
            header(&css, header::CONTENT_TYPE),
            "text/css; charset=utf-8"
        );
        // An older page asking for an old version gets today's file, not cached.
        let old = serve("/assets/0000000000000000/app.js", None);
        assert_eq!(old.status(), StatusCode::OK);
        assert_eq!(header(&old, header::CACHE_CONTROL), "no-cache");
        // The unversioned path works too, with short caching.
        let plain = serve("/app.js", None);
        assert_eq!(header(&plain, header::CACHE_CONTROL), REVALIDATE);
    }

    #[tokio::test]
    async fn etag_gives_304_for_a_matching_if_none_match() {
        for path in ["/", &format!("/assets/{}/app.js", asset_version())] {
            let r = serve(path, None);
            let etag = header(&r, header::ETAG).to_owned();
            assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
            let same = HeaderValue::from_str(&etag).unwrap();
            let r304 = serve(path, Some(&same));
            assert_eq!(r304.status(), StatusCode::NOT_MODIFIED, "{path}");
            assert_eq!(header(&r304, header::ETAG), etag);
            assert!(body(r304).await.is_empty());
            let list = HeaderValue::from_str(&format!("\"x\", W/{etag}")).unwrap();
            assert_eq!(serve(path, Some(&list)).status(), StatusCode::NOT_MODIFIED);
            let other = HeaderValue::from_static("\"0123\"");
            assert_eq!(serve(path, Some(&other)).status(), StatusCode::OK);
        }
    }

    #[test]
    fn the_version_is_stable_and_hex() {
        assert_eq!(asset_version(), asset_version());
        assert_eq!(asset_version().len(), 16);
        assert!(asset_version().bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(files().contains(&"index.html".to_owned()));
    }
}
