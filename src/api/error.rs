//! `ApiError`: every error the API returns, in one JSON shape:
//! `{"error": {"code": "...", "message": "...", "field": "..."}}`.
//!
//! The only place errors meet HTTP. Causes are logged here; clients never
//! see SQL, Redis or internal messages.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{engine, store};

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code: `unauthorized`, `forbidden`, `not_found`,
    /// `invalid_request`, `invalid_json`, `conflict`, `payload_too_large`,
    /// `method_not_allowed`, `unsupported_media_type`, `unavailable`, `internal`.
    pub code: &'static str,
    /// For people.
    pub message: String,
    /// The request field at fault (dotted path), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// Names the field at fault.
    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// The field at fault, if one is named.
    pub fn field_name(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: authenticated, but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 for `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 400: a parameter or field is invalid.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message).field(field)
    }

    /// Makes a field error a 422: the JSON was fine, its content is not.
    pub fn unprocessable(mut self) -> Self {
        self.status = StatusCode::UNPROCESSABLE_ENTITY;
        self
    }

    /// 400: the body is not JSON.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 413.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    /// 415.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        )
    }

    /// 404 for an unknown route.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this endpoint",
        )
    }

    /// 503: a dependency is down; the cause is logged, not sent.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "dependency unavailable");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "a backing service is unavailable; try again",
        )
    }

    /// 500; the cause is logged, not sent.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// What people read.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        if e.is_unavailable() {
            ApiError::unavailable(&e)
        } else {
            ApiError::internal(&e)
        }
    }
}

impl From<crate::auth::Error> for ApiError {
    fn from(e: crate::auth::Error) -> Self {
        match e {
            crate::auth::Error::Store(s) => s.into(),
            other => ApiError::internal(&other),
        }
    }
}

/// The one place engine errors become HTTP: what is not there is a 404,
/// bad input a 422, a state that forbids the request (or a row too busy to
/// change) a 409, the database away a 503.
impl From<engine::Error> for ApiError {
    fn from(e: engine::Error) -> Self {
        use engine::Error as E;
        let field = e.field().map(str::to_owned);
        let err = match e {
            E::WorkflowNotFound => ApiError::not_found("workflow"),
            E::VersionNotFound => ApiError::not_found("workflow version"),
            E::ContactNotFound => ApiError::not_found("contact"),
            E::ExecutionNotFound => ApiError::not_found("execution"),
            E::OperationNotFound => ApiError::not_found("operation"),
            E::Invalid { message, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
            }
            E::WorkflowInactive
            | E::WorkflowArchived
            | E::ContactOptedOut
            | E::ContactExists
            | E::Illegal(_)
            | E::OperationFinished(_)
            | E::Contended => ApiError::conflict(e.to_string()),
            E::Store(s) => return s.into(),
            E::Queue(q) => return ApiError::unavailable(&q),
        };
        match field {
            Some(f) => err.field(f),
            None => err,
        }
    }
}

impl From<crate::alert::Error> for ApiError {
    fn from(e: crate::alert::Error) -> Self {
        use crate::alert::Error as E;
        match e {
            E::Invalid(i) => ApiError::invalid(i.field, i.message).unprocessable(),
            E::Forbidden(m) => ApiError::forbidden(m),
            E::NotFound(what) => ApiError::not_found(what),
            E::Store(s) => s.into(),
            E::Queue(q) => ApiError::unavailable(&q),
        }
    }
}
