//! The router in-process (`oneshot`, no port): envelope, content types,
//! caching, and that the OpenAPI document matches what is served.

mod openapi;

use crate::common;

use std::sync::Arc;

use arasuld::state::AppState;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

/// One auth instance (cheap argon2) for every test in this file.
fn test_auth() -> Arc<arasuld::auth::Auth> {
    static AUTH: std::sync::OnceLock<(tempfile::TempDir, Arc<arasuld::auth::Auth>)> =
        std::sync::OnceLock::new();
    AUTH.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let auth = Arc::new(common::fast_auth(dir.path()));
        (dir, auth)
    })
    .1
    .clone()
}

fn state() -> AppState {
    let config = common::offline_config();
    let workers = arasuld::tasks::Workers::new((&config.workers).into());
    common::app_state(
        config,
        test_auth(),
        workers,
        arasuld::docker::SupervisorHandle::detached(),
    )
}

async fn call(req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let resp = arasuld::api::router(state()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("JSON body")
}

#[tokio::test]
async fn unknown_api_route_is_a_404_in_the_envelope() {
    let (status, headers, body) = call(get("/api/no-such-thing")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v = json(&body);
    assert_eq!(v["error"]["code"], "not_found");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/api/no-such-thing")
    );
    assert!(v["timestamp"].is_string());
}

#[tokio::test]
async fn wrong_method_is_a_405_in_the_envelope() {
    let req = Request::delete("/api/health").body(Body::empty()).unwrap();
    let (status, _, body) = call(req).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json(&body)["error"]["code"], "method_not_allowed");
}

#[tokio::test]
async fn health_needs_no_database() {
    let (status, _, body) = call(get("/api/health")).await;
    assert_eq!(status, StatusCode::OK);
    let v = json(&body);
    assert_eq!(v["status"], "ok");
    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn dashboard_is_embedded_with_etag_and_revalidation() {
    let (status, headers, body) = call(get("/")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    assert!(String::from_utf8_lossy(&body).contains("<title>Arasul</title>"));
    let etag = headers[header::ETAG].clone();

    let req = Request::get("/")
        .header(header::IF_NONE_MATCH, etag.clone())
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = call(req).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    // Client-side routes of the single-page app get index.html too.
    let (status, headers, _) = call(get("/services/llm")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ETAG], etag);
    // A missing asset is a plain 404, not index.html.
    assert_eq!(call(get("/missing.js")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_every_served_route() {
    let (status, _, body) = call(get("/api/openapi.json")).await;
    assert_eq!(status, StatusCode::OK);
    let doc = json(&body);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(path.as_str())
                .body(Body::empty())
                .unwrap();
            let (status, _, _) = call(req).await;
            assert_ne!(
                status,
                StatusCode::NOT_FOUND,
                "{method} {path} is documented but not served"
            );
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
    for p in [
        "/api/health",
        "/api/system/workers",
        "/api/database/pool",
        "/api/system/reload-config",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the document");
    }
}
