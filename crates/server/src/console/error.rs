//! Console errors: HTML pages (the API keeps its JSON shape), and the
//! redirect to the sign-in page.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;

use crate::error::ApiError;

/// What a console handler answers when it cannot do what was asked; each
/// is rendered as an HTML page with its status (or a redirect).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No valid session: `303` to the sign-in page, back to `next` after.
    #[error("sign in to continue")]
    SignIn {
        /// The console path to return to.
        next: String,
    },
    /// 404: no such page or record for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// 404 with its own explanation, shown as it is (e.g. the pages of a
    /// package the tenant has not installed).
    #[error("{0}")]
    Missing(String),
    /// 403: the member's role does not allow this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the form's CSRF value is missing or forged.
    #[error(
        "This form was not sent by this console session (its security token is missing or wrong). Go back, reload the page and try again."
    )]
    Csrf,
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 422: the input is readable but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// 405: the page exists, but not with this method.
    #[error("This page does not accept that kind of request.")]
    MethodNotAllowed,
    /// Anything the API layer would answer, with its status.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<fleetprompt_engine::EngineError> for ConsoleError {
    fn from(e: fleetprompt_engine::EngineError) -> Self {
        Self::Api(e.into())
    }
}

impl From<fleetprompt_store::StoreError> for ConsoleError {
    fn from(e: fleetprompt_store::StoreError) -> Self {
        match e {
            fleetprompt_store::StoreError::NotFound { .. } => Self::NotFound("record".into()),
            other => Self::Api(other.into()),
        }
    }
}

impl ConsoleError {
    /// The HTTP status of the page.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::SignIn { .. } => StatusCode::SEE_OTHER,
            Self::NotFound(_) | Self::Missing(_) => StatusCode::NOT_FOUND,
            Self::Forbidden(_) | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Api(e) => e.status_and_code().0,
        }
    }

    /// The error's message in plain words, as the page shows it.
    pub fn message(&self) -> String {
        match self {
            Self::NotFound(what) => format!(
                "There is no such {what} here. It may have been removed, or it belongs to another tenant."
            ),
            Self::Api(ApiError::Internal(_)) => {
                "Something went wrong on our side; it has been logged. Try again in a moment."
                    .into()
            }
            Self::Api(ApiError::TooManyRequests(secs)) => {
                format!("Too many attempts. Wait {secs} seconds and try again.")
            }
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        if let Self::SignIn { next } = &self {
            let to = format!(
                "{}/login?{}",
                super::PREFIX,
                serde_urlencoded::to_string([("next", next.as_str())]).unwrap_or_default()
            );
            return super::redirect(&to);
        }
        if let Self::Api(ApiError::Internal(detail)) = &self {
            tracing::error!(error = %detail, "internal error on a console page");
        }
        let status = self.status();
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Not allowed",
            StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
            s if s.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        let body = html! {
            h1 { (title) }
            p class="error" role="alert" { (self.message()) }
            p { a href=(super::PREFIX) { "Back to the console" } }
        };
        let mut resp = (status, super::page_with(None, "", title, body)).into_response();
        if let Self::Api(ApiError::TooManyRequests(secs)) = &self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, (*secs).max(1).into());
        }
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        resp
    }
}
