//! The dashboard, embedded in the binary (rust-embed with `debug-embed`, so
//! debug and release builds serve the same bytes). Content types from the
//! file name, a strong ETag from the embedded SHA-256, and caching that never
//! lets a browser keep a stale `index.html`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// Serves `path` from `web/`; paths without a file extension fall back to
/// `index.html` so the single-page app can own its routes.
pub fn serve(path: &str, if_none_match: Option<&HeaderValue>) -> Response {
    let mut name = path.trim_start_matches('/');
    if name.is_empty() {
        name = "index.html";
    }
    let file = match Assets::get(name) {
        Some(f) => Some((name, f)),
        None if !name.rsplit('/').next().unwrap_or("").contains('.') => {
            Assets::get("index.html").map(|f| ("index.html", f))
        }
        None => None,
    };
    let Some((name, file)) = file else {
        return (StatusCode::NOT_FOUND, "not found").into_response();
    };
    let etag = format!("\"{}\"", hex::encode(&file.metadata.sha256_hash()[..16]));
    let cache = cache_control(name);
    if if_none_match.is_some_and(|v| v.as_bytes() == etag.as_bytes()) {
        return Response::builder()
            .status(StatusCode::NOT_MODIFIED)
            .header(header::ETAG, etag)
            .header(header::CACHE_CONTROL, cache)
            .body(Body::empty())
            .expect("valid response");
    }
    let mime = mime_guess::from_path(name).first_or_octet_stream();
    let content_type = if mime.type_() == "text" || mime.subtype() == "javascript" {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, cache)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .body(Body::from(file.data.into_owned()))
        .expect("valid response")
}

/// `index.html` must always be revalidated (it names the current assets);
/// files with a content hash in their name never change and are cached for a
/// year; the rest are revalidated after a short time.
fn cache_control(name: &str) -> &'static str {
    if name == "index.html" {
        "no-cache"
    } else if is_fingerprinted(name) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300, must-revalidate"
    }
}

/// `app.3f9a1c2b.js`: a dot-separated part of at least 8 hex digits.
fn is_fingerprinted(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    let parts: Vec<&str> = file.split('.').collect();
    parts.len() >= 3
        && parts[1..parts.len() - 1]
            .iter()
            .any(|p| p.len() >= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_detection() {
        assert!(is_fingerprinted("assets/app.3f9a1c2b.js"));
        assert!(!is_fingerprinted("app.js"));
        assert!(!is_fingerprinted("index.html"));
        assert_eq!(cache_control("index.html"), "no-cache");
    }
}
