//! Errors as RFC 9457 problem details (`application/problem+json`): the
//! HTTP status a client acts on, a short title, a stable `code`, and the
//! error's own words as `detail`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cqrs_core::middleware::Rejection;
use cqrs_core::{CommandError, StoreError, ViewError};

/// A problem response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: StatusCode,
    /// Stable, for clients to match on: `not_found`, `conflict`, ...
    pub code: &'static str,
    pub detail: String,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// A request body that is not the command's JSON.
    pub fn bad_body(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_body", detail)
    }

    /// A command a layer, the aggregate or the store refused.
    pub fn of_command<E: std::error::Error>(error: &CommandError<E>) -> Self {
        let detail = error.to_string();
        let (status, code) = match error {
            CommandError::Domain(_) => (StatusCode::UNPROCESSABLE_ENTITY, "domain"),
            CommandError::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            CommandError::AlreadyExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            CommandError::Conflict { .. } => (StatusCode::CONFLICT, "conflict"),
            // An idempotency key sent again with another body.
            CommandError::CommandIdReused { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            CommandError::Rejected { rejection, .. } => match rejection {
                Rejection::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
                Rejection::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
                _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            },
            CommandError::Store(store) => return Self::of_store(store),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Self::new(status, code, detail)
    }

    /// The log could not be read or written.
    pub fn of_store(error: &StoreError) -> Self {
        Self::unavailable(error.is_transient(), error.to_string())
    }

    /// A view could not be read.
    pub fn of_view(error: &ViewError) -> Self {
        Self::unavailable(error.is_transient(), error.to_string())
    }

    /// A query in plain SQL failed: 503 if the database could not be
    /// reached, 500 otherwise.
    pub fn of_sql(error: &cqrs_core::sqlx::Error) -> Self {
        use cqrs_core::sqlx::Error;
        let transient = matches!(
            error,
            Error::Io(_) | Error::PoolTimedOut | Error::PoolClosed | Error::WorkerCrashed
        );
        Self::unavailable(transient, error.to_string())
    }

    /// 503 for what may pass (the database is down), 500 for what will not.
    fn unavailable(transient: bool, detail: String) -> Self {
        if transient {
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        } else {
            Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", detail)
        }
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": "about:blank",
            "title": self.title(),
            "status": self.status.as_u16(),
            "code": self.code,
            "detail": self.detail,
        });
        let mut response = (self.status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
