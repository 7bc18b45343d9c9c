//! API keys: `POST /api/keys` makes one and answers it once, `GET /api/keys`
//! lists them (never a key), `DELETE /api/keys/{id}` revokes one. Admin only.
//! The rows live in PostgreSQL (`db::keys`); while the database is down a
//! change is refused with 503 and nothing changes, and the keys loaded last
//! keep working.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use super::guard::client_ip;
use crate::auth::keys::{ApiKey, Scope};
use crate::db::keys::CreateError;
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(revoke))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for (1 to 64 characters), e.g. "n8n" or "laptop".
    #[schema(min_length = 1, max_length = 64)]
    pub name: String,
    /// At least one of `llm`, `embeddings`, `metrics`, `admin`.
    #[schema(min_items = 1)]
    pub scopes: Vec<Scope>,
    /// RFC 3339, in the future; never expires when absent.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The key: shown this once, stored only as a hash.
    #[schema(example = "ak_0Jk3…")]
    pub key: String,
    #[serde(flatten)]
    pub info: ApiKey,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    /// Live keys (not revoked), newest first; expired ones included.
    pub keys: Vec<ApiKey>,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyRevoked {
    pub id: i64,
    pub revoked: bool,
    pub timestamp: DateTime<Utc>,
}

fn db_down(what: &str) -> ApiError {
    ApiError::database_down(what)
}

/// Makes an API key. The answer holds the key; it cannot be shown again.
#[utoipa::path(post, path = "/api/keys", tag = "keys",
    request_body = CreateKey,
    responses(
        (status = 201, body = CreatedKey),
        (status = 400, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, description = "`too_many_keys`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: nothing was made", body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    req: axum::extract::Request,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let ip = client_ip(req.extensions());
    let ApiJson(body) =
        <ApiJson<CreateKey> as axum::extract::FromRequest<AppState>>::from_request(req, &state)
            .await?;
    if !state.db.status().up {
        return Err(db_down("no key was made, retry later"));
    }
    match crate::db::keys::create(
        state.db.pool(),
        &body.name,
        &body.scopes,
        body.expires_at,
        Some(ip),
        "api",
    )
    .await
    {
        Ok((new, info)) => {
            state.keys.insert(new.hash, info.clone());
            tracing::info!(id = info.id, name = %info.name, "API key created");
            Ok((
                StatusCode::CREATED,
                Json(CreatedKey {
                    key: new.secret,
                    info,
                    timestamp: Utc::now(),
                }),
            ))
        }
        Err(CreateError::Invalid(m)) => Err(ApiError::unprocessable("invalid_key", m)),
        Err(e @ CreateError::TooMany) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "too_many_keys",
            e.to_string(),
        )),
        Err(CreateError::Db(e)) => {
            tracing::warn!(error = %e, "API key not stored");
            Err(db_down("no key was made, retry later"))
        }
    }
}

/// The live keys (name, scopes, hint, created, last used, expiry).
#[utoipa::path(get, path = "/api/keys", tag = "keys",
    responses((status = 200, body = KeyList)))]
pub async fn list(State(state): State<AppState>) -> Json<KeyList> {
    Json(KeyList {
        keys: state.keys.list(),
        timestamp: Utc::now(),
    })
}

/// Revokes a key: refused from now on.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys",
    params(("id" = i64, Path, description = "The key's id")),
    responses(
        (status = 200, body = KeyRevoked),
        (status = 400, description = "`invalid_id`", body = ErrorBody),
        (status = 404, description = "`not_found`: no live key with that id", body = ErrorBody),
        (status = 503, description = "`database_unavailable`: the key still works", body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: axum::extract::Request,
) -> Result<Json<KeyRevoked>, ApiError> {
    let id: i64 = id.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid_id",
            format!("{id:?} is not a key id (a whole number)"),
        )
    })?;
    let ip = client_ip(req.extensions());
    if !state.db.status().up {
        return Err(db_down("the key was not revoked, retry later"));
    }
    match crate::db::keys::revoke(state.db.pool(), id, Some(ip), "api").await {
        Ok(true) => {
            state.keys.revoke(id);
            tracing::info!(id, "API key revoked");
            Ok(Json(KeyRevoked {
                id,
                revoked: true,
                timestamp: Utc::now(),
            }))
        }
        Ok(false) => Err(ApiError::not_found(format!("no live API key with id {id}"))),
        Err(e) => {
            tracing::warn!(error = %e, "API key not revoked");
            Err(db_down("the key was not revoked, retry later"))
        }
    }
}
