//! `/admin/v1/tokens`: a member's personal API tokens (`fpa_…`), which act
//! with the member's role. The secret is answered once, at creation; lists
//! show the prefix, name, creation and last use. Any member manages their
//! own; an admin may also revoke anyone's in the tenant, the tenant's own
//! included (which the tenant's own token lists).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::TokenId;
use fleetprompt_core::member::Role;
use fleetprompt_engine::access;
use serde::Deserialize;
use serde_json::{Value, json};

use super::routing::{delete, get};
use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}", delete(revoke))
}

fn member_of(admin: &Admin) -> Result<fleetprompt_core::MemberId, ApiError> {
    admin.caller.member.as_ref().map(|m| m.id).ok_or_else(|| {
        ApiError::Unprocessable(
            "not_a_member",
            "personal tokens belong to a member: sign in, or use a member's token".into(),
        )
    })
}

/// A member's own tokens; with the tenant's own token, the tenant's own
/// tokens (so a leaked one can be found and revoked).
async fn list(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let member = admin.caller.member.as_ref().map(|m| m.id);
    let rows = access::list_tokens(&s.engine, admin.tenant.id, member).await?;
    Ok(Json(json!({ "tokens": rows })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let member = member_of(&admin)?;
    let (row, issued) =
        access::create_token(&s.engine, admin.tenant.id, member, &b.name, &admin.origin()).await?;
    let mut body = serde_json::to_value(&row).unwrap_or_default();
    body["token"] = json!(issued.token);
    Ok((StatusCode::CREATED, Json(json!({ "token": body }))))
}

async fn revoke(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: TokenId = id.parse().map_err(|_| ApiError::NotFound("token".into()))?;
    // Admins may revoke any token of the tenant (a leaked agent's), others
    // only their own.
    let owner = match admin.role() {
        Role::Admin => None,
        Role::Agent => Some(member_of(&admin)?),
    };
    access::revoke_token(&s.engine, admin.tenant.id, id, owner, &admin.origin()).await?;
    Ok(StatusCode::NO_CONTENT)
}
