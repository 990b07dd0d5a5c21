//! Request extractors whose failures are JSON errors.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use fleetprompt_core::TokenId;
use fleetprompt_core::secret::parse_admin_token;
use fleetprompt_store::edge::EdgeConnector;
use fleetprompt_store::tenant::{self, Tenant};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; a bad one is answered with a JSON 400/413/422.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::Unprocessable("validation_failed", e.body_text()))
            }
            Err(JsonRejection::BytesRejection(e))
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Err(ApiError::TooLarge)
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The tenant an admin token belongs to. The tenant comes only from the
/// token's server-side record, never from the request.
pub struct Admin {
    /// The authenticated tenant.
    pub tenant: Tenant,
    /// The token used, for the audit trail.
    pub token_id: TokenId,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let (token_id, secret) = parse_admin_token(token.trim()).ok_or(ApiError::Unauthorized)?;
        let tenant = tenant::authenticate(state.engine.db(), token_id, secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Self { tenant, token_id })
    }
}

/// The bearer token of a request, if it has one.
fn bearer(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
}

/// The Edge Connector a connector token belongs to; its tenant comes only
/// from the connector's server-side record. The token is never logged.
pub struct Edge(pub EdgeConnector);

impl FromRequestParts<AppState> for Edge {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::EdgeUnauthorized)?;
        fleetprompt_engine::edge::authenticate(&state.engine, token)
            .await?
            .map(Self)
            .ok_or(ApiError::EdgeUnauthorized)
    }
}
