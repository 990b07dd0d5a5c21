//! `/edge/v1/*`: the API Edge Connectors call, authenticated by their own
//! `fpe_…` token. The tenant is the connector's, never the request's.

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use fleetprompt_core::time::to_rfc3339;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Edge};

/// Largest request body a connector sends (results carry short error texts).
const BODY_LIMIT: usize = 64 * 1024;

/// Every edge route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/heartbeat", post(heartbeat))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    /// The connector's version, shown in the admin listing.
    version: Option<String>,
}

async fn heartbeat(
    State(s): State<AppState>,
    Edge(connector): Edge,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    fleetprompt_engine::edge::heartbeat(&s.engine, &connector, body.version.as_deref()).await?;
    Ok(Json(json!({
        "connector_id": connector.id,
        "tenant_id": connector.tenant_id,
        "server_time": to_rfc3339(fleetprompt_core::time::now_ms()),
    })))
}
