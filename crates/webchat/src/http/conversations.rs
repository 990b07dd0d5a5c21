//! `/admin/v1/conversations`: list (the inbox, by assignee too), show,
//! reply as an operator (a `webchat.reply_send` directive, so it is on the
//! audit timeline), escalate, close, reopen and assign by hand (directives
//! too, with the caller as their origin), and review, approve or discard
//! reply drafts.

use crate::conversation as actions;
use crate::store::{conversation, escalation, identity, message};
use crate::types::id::{ConversationId, SiteId};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::id::MemberId;
use fleetprompt_server::admin::routing::{get, post};
use fleetprompt_store::StoreError;
use serde::Deserialize;
use serde_json::{Value, json};

use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::extract::{Admin, ApiJson, Path, Query};

/// What agents may do here: read and answer conversations (every `POST`
/// under a conversation: reply, drafts, escalate, close, reopen, assign).
const AGENT_ALLOWED: &[(&str, &str)] = &[
    ("GET", "/conversations"),
    ("GET", "/conversations/*"),
    ("POST", "/conversations/*"),
];

pub(super) fn router() -> fleetprompt_server::admin::Routes {
    fleetprompt_server::admin::Routes::new()
        .allow_agents(AGENT_ALLOWED)
        .route("/conversations", get(list))
        .route("/conversations/{id}", get(show))
        .route("/conversations/{id}/reply", post(send_reply))
        .route("/conversations/{id}/escalate", post(escalate))
        .route("/conversations/{id}/close", post(close))
        .route("/conversations/{id}/reopen", post(reopen))
        .route("/conversations/{id}/assign", post(assign))
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
    /// `mem_…`, or `none` for the unassigned.
    assignee: Option<String>,
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
    let assignee = match q.assignee.as_deref() {
        None => conversation::Assignee::Any,
        Some("none") => conversation::Assignee::Nobody,
        Some(m) => conversation::Assignee::Member(m.parse::<MemberId>().map_err(|e| {
            ApiError::Unprocessable(
                "validation_failed",
                format!("assignee must be a member id (mem_…) or none: {e}"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = conversation::list(
        s.engine.db(),
        admin.tenant.id,
        site,
        q.status.as_deref(),
        assignee,
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
    let row = actions::reply(&s.engine, admin.tenant.id, id, &b.content, admin.origin()).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "directive": row }))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalateBody {
    destination: String,
}

/// Escalates now. 202 with the directive; `created` is false when a rule
/// (or an earlier call) already escalated this conversation there.
async fn escalate(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<EscalateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let origin = admin.origin();
    let e = actions::escalate(&s.engine, admin.tenant.id, id, &b.destination, origin).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "directive": e.directive, "created": e.created })),
    ))
}

/// The answer of an action that waited for its directive: 200 with the
/// conversation as it now is when it succeeded, 202 while it still runs,
/// 409 when it failed (the directive says why).
async fn acted(
    s: &AppState,
    admin: &Admin,
    id: ConversationId,
    d: fleetprompt_store::directive::DirectiveRow,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    use fleetprompt_core::DirectiveStatus as S;
    let status = match d.status {
        S::Succeeded => StatusCode::OK,
        S::Failed | S::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::ACCEPTED,
    };
    let conv = conversation::get(s.engine.db(), admin.tenant.id, id).await?;
    Ok((
        status,
        Json(json!({ "conversation": conv, "directive": d })),
    ))
}

async fn close(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let d = actions::close(&s.engine, admin.tenant.id, id, admin.origin()).await?;
    acted(&s, &admin, id, d).await
}

async fn reopen(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let d = actions::reopen(&s.engine, admin.tenant.id, id, admin.origin()).await?;
    acted(&s, &admin, id, d).await
}

/// `{"member_id": "mem_…"}` assigns, `{"member_id": null}` unassigns.
async fn assign(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<serde_json::Map<String, Value>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let bad = |m: &str| ApiError::Unprocessable("validation_failed", m.to_owned());
    if let Some(k) = b.keys().find(|k| *k != "member_id") {
        return Err(bad(&format!("unknown field `{k}`, expected `member_id`")));
    }
    let member = match b.get("member_id") {
        None => return Err(bad("`member_id` is required (null to unassign)")),
        Some(Value::Null) => None,
        Some(Value::String(m)) => Some(
            m.parse::<MemberId>()
                .map_err(|e| bad(&format!("member_id: {e}")))?,
        ),
        Some(_) => return Err(bad("`member_id` must be a member id (mem_…) or null")),
    };
    let d = actions::assign(&s.engine, admin.tenant.id, id, member, admin.origin()).await?;
    acted(&s, &admin, id, d).await
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
    let row =
        crate::assist::approve_draft(&s.engine, admin.tenant.id, id, &draft_id, admin.origin())
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
    let draft = crate::assist::discard_draft(
        &s.engine,
        admin.tenant.id,
        id,
        &draft_id,
        &admin.origin().actor_id(),
    )
    .await?;
    Ok(Json(json!({ "draft": draft })))
}
