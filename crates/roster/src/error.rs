//! The HTTP layer's one error type. Every variant knows its status; the body is an RFC 9457
//! `application/problem+json` document with a sentence that says what was wrong. Internal details
//! are logged, never sent.

use crate::app::AppError;
use crate::domain::full_update::LineError;
use crate::domain::InvalidInput;
use crate::store::StoreError;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request could not be read: malformed JSON, a bad path or query parameter.
    #[error("{0}")]
    BadRequest(String),
    /// Upload lines that could not be read, each with its number.
    #[error("{0}")]
    InvalidLines(String, Vec<LineError>),
    /// The request was read but a value breaks a rule.
    #[error("{0}")]
    Unprocessable(String),
    /// No valid token: answered with a `WWW-Authenticate` header.
    #[error("{0}")]
    Unauthorized(String),
    /// A valid token that may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Timeout(String),
    /// What was asked for is no longer kept (a change-feed cursor older than the history).
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unavailable(String),
    /// A fault on our side; the detail is logged and a generic sentence is sent.
    #[error("{0}")]
    Internal(String),
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, e.g. `urn:roster:problem:not-found`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    /// What was wrong with this request, and how to fix it.
    pub detail: String,
    /// The upload lines that could not be read (the first 100), for an upload refused for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<LineError>>,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::InvalidLines(..) => StatusCode::BAD_REQUEST,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Gone(_) => StatusCode::GONE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::InvalidLines(..) => "invalid-lines",
            Self::Unprocessable(_) => "invalid-value",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not-found",
            Self::MethodNotAllowed(_) => "method-not-allowed",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload-too-large",
            Self::UnsupportedMediaType(_) => "unsupported-media-type",
            Self::Timeout(_) => "timeout",
            Self::Gone(_) => "gone",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    pub(crate) fn detail(&self) -> String {
        match self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "roster failed to handle this request; the server log has the details".to_owned()
            }
            Self::Unavailable(detail) => {
                tracing::warn!(%detail, "database unavailable");
                "the database is unavailable; retry later".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let challenge = matches!(self, Self::Unauthorized(_));
        let kind = format!("urn:roster:problem:{}", self.slug());
        let detail = self.detail();
        let errors = match self {
            Self::InvalidLines(_, lines) => Some(lines),
            _ => None,
        };
        let problem = Problem {
            kind,
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="roster""#),
            );
        }
        response
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::Unprocessable(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { message, .. } => Self::NotFound(message),
            StoreError::Conflict { message, .. } | StoreError::Stale(message) => {
                Self::Conflict(message)
            }
            StoreError::Forbidden(m) => Self::Forbidden(m),
            StoreError::Invalid(e) => e.into(),
            StoreError::InvalidLines(m, lines) => Self::InvalidLines(m, lines),
            StoreError::Unavailable(m) => Self::Unavailable(m),
            StoreError::TimedOut(m) => Self::Timeout(m),
            StoreError::BadValue(m) => Self::BadRequest(m),
            StoreError::Gone(m) => Self::Gone(format!(
                "{m}. Export a fresh snapshot (GET /api/v1/export) and follow the feed from its \
                 cursor"
            )),
            StoreError::Database(e) => Self::Internal(e.to_string()),
            StoreError::Migrate(e) => Self::Internal(e.to_string()),
        }
    }
}

impl From<AppError> for ApiError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Store(e) => e.into(),
            AppError::Invalid(e) => e.into(),
            AppError::Unreadable(m) => Self::BadRequest(m),
            AppError::InvalidLines(m, lines) => Self::InvalidLines(m, lines),
            AppError::TooLarge(m) => Self::PayloadTooLarge(m),
            AppError::NotFound(m) => Self::NotFound(m),
            AppError::Forbidden(m) => Self::Forbidden(m),
            AppError::Conflict(m) => Self::Conflict(m),
            e @ AppError::NotUploading(id) => {
                Self::Conflict(format!("{e} with POST /api/v1/operations/{id}/reject"))
            }
            e @ AppError::MembersNotReplaced(_) => Self::Conflict(e.to_string()),
            AppError::Internal(m) => Self::Internal(m),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let text = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(format!(
                "the request body is larger than this endpoint accepts: {text}"
            )),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(
                "send the body as JSON with the header `Content-Type: application/json`".to_owned(),
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::Unprocessable(text),
            _ => Self::BadRequest(text),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge(format!(
                "the request body is larger than this endpoint accepts: {}",
                rejection.body_text()
            )),
            _ => Self::BadRequest(rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}
