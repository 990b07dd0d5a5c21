//! `/admin/v1/installations`: install (or reconfigure), list and uninstall
//! a tenant's packages.

use super::routing::{delete, post};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use fleetprompt_engine::installation::{self, InstallationView};
use fleetprompt_store::installation::Installed;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/installations", post(install).get(list))
        .route("/installations/{package}", delete(uninstall))
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

/// 201 for a first install; 200 for a reinstall or a new configuration.
async fn install(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<InstallBody>,
) -> Result<(StatusCode, Json<InstallationView>), ApiError> {
    let (view, done) =
        installation::install(&s.engine, admin.tenant.id, &b.package, Some(&b.config)).await?;
    let status = match done {
        Installed::New => StatusCode::CREATED,
        Installed::Reinstalled | Installed::Reconfigured => StatusCode::OK,
    };
    Ok((status, Json(view)))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let views = installation::list(&s.engine, admin.tenant.id).await?;
    Ok(Json(json!({ "installations": views })))
}

async fn uninstall(
    State(s): State<AppState>,
    admin: Admin,
    Path(package): Path<String>,
) -> Result<Json<InstallationView>, ApiError> {
    Ok(Json(
        installation::uninstall(&s.engine, admin.tenant.id, &package).await?,
    ))
}
