//! The HTTP API. `router(state)` builds everything apart from serving it, so
//! tests drive it with `oneshot` and the daemon serves it on a listener it is
//! handed. The only module (with `web`) that knows axum.

pub mod error;
pub mod system;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "arasuld",
        description = "Control plane of the Arasul edge-AI appliance. Every JSON body carries `timestamp` (RFC 3339, UTC); errors use the envelope `{\"error\": {\"code\", \"message\"}, \"timestamp\"}`."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI document of every route `router` serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    build().1
}

fn build() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(system::workers))
        .routes(routes!(system::database_pool))
        .routes(routes!(system::reload_config))
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config().http.body_limit_bytes;
    let (api, mut doc) = build();
    doc.info.version = crate::build_info::VERSION.to_string();
    let doc = Arc::new(doc);
    api.route(
        "/api/openapi.json",
        get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .fallback(fallback)
    .method_not_allowed_fallback(|| async {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        )
    })
    .layer(DefaultBodyLimit::max(body_limit))
    .layer(TraceLayer::new_for_http())
    .with_state(state)
}

/// Unknown `/api/...` paths get the JSON envelope; everything else is the dashboard.
async fn fallback(uri: Uri, headers: HeaderMap) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        ApiError::not_found(format!("no route {}", uri.path())).into_response()
    } else {
        crate::web::serve(uri.path(), headers.get(header::IF_NONE_MATCH))
    }
}
