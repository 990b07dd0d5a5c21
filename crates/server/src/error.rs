//! The one place where errors become HTTP responses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleetprompt_core::signal::ValidationError;
use fleetprompt_engine::EngineError;
use serde_json::json;

/// Every error the HTTP layer answers with; the body is always
/// `{ "error": { "code", "message" } }`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON or not the expected shape.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("a valid admin token (Authorization: Bearer fpa_…) or session is required")]
    Unauthorized,
    /// 401 `sign_in_failed`: wrong email, password or invite.
    #[error("{0}")]
    SignIn(String),
    /// 404: no such record for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// 409: a uniqueness rule or the record's state forbids the change.
    #[error("{1}")]
    Conflict(&'static str, String),
    /// 413: the body is too large.
    #[error("request body is too large")]
    TooLarge,
    /// 422: the input is well-formed but not acceptable.
    #[error("{1}")]
    Unprocessable(&'static str, String),
    /// 401: the Edge Connector token is missing, unknown, revoked or wrong
    /// (any reason alike, so a caller learns nothing from which).
    #[error("a valid Edge Connector token is required (Authorization: Bearer fpe_…)")]
    EdgeUnauthorized,
    /// 401: the widget token is missing or not valid (any reason alike).
    #[error("{0}")]
    InvalidToken(&'static str),
    /// 403: the caller may not do this (e.g. an origin not in the allowlist).
    #[error("{0}")]
    Forbidden(String),
    /// 403 `csrf_failed`: a request authenticated by a session cookie with
    /// an unsafe method lacks the session's `X-CSRF-Token`.
    #[error("this request needs the session's X-CSRF-Token header")]
    Csrf,
    /// 403 with its own code: a proof of work is required
    /// (`challenge_required`) or was refused (`challenge_failed`).
    #[error("{1}")]
    Challenge(&'static str, String),
    /// 413: a message is longer than its limit (the limit is named).
    #[error("{0}")]
    MessageTooLarge(String),
    /// 429: a rate limit was hit; retry after the given seconds.
    #[error("too many requests; retry in {0} s")]
    TooManyRequests(u64),
    /// 500: our fault; details go to the log, never to the client.
    #[error("internal error")]
    Internal(String),
    /// 503: the database cannot be reached (or is read-only), or the
    /// process is still starting; retry after [`RETRY_UNAVAILABLE_SECS`].
    #[error("the service is unavailable for a moment; retry later")]
    Unavailable,
    /// 400: text the databases cannot store (a NUL character); names where.
    #[error("{0} contains a NUL character, which is not accepted")]
    InvalidText(String),
    /// 405: the route exists, but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 422 `invalid_workflow`: rule files were refused; the body's
    /// `error.details` lists every problem as `{file, line, col, message}`.
    #[error("{} problem(s) in workflow rules; nothing was changed", .0.len())]
    InvalidWorkflow(Vec<serde_json::Value>),
    /// 507: the database has no room to write; retry after
    /// [`RETRY_STORAGE_FULL_SECS`] (writes work again once space is freed).
    #[error("the service cannot store anything for a moment; retry later")]
    StorageFull,
}

/// `Retry-After` of a 503: the database breaker probes four times a
/// second, so a client is back soon after the database.
pub const RETRY_UNAVAILABLE_SECS: u64 = 2;

/// `Retry-After` of a 507: space is freed by an operator, not in an instant.
pub const RETRY_STORAGE_FULL_SECS: u64 = 5;

impl ApiError {
    /// The HTTP status and the error code of the body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::SignIn(_) => (StatusCode::UNAUTHORIZED, "sign_in_failed"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(code, _) => (StatusCode::CONFLICT, code),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::Unprocessable(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            Self::InvalidToken(_) => (StatusCode::UNAUTHORIZED, "invalid_token"),
            Self::EdgeUnauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Csrf => (StatusCode::FORBIDDEN, "csrf_failed"),
            Self::Challenge(code, _) => (StatusCode::FORBIDDEN, code),
            Self::MessageTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::TooManyRequests(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::InvalidText(_) => (StatusCode::BAD_REQUEST, "invalid_text"),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::StorageFull => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Self::InvalidWorkflow(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_workflow"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let mut body = json!({ "error": { "code": code, "message": self.to_string() } });
        if let Self::InvalidWorkflow(details) = &self {
            body["error"]["details"] = serde_json::Value::from(details.clone());
        }
        let mut resp = (status, Json(body)).into_response();
        let retry_after = match self {
            Self::TooManyRequests(secs) => Some(secs.max(1)),
            Self::Unavailable => Some(RETRY_UNAVAILABLE_SECS),
            Self::StorageFull => Some(RETRY_STORAGE_FULL_SECS),
            _ => None,
        };
        if let Some(secs) = retry_after {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        resp
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::SecretInPayload { .. } => {
                Self::Unprocessable("secret_in_payload", e.to_string())
            }
            ValidationError::Invalid { .. } => {
                Self::Unprocessable("validation_failed", e.to_string())
            }
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Validation(v) => v.into(),
            EngineError::Args(e) => Self::Unprocessable("validation_failed", e.to_string()),
            EngineError::NotFound(what) => Self::NotFound(what),
            EngineError::NotConfigured(m) => Self::Unprocessable("not_configured", m),
            EngineError::PackageNotInstalled(m) => Self::Conflict("package_not_installed", m),
            EngineError::DestinationNotAllowed(e) => {
                Self::Unprocessable("destination_not_allowed", e.to_string())
            }
            EngineError::Conflict(m) => Self::Conflict("conflict", m),
            EngineError::InvalidWorkflow(d) => Self::InvalidWorkflow(
                d.iter()
                    .map(|d| {
                        json!({
                            "file": d.file.display().to_string(), "line": d.line,
                            "col": d.col, "message": d.message,
                        })
                    })
                    .collect(),
            ),
            EngineError::TooMuch(m) => Self::Unprocessable("too_large", m),
            EngineError::DestinationInUse(m) => Self::Conflict("destination_in_use", m),
            EngineError::InvalidState(m) => Self::Conflict("invalid_state", m),
            // Outages: the detail (which says why) is logged once by the
            // store's breaker and counted; clients get "retry later".
            EngineError::Store(fleetprompt_store::StoreError::Unavailable(m)) => {
                tracing::debug!(reason = %m, "database unavailable");
                Self::Unavailable
            }
            EngineError::Store(fleetprompt_store::StoreError::StorageFull(m)) => {
                tracing::debug!(reason = %m, "database storage full");
                Self::StorageFull
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<fleetprompt_store::StoreError> for ApiError {
    fn from(e: fleetprompt_store::StoreError) -> Self {
        EngineError::from(e).into()
    }
}

impl From<fleetprompt_engine::access::SignInError> for ApiError {
    fn from(e: fleetprompt_engine::access::SignInError) -> Self {
        use fleetprompt_engine::access::SignInError as S;
        match e {
            S::Throttled(secs) => Self::TooManyRequests(secs),
            S::BadCredentials => Self::SignIn(e.to_string()),
            S::TenantRequired => Self::Unprocessable("tenant_required", e.to_string()),
            S::Engine(e) => e.into(),
        }
    }
}
