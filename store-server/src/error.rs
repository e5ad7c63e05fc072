//! The server's one error type, mapped to an HTTP response in exactly one place.
//!
//! Client-visible failures carry an [`ErrorCode`], a message and details. Internal failures
//! are logged once with their cause chain and answered with an opaque `internal` body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use store_api::{ErrorBody, ErrorCode, ErrorDetail};

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A failure the client caused or can act on.
    #[error("{code}{}: {message}", at_field(details))]
    Client {
        /// HTTP status.
        status: StatusCode,
        /// Stable code.
        code: ErrorCode,
        /// A sentence for a person.
        message: String,
        /// Structured facts.
        details: Map<String, Value>,
    },
    /// A database failure the client cannot act on.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Any other failure inside the server.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

/// ` at <field>` when the details name a field, for messages outside HTTP (the command line).
fn at_field(details: &Map<String, Value>) -> String {
    details.get("field").and_then(Value::as_str).map(|field| format!(" at {field}")).unwrap_or_default()
}

/// Shorthand for handler results.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// A client error with no details.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Client { status, code, message: message.into(), details: Map::new() }
    }

    /// Adds one detail to a client error (internal errors are left alone).
    #[must_use]
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Self::Client { details, .. } = &mut self {
            details.insert(key.to_owned(), value.into());
        }
        self
    }

    /// 400 `invalid_request` naming the field at fault.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message).with_detail("field", field)
    }

    /// 422 `validation_failed` naming the field at fault.
    pub fn validation(field: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::ValidationFailed, message)
            .with_detail("field", field)
    }

    /// 404 `not_found` for the named object.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, format!("{what} `{id}` does not exist"))
            .with_detail(what, id)
    }

    /// The status this error is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Database(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A business refusal the request's key stores and replays (DESIGN principle 4): a client
    /// error the operation itself decided. Transport-level failures, `unavailable`, a key in use
    /// and rate limits leave the key free, so a retry runs again.
    #[must_use]
    pub fn refusal_body(&self) -> Option<(StatusCode, Vec<u8>)> {
        let Self::Client { status, code, message, details } = self else { return None };
        let transient = matches!(
            code,
            ErrorCode::Unavailable
                | ErrorCode::ProviderUnavailable
                | ErrorCode::RequestInProgress
                | ErrorCode::IdempotencyKeyReused
                | ErrorCode::RateLimited
        );
        if transient || !status.is_client_error() {
            return None;
        }
        let body = ErrorBody {
            error: ErrorDetail { code: *code, message: message.clone(), details: details.clone() },
        };
        serde_json::to_vec(&body).ok().map(|body| (*status, body))
    }

    /// The stable code of this error.
    #[must_use]
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Client { code, .. } => *code,
            Self::Database(sqlx::Error::PoolTimedOut) => ErrorCode::Unavailable,
            Self::Database(_) | Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Builds the JSON error response for a status, code and message.
pub fn error_response(
    status: StatusCode,
    code: ErrorCode,
    message: String,
    details: Map<String, Value>,
) -> Response {
    let retry_after_s = details.get("retry_after_s").and_then(Value::as_u64);
    let body = ErrorBody { error: ErrorDetail { code, message, details } };
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if let Some(seconds) = retry_after_s
        && code == ErrorCode::RateLimited
        && let Ok(value) = HeaderValue::from_str(&seconds.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        match self {
            Self::Client { message, details, .. } => error_response(status, code, message, details),
            Self::Database(error) => {
                tracing::error!(error = %error, cause = ?error, "database failure");
                let message = if code == ErrorCode::Unavailable {
                    "the database is busy; try again"
                } else {
                    "the server failed; the failure is logged"
                };
                error_response(status, code, message.to_owned(), Map::new())
            }
            Self::Internal(error) => {
                tracing::error!(error = %error, cause = ?error, "internal failure");
                error_response(
                    status,
                    code,
                    "the server failed; the failure is logged".to_owned(),
                    Map::new(),
                )
            }
        }
    }
}

/// Whether a database error is the violation of the named unique or primary-key constraint:
/// used to turn a racing insert into a domain error instead of checking first.
#[must_use]
pub fn is_unique_violation(error: &sqlx::Error, constraint: &str) -> bool {
    let sqlx::Error::Database(db_error) = error else { return false };
    if !db_error.is_unique_violation() {
        return false;
    }
    // PostgreSQL names the constraint; SQLite names the columns in its message instead.
    db_error.constraint().is_none_or(|name| name == constraint)
}
