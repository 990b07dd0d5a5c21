//! `/admin/v1/conversations`: list, show, and reply as an operator.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetprompt_core::Origin;
use fleetprompt_core::id::{ConversationId, SiteId};
use fleetprompt_engine::webchat::reply;
use fleetprompt_store::StoreError;
use fleetprompt_store::webchat::{conversation, identity, message};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(list))
        .route("/conversations/{id}", get(show))
        .route("/conversations/{id}/reply", post(send_reply))
}

fn parse_id(id: &str) -> Result<ConversationId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("conversation".into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    site_id: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(s): State<AppState>,
    admin: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let site = q
        .site_id
        .as_deref()
        .map(|v| v.parse::<SiteId>())
        .transpose()
        .map_err(|e| ApiError::Unprocessable("validation_failed", e.to_string()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = conversation::list(
        s.engine.db(),
        admin.tenant.id,
        site,
        q.status.as_deref(),
        limit,
    )
    .await?;
    Ok(Json(json!({ "conversations": rows })))
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let db = s.engine.db();
    let conv = conversation::get(db, admin.tenant.id, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::NotFound("conversation".into()),
            other => other.into(),
        })?;
    let messages = message::list(db, admin.tenant.id, id, None, 1000).await?;
    let visitor = identity::get(db, admin.tenant.id, conv.site_id, conv.visitor_id).await?;
    Ok(Json(
        json!({ "conversation": conv, "messages": messages, "visitor": visitor }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    content: String,
}

async fn send_reply(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReplyBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let author = Origin::Api {
        token_id: admin.token_id,
    };
    let row = reply::reply(&s.engine, admin.tenant.id, id, &b.content, &author).await?;
    Ok((StatusCode::CREATED, Json(json!({ "message": row }))))
}
