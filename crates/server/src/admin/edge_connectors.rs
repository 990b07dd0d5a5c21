//! `/admin/v1/edge-connectors`: register, list and revoke Edge Connectors.

use super::routing::post;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::EdgeConnectorId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/edge-connectors", post(create).get(list))
        .route("/edge-connectors/{id}/revoke", post(revoke))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (connector, token) =
        fleetprompt_engine::edge::create_connector(&s.engine, admin.tenant.id, &b.name).await?;
    let mut body =
        serde_json::to_value(&connector).map_err(|e| ApiError::Internal(e.to_string()))?;
    // Shown once; only its hash is kept.
    body["token"] = json!(token.token);
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let connectors = fleetprompt_store::edge::list(s.engine.db(), admin.tenant.id).await?;
    Ok(Json(json!({ "edge_connectors": connectors })))
}

async fn revoke(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id: EdgeConnectorId = id
        .parse()
        .map_err(|_| ApiError::NotFound("edge connector".into()))?;
    let connector =
        fleetprompt_engine::edge::revoke_connector(&s.engine, admin.tenant.id, id).await?;
    Ok(Json(
        serde_json::to_value(&connector).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}
