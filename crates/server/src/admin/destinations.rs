//! `/admin/v1/destinations`: register, list, show, change and delete
//! outbound destinations. Secrets are write-only: no answer holds one,
//! except a webhook signing secret the server made, shown once.

use super::routing::{get, post};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_engine::destination::{self, DestinationView};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path, Query};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/destinations", post(create).get(list))
        .route(
            "/destinations/{name_or_id}",
            get(show).patch(update).delete(remove),
        )
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
    kind: String,
    /// The kind's own settings (`url`, `signing_secret` …), kept sealed.
    #[serde(flatten)]
    config: Map<String, Value>,
}

/// A view as JSON, with a secret shown once when there is one.
fn answer(view: &DestinationView, secret: Option<String>) -> Result<Value, ApiError> {
    let mut body = serde_json::to_value(view).map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(secret) = secret {
        // Shown once, so the receiver can verify signatures; never again.
        body["signing_secret"] = json!(secret);
    }
    Ok(body)
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
        &admin.origin(),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(answer(&view, secret)?)))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rows = fleetprompt_store::destination::list(s.engine.db(), admin.tenant.id).await?;
    let views: Vec<DestinationView> = rows.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "destinations": views })))
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    Path(name_or_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = destination::lookup(&s.engine, admin.tenant.id, &name_or_id).await?;
    Ok(Json(answer(&row.into(), None)?))
}

async fn update(
    State(s): State<AppState>,
    admin: Admin,
    Path(name_or_id): Path<String>,
    ApiJson(changes): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let (view, secret) = destination::update(
        &s.engine,
        admin.tenant.id,
        &name_or_id,
        &changes,
        &admin.origin(),
    )
    .await?;
    Ok(Json(answer(&view, secret)?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(s): State<AppState>,
    admin: Admin,
    Path(name_or_id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> Result<Json<Value>, ApiError> {
    let origin = admin.origin();
    let deleted =
        destination::delete(&s.engine, admin.tenant.id, &name_or_id, q.force, &origin).await?;
    Ok(Json(json!(deleted)))
}
