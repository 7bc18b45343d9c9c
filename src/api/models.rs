//! Model downloads as the owner sees them: the curated list with what each
//! model needs and whether it fits, the one download queue (progress, rate,
//! ETA, cancel), and the partial downloads left on the disk. The work is in
//! `crate::ai::pulls`; refusals come in the page's language
//! (`Accept-Language`: German or English).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiJson, ErrorBody};
use crate::ai::Backend;
use crate::ai::admission::{self, CuratedModel, Lang, Refusal};
use crate::ai::pulls::{self, CancelError, Partial, Pull};
use crate::state::AppState;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(catalog))
        .routes(routes!(list, enqueue))
        .routes(routes!(cancel))
        .routes(routes!(remove_partials))
}

pub fn lang(headers: &HeaderMap) -> Lang {
    Lang::from_accept_language(
        headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok()),
    )
}

/// 422 with the numbers, in the caller's language.
pub fn refused(r: &Refusal, lang: Lang) -> ApiError {
    ApiError::unprocessable(r.code(), r.message(lang))
}

fn backend(service: Option<&str>) -> Result<Backend, ApiError> {
    match service {
        None => Ok(Backend::Llm),
        Some(s) => pulls::backend_of(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_service",
                format!("service must be \"llm\" or \"embeddings\", not {s:?}"),
            )
        }),
    }
}

/// A curated model (`assets/models.yaml`) and whether it fits this box.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CatalogEntry {
    pub name: String,
    /// `llm` or `embeddings`: which runtime it belongs in.
    pub role: String,
    /// Bytes the runtime downloads (the curated list's figure).
    pub download: u64,
    /// Bytes it needs loaded.
    pub memory: u64,
    /// What it is, in English and German.
    pub en: String,
    pub de: String,
    /// Offered first by the setup wizard.
    pub recommended: bool,
    /// Bytes still to download (the registry's manifest when it answered).
    pub download_left: Option<u64>,
    pub fits: bool,
    /// Why it does not fit, in the page's language.
    pub refusal: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ModelCatalog {
    pub models: Vec<CatalogEntry>,
    pub timestamp: DateTime<Utc>,
}

/// The curated models (`assets/models.yaml`), each with whether it fits
/// this box now (disk and memory, checked as before a pull).
#[utoipa::path(get, path = "/api/models/catalog", tag = "ai",
    responses((status = 200, body = ModelCatalog)))]
pub async fn catalog(State(state): State<AppState>, headers: HeaderMap) -> Json<ModelCatalog> {
    let lang = lang(&headers);
    let deps = &state.models;
    let checks = admission::curated().into_iter().map(|m| async move {
        let backend = pulls::backend_of(&m.role).unwrap_or(Backend::Llm);
        let (need, room) = deps.assess(&m.name, backend).await;
        let need = need.unwrap_or(admission::Footprint {
            download: m.download,
            memory: m.memory,
        });
        let verdict = admission::check(&m.name, need, room);
        let CuratedModel {
            name,
            role,
            download,
            memory: _,
            en,
            de,
            recommended,
        } = m;
        CatalogEntry {
            name,
            role,
            download,
            memory: need.memory,
            en,
            de,
            recommended,
            download_left: Some(need.download),
            fits: verdict.is_ok(),
            refusal: verdict.err().map(|r| r.message(lang)),
        }
    });
    Json(ModelCatalog {
        models: futures::future::join_all(checks).await,
        timestamp: Utc::now(),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PullList {
    /// Newest first: the waiting and running ones, then the last 20 finished.
    pub pulls: Vec<Pull>,
    /// Partial downloads in the runtimes' stores.
    pub partials: Vec<Partial>,
    pub timestamp: DateTime<Utc>,
}

/// The download queue and the partial downloads.
#[utoipa::path(get, path = "/api/models/pulls", tag = "ai",
    responses((status = 200, body = PullList)))]
pub async fn list(State(state): State<AppState>) -> Json<PullList> {
    let mut partials = Vec::new();
    for b in [Backend::Llm, Backend::Embeddings] {
        if let Some(store) = state.models.store(b) {
            partials.extend(pulls::partials(&store, pulls::service_name(b)));
        }
    }
    Json(PullList {
        pulls: state.models.queue.list(),
        partials,
        timestamp: Utc::now(),
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$")]
    pub model: String,
    /// `llm` (default) or `embeddings`.
    pub service: Option<String>,
}

/// Queues a download after the admission check. 202 with the new pull, or
/// 200 with the one already waiting or running for that model.
#[utoipa::path(post, path = "/api/models/pulls", tag = "ai",
    request_body = PullRequest,
    responses((status = 202, body = Pull), (status = 200, description = "Already queued", body = Pull),
        (status = 400, description = "`invalid_model`, `invalid_service`", body = ErrorBody),
        (status = 422, description = "`insufficient_disk`, `insufficient_memory` (with the numbers)", body = ErrorBody)))]
pub async fn enqueue(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PullRequest>,
) -> Result<Response, ApiError> {
    let (pull, new) =
        admit_and_enqueue(&state, &headers, &req.model, req.service.as_deref()).await?;
    let status = if new {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(pull)).into_response())
}

/// The checks and the queueing the SSE route shares.
pub async fn admit_and_enqueue(
    state: &AppState,
    headers: &HeaderMap,
    model: &str,
    service: Option<&str>,
) -> Result<(Pull, bool), ApiError> {
    crate::ai::check_model_name(model).map_err(|m| ApiError::bad_request("invalid_model", m))?;
    let b = backend(service)?;
    state
        .models
        .admit(model, b)
        .await
        .map_err(|r| refused(&r, lang(headers)))?;
    let (pull, new) = state.models.queue.enqueue(model, b);
    if new {
        tracing::info!(model, service = ?b, "model download queued");
    }
    Ok((pull, new))
}

/// Cancels a waiting or running download (the runtime keeps the partial
/// blobs; a new pull of the model resumes them).
#[utoipa::path(delete, path = "/api/models/pulls/{id}", tag = "ai",
    params(("id" = u64, Path)),
    responses((status = 200, body = Pull), (status = 404, body = ErrorBody),
        (status = 409, description = "`already_finished`", body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<u64>,
) -> Result<Json<Pull>, ApiError> {
    match state.models.queue.cancel(id) {
        Ok(p) => Ok(Json(p)),
        Err(CancelError::NotFound) => Err(ApiError::not_found(format!("no download {id}"))),
        Err(CancelError::Finished(s)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_finished",
            format!("download {id} has already ended ({s:?})").to_lowercase(),
        )),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct PartialsQuery {
    /// `llm` (default) or `embeddings`.
    pub service: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RemovedPartials {
    pub files: u64,
    pub bytes: u64,
}

/// Removes the partial downloads of a runtime's store; refused while a
/// download runs there.
#[utoipa::path(delete, path = "/api/models/partials", tag = "ai",
    params(PartialsQuery),
    responses((status = 200, body = RemovedPartials),
        (status = 400, body = ErrorBody),
        (status = 409, description = "`pull_running`", body = ErrorBody),
        (status = 404, description = "`no_store`: the runtime's store is not a directory arasuld can see", body = ErrorBody)))]
pub async fn remove_partials(
    State(state): State<AppState>,
    Query(q): Query<PartialsQuery>,
) -> Result<Json<RemovedPartials>, ApiError> {
    let b = backend(q.service.as_deref())?;
    if state.models.queue.busy(b) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "pull_running",
            "a download is running: cancel it first",
        ));
    }
    let store = state.models.store(b).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_store",
            "the runtime's model store is not a host directory (a named volume)",
        )
    })?;
    let (files, bytes) = tokio::task::spawn_blocking(move || pulls::remove_partials(&store))
        .await
        .map_err(|e| ApiError::internal(format!("removing partials: {e}")))?
        .map_err(|e| ApiError::internal(format!("removing partials: {e}")))?;
    tracing::info!(files, bytes, "partial model downloads removed");
    Ok(Json(RemovedPartials { files, bytes }))
}
