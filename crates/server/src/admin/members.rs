//! `/admin/v1/members`: the tenant's people (admins only: the role table
//! says so). Adding one answers its first password, or an invite, once.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::MemberId;
use fleetprompt_core::member::Role;
use fleetprompt_engine::access::{self, FirstSecret};
use fleetprompt_store::member::MemberPatch;
use serde::Deserialize;
use serde_json::{Value, json};

use super::routing::{get, post};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/members", get(list).post(create))
        .route("/members/{id}", get(show).patch(update))
        .route("/members/{id}/reset-password", post(reset_password))
}

fn parse_id(id: &str) -> Result<MemberId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("member".into()))
}

fn parse_role(role: &str) -> Result<Role, ApiError> {
    role.parse::<Role>().map_err(ApiError::from)
}

async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rows = access::list_members(&s.engine, admin.tenant.id).await?;
    Ok(Json(json!({ "members": rows })))
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let row = access::find_member(&s.engine, admin.tenant.id, &id.to_string()).await?;
    Ok(Json(json!({ "member": row })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    email: String,
    name: Option<String>,
    role: String,
    #[serde(default)]
    invite: bool,
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role = parse_role(&b.role)?;
    let (row, secret) = access::add_member(
        &s.engine,
        admin.tenant.id,
        &b.email,
        b.name.as_deref(),
        role,
        b.invite,
        &admin.origin(),
    )
    .await?;
    let mut body = json!({ "member": row });
    match secret {
        FirstSecret::Password(p) => body["password"] = json!(p),
        FirstSecret::Invite(t) => body["invite_token"] = json!(t),
    }
    Ok((StatusCode::CREATED, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchBody {
    name: Option<String>,
    role: Option<String>,
    disabled: Option<bool>,
}

async fn update(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<PatchBody>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let patch = MemberPatch {
        name: b.name,
        role: b.role.as_deref().map(parse_role).transpose()?,
        disabled: b.disabled,
    };
    let row = access::update_member(&s.engine, admin.tenant.id, id, patch, &admin.origin()).await?;
    Ok(Json(json!({ "member": row })))
}

async fn reset_password(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let password = access::reset_password(&s.engine, admin.tenant.id, id, &admin.origin()).await?;
    Ok(Json(json!({ "password": password })))
}
