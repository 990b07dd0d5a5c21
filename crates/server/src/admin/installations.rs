//! `/admin/v1/installations`: install (or reconfigure) a package.

use super::routing::post;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_engine::webchat::site::{self, InstallationView};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new().route("/installations", post(install).get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallBody {
    package: String,
    #[serde(default = "empty")]
    config: Value,
}

fn empty() -> Value {
    json!({})
}

async fn install(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<InstallBody>,
) -> Result<(StatusCode, Json<InstallationView>), ApiError> {
    let (view, created) = site::install(&s.engine, admin.tenant.id, &b.package, &b.config).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view)))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rows =
        fleetprompt_store::webchat::installation::list(s.engine.db(), admin.tenant.id).await?;
    let views: Vec<InstallationView> = rows.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "installations": views })))
}
