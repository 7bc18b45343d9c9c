//! The one error type at the HTTP edge, rendered as the JSON envelope of
//! SPEC §5: `{"error": {"code", "message"}, "timestamp"}`. Internal details
//! go to the log, never to the client.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    pub timestamp: DateTime<Utc>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// snake_case, stable: clients switch on it.
    pub code: String,
    /// For people; may change.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }
    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }
    /// 503 `database_unavailable`: the database is down right now.
    pub fn database_down(what_happens: &str) -> Self {
        Self::unavailable(
            "database_unavailable",
            format!("the database is not reachable; {what_happens}"),
        )
    }
    /// Logs the cause; the client sees only a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the daemon log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
            timestamp: Utc::now(),
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, code) = match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            StatusCode::UNPROCESSABLE_ENTITY => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_body"),
            _ => (StatusCode::BAD_REQUEST, "malformed_json"),
        };
        ApiError::new(status, code, r.body_text())
    }
}

/// `Json` whose rejections use the envelope (400/413/415/422).
#[derive(axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request("invalid_parameters", r.body_text())
    }
}

/// A failed query: the database went away or refused. The detail goes to
/// the log; the client learns that the database is the problem.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::warn!(error = %e, "database query failed");
        ApiError::unavailable(
            "database_unavailable",
            "the database query failed; see the daemon log",
        )
    }
}

/// `Query` whose rejections use the envelope (400 `invalid_parameters`).
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `?limit=&offset=` as documented in every paged list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Most entries returned (default and maximum depend on the list; 100
    /// and 1000 unless it says otherwise).
    pub limit: Option<i64>,
    /// Entries skipped, newest first (default 0).
    pub offset: Option<i64>,
}

/// One page of a list, checked: `1 <= limit <= MAX` (`DEFAULT` when
/// absent), `offset >= 0`. Reads only `limit` and `offset` from the query
/// string, so a handler's own filters come in an [`ApiQuery`] beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paging<const DEFAULT: i64 = 100, const MAX: i64 = 1000> {
    pub limit: i64,
    pub offset: i64,
}

impl<S: Send + Sync, const DEFAULT: i64, const MAX: i64> FromRequestParts<S>
    for Paging<DEFAULT, MAX>
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let ApiQuery(q) = ApiQuery::<PageQuery>::from_request_parts(parts, state).await?;
        let limit = q.limit.unwrap_or(DEFAULT);
        if !(1..=MAX).contains(&limit) {
            return Err(ApiError::bad_request(
                "invalid_limit",
                format!("limit must be between 1 and {MAX}"),
            ));
        }
        let offset = q.offset.unwrap_or(0);
        if offset < 0 {
            return Err(ApiError::bad_request(
                "invalid_offset",
                "offset must not be negative",
            ));
        }
        Ok(Paging { limit, offset })
    }
}
