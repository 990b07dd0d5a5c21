//! `/admin/v1/packages`: the catalogue — every package the server ships,
//! with its manifest's summary and this tenant's installation state.

use super::routing::get;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::Admin;

pub(super) fn router() -> super::Routes {
    super::Routes::new().route("/packages", get(catalogue))
}

async fn catalogue(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let packages = fleetprompt_engine::installation::catalogue(&s.engine, admin.tenant.id).await?;
    Ok(Json(json!({ "packages": packages })))
}
