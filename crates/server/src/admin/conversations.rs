//! `/admin/v1/conversations`: list, show, reply as an operator (a
//! `webchat.reply_send` directive, so it is on the audit timeline), and
//! review, approve or discard reply drafts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use fleetprompt_core::id::{ConversationId, SiteId};
use fleetprompt_engine::DirectiveRequest;
use fleetprompt_store::StoreError;
use fleetprompt_store::webchat::{conversation, escalation, identity, message};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path, Query};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations", get(list))
        .route("/conversations/{id}", get(show))
        .route("/conversations/{id}/reply", post(send_reply))
        .route("/conversations/{id}/drafts", get(drafts))
        .route(
            "/conversations/{id}/drafts/{draft_id}/approve",
            post(approve_draft),
        )
        .route(
            "/conversations/{id}/drafts/{draft_id}/discard",
            post(discard_draft),
        )
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
            StoreError::NotFound { .. } => ApiError::NotFound("conversation".into()),
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
    conversation::get(s.engine.db(), admin.tenant.id, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ApiError::NotFound("conversation".into()),
            other => other.into(),
        })?;
    let origin = admin.origin();
    // A fresh key per call: an operator may well send the same words twice.
    let key = format!(
        "webchat_reply_send:{}:{id}:{}",
        admin.tenant.id,
        fleetprompt_core::DirectiveId::new()
    );
    let req = DirectiveRequest {
        kind: "webchat.reply_send".into(),
        args: json!({
            "conversation_id": id,
            "content": b.content,
            "role": "agent",
            "author": { "kind": "operator", "token_id": admin.token_id },
        }),
        dedupe_key: key,
        max_attempts: None,
        subject: Some(format!("conversation:{id}")),
        delay_ms: None,
        backoff: Default::default(),
    };
    let (_, row) = s
        .engine
        .create_directive(admin.tenant.id, req, origin)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "directive": row }))))
}

async fn drafts(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let rows = escalation::drafts(s.engine.db(), admin.tenant.id, id).await?;
    Ok(Json(json!({ "drafts": rows })))
}

/// Approving a draft creates the `webchat.reply_send` directive that
/// delivers it (role `assistant`, approved by this token), once.
async fn approve_draft(
    State(s): State<AppState>,
    admin: Admin,
    Path((id, draft_id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let row = fleetprompt_engine::webchat::assist::approve_draft(
        &s.engine,
        admin.tenant.id,
        id,
        &draft_id,
        admin.token_id,
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "directive": row }))))
}

/// Discarding a draft keeps it from being sent and puts who discarded it on
/// the conversation's timeline.
async fn discard_draft(
    State(s): State<AppState>,
    admin: Admin,
    Path((id, draft_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let draft = fleetprompt_engine::webchat::assist::discard_draft(
        &s.engine,
        admin.tenant.id,
        id,
        &draft_id,
        &admin.token_id.to_string(),
    )
    .await?;
    Ok(Json(json!({ "draft": draft })))
}
