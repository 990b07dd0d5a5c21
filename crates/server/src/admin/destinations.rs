//! `/admin/v1/destinations`: register and list outbound destinations.

use super::routing::post;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_engine::destination::{self, DestinationView};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new().route("/destinations", post(create).get(list))
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    kind: String,
    /// The kind's own settings (`url`, `signing_secret` …), kept sealed.
    #[serde(flatten)]
    config: Map<String, Value>,
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (view, secret) = destination::create(
        &s.engine,
        admin.tenant.id,
        &b.name,
        &b.kind,
        &Value::Object(b.config),
    )
    .await?;
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(secret) = secret {
        // Shown once, so the receiver can verify signatures; never again.
        body["signing_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(body)))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rows = fleetprompt_store::destination::list(s.engine.db(), admin.tenant.id).await?;
    let views: Vec<DestinationView> = rows.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "destinations": views })))
}
