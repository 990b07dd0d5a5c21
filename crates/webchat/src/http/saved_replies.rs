//! `/admin/v1/saved-replies`: the team's snippets for the reply box, as the
//! console's saved replies page manages them. Agents may manage them too.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_server::admin::routing::{get, patch};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::saved_reply;
use crate::types::id::SavedReplyId;
use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::extract::{Admin, ApiJson, Path};

const AGENT_ALLOWED: &[(&str, &str)] = &[
    ("GET", "/saved-replies"),
    ("POST", "/saved-replies"),
    ("PATCH", "/saved-replies/*"),
    ("DELETE", "/saved-replies/*"),
];

pub(super) fn router() -> fleetprompt_server::admin::Routes {
    fleetprompt_server::admin::Routes::new()
        .allow_agents(AGENT_ALLOWED)
        .route("/saved-replies", get(list).post(create))
        .route("/saved-replies/{id}", patch(update).delete(remove))
}

fn parse_id(id: &str) -> Result<SavedReplyId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("saved reply".into()))
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rows = saved_reply::list(&s.engine, admin.tenant.id).await?;
    Ok(Json(json!({ "saved_replies": rows })))
}

/// A saved reply's fields, whole.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    title: String,
    content: String,
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<Body>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let by = admin.caller.member.as_ref().map(|m| m.id);
    let row = saved_reply::add(&s.engine, admin.tenant.id, by, &b.title, &b.content).await?;
    Ok((StatusCode::CREATED, Json(json!(row))))
}

async fn update(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Body>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    saved_reply::edit(&s.engine, admin.tenant.id, id, &b.title, &b.content).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    saved_reply::remove(&s.engine, admin.tenant.id, parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}
