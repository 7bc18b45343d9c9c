//! The HTTP API. `router(state)` builds everything apart from serving it, so
//! tests drive it with `oneshot` and the daemon serves it on a listener it is
//! handed. The only module (with `web`) that knows axum.

pub mod ai;
pub mod auth;
pub mod backups;
pub mod error;
pub mod guard;
pub mod healing;
pub mod keys;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod models;
pub mod notifications;
pub mod proxy;
pub mod serve;
pub mod services;
pub mod setup;
pub mod system;
pub mod tls;
pub mod update;
pub mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;
use error::ApiError;
use guard::Protection;

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
    let mut doc = build(&guard::describe).1;
    guard::document_security(&mut doc);
    doc
}

/// What a route group gets: [`guard::protect`] when serving, or only
/// [`guard::describe`] for the document.
type Guard<'a> = &'a dyn Fn(OpenApiRouter<AppState>, Protection) -> OpenApiRouter<AppState>;

fn build(guard: Guard<'_>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    const ADMIN: Protection = Protection::Admin { initial_ok: false };
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(system::health))
        .routes(routes!(auth::login))
        .routes(routes!(auth::password_requirements))
        // Admin: every route in this group needs a login (api::guard).
        .merge(guard(
            OpenApiRouter::new()
                .routes(routes!(system::workers))
                .routes(routes!(system::database_pool))
                .routes(routes!(system::reload_config))
                .routes(routes!(auth::logout_all))
                .routes(routes!(auth::sessions))
                .routes(routes!(auth::verify))
                .routes(routes!(services::one))
                .routes(routes!(services::start))
                .routes(routes!(services::stop))
                .routes(routes!(services::restart))
                .routes(routes!(services::logs))
                .routes(routes!(healing::events))
                .routes(routes!(healing::status))
                .routes(routes!(healing::recovery_actions))
                .routes(routes!(healing::service_failures))
                .routes(routes!(healing::reboot_history))
                .routes(routes!(healing::metrics))
                .routes(routes!(healing::reboot))
                .merge(ai::routes())
                .merge(models::routes())
                .merge(setup::routes())
                .merge(notifications::routes())
                .merge(update::routes())
                .merge(backups::routes()),
            ADMIN,
        ))
        // An admin, or an API key with the route's scope.
        .merge(guard(
            ai::llm_routes(),
            Protection::Key(crate::auth::keys::Scope::Llm),
        ))
        .merge(guard(
            ai::embeddings_routes(),
            Protection::Key(crate::auth::keys::Scope::Embeddings),
        ))
        .merge(guard(keys::routes(), ADMIN))
        // Admin, but usable while the initial password is still in use.
        .merge(guard(
            OpenApiRouter::new()
                .routes(routes!(auth::me))
                .routes(routes!(auth::logout))
                .routes(routes!(auth::change_password)),
            Protection::Admin { initial_ok: true },
        ))
        // Status: public unless http.require_auth_for_status is set.
        .merge(guard(
            OpenApiRouter::new()
                .routes(routes!(metrics::live))
                .routes(routes!(metrics::history))
                .routes(routes!(metrics::live_stream))
                .routes(routes!(metrics::prometheus))
                .routes(routes!(metrics::system_status))
                .routes(routes!(metrics::system_info))
                .routes(routes!(metrics::system_network))
                .routes(routes!(services::list)),
            Protection::Status,
        ))
        // Logs and workflows: admin, except the public activity summary.
        .merge(guard(
            OpenApiRouter::new()
                .routes(routes!(logs::list))
                .routes(routes!(logs::tail))
                .routes(routes!(logs::stream))
                .routes(routes!(logs::search))
                .routes(routes!(workflows::execution))
                .routes(routes!(workflows::history))
                .routes(routes!(workflows::stats)),
            ADMIN,
        ))
        .merge(guard(
            OpenApiRouter::new().routes(routes!(workflows::activity)),
            Protection::Status,
        ))
        .split_for_parts()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config().http.body_limit_bytes;
    let max_streams = state.config().http.max_streams;
    let rate_limits = Arc::new(limits::RateLimits::new(&state.config().http));
    let protect = |group, protection| guard::protect(group, protection, &state);
    let (api, mut doc) = build(&protect);
    guard::document_security(&mut doc);
    doc.info.version = crate::build_info::VERSION.to_string();
    // Served as the bytes it serialises to: the document itself (a few MB
    // of maps) is dropped here instead of living, and being cloned per
    // request, for the daemon's lifetime.
    let json =
        serde_json::to_vec(&doc).expect("an OpenAPI document of string-keyed maps serialises");
    drop(doc);
    crate::os::sys::release_free_heap();
    let doc = axum::body::Bytes::from(json);
    let api = api
        .route(
            "/api/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc) }
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
        // One `layer` call, so one boxed service per route instead of one
        // per layer (each is cloned for every request). The default
        // predicate leaves SSE, images and tiny bodies uncompressed.
        .layer(
            tower::ServiceBuilder::new()
                .layer(tower_http::compression::CompressionLayer::new())
                .layer(DefaultBodyLimit::max(body_limit)),
        );
    // The front door's apps answer with their own headers and bodies (no
    // security headers, no recompression of a stream): merged after the
    // API's layers, so those do not apply to them. One router, so a request
    // is routed once; both halves share the edge (client address, Origin
    // check, rate limits, security headers), which hands the limits and the
    // stream slots to the handlers and logs the failures.
    let edge = limits::Edge {
        limits: rate_limits,
        slots: serve::StreamSlots::new(max_streams),
    };
    api.merge(proxy::routes())
        .with_state(state)
        .layer(axum::middleware::from_fn(move |req, next| {
            limits::edge(edge.clone(), req, next)
        }))
}

/// The plain-HTTP side when HTTPS is on: every request is sent, path and
/// query kept, to the same host on the HTTPS port (308, so a POST stays a
/// POST).
pub fn redirect_to_https(port: u16) -> Router {
    Router::new().fallback(move |uri: Uri, headers: HeaderMap| async move {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.parse::<axum::http::uri::Authority>().ok())
            .map_or_else(|| "arasul.local".to_owned(), |a| a.host().to_owned());
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        let port = if port == 443 {
            String::new()
        } else {
            format!(":{port}")
        };
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        axum::response::Redirect::permanent(&format!("https://{host}{port}{path}"))
    })
}

/// Unknown `/api/...` paths get the JSON envelope; everything else is the dashboard.
async fn fallback(uri: Uri, headers: HeaderMap) -> Response {
    if uri.path() == "/api" || uri.path().starts_with("/api/") {
        ApiError::not_found(format!("no route {}", uri.path())).into_response()
    } else {
        crate::web::serve(uri.path(), headers.get(header::IF_NONE_MATCH))
    }
}
