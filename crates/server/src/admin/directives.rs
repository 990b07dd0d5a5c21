//! `/admin/v1/directives`: create, read, list, retry, cancel.

use super::routing::{get, post};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::{DirectiveId, DirectiveStatus};
use fleetprompt_engine::{BackoffOverride, DirectiveRequest};
use fleetprompt_store::directive::{self, AttemptRow, DirectiveRow};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path, Query};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/directives", post(create).get(list))
        .route("/directives/{id}", get(show))
        .route("/directives/{id}/retry", post(retry))
        .route("/directives/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    kind: String,
    #[serde(default = "empty_object")]
    args: Value,
    dedupe_key: String,
    max_attempts: Option<u32>,
    subject: Option<String>,
    delay_ms: Option<u64>,
    #[serde(default)]
    backoff: BackoffOverride,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Serialize)]
struct DirectiveView {
    #[serde(flatten)]
    directive: DirectiveRow,
    #[serde(skip_serializing_if = "Option::is_none")]
    duplicate: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt_log: Option<Vec<AttemptRow>>,
}

fn parse_id(id: &str) -> Result<DirectiveId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::NotFound("directive".into()))
}

async fn create(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CreateBody>,
) -> Result<(StatusCode, Json<DirectiveView>), ApiError> {
    let req = DirectiveRequest {
        kind: b.kind,
        args: b.args,
        dedupe_key: b.dedupe_key,
        max_attempts: b.max_attempts,
        subject: b.subject,
        delay_ms: b.delay_ms,
        backoff: b.backoff,
    };
    let origin = admin.origin();
    let (created, row) = s
        .engine
        .create_directive(admin.tenant.id, req, origin)
        .await?;
    let duplicate = matches!(created, directive::Created::Existing(_));
    let status = if duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(DirectiveView {
            directive: row,
            duplicate: Some(duplicate),
            attempt_log: None,
        }),
    ))
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DirectiveView>, ApiError> {
    let id = parse_id(&id)?;
    let db = s.engine.db();
    let row = directive::get(db, admin.tenant.id, id)
        .await
        .map_err(not_found)?;
    let attempts = directive::attempts(db, admin.tenant.id, id).await?;
    Ok(Json(DirectiveView {
        directive: row,
        duplicate: None,
        attempt_log: Some(attempts),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
}

async fn list(
    State(s): State<AppState>,
    admin: Admin,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(str::parse::<DirectiveStatus>)
        .transpose()?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = directive::list(s.engine.db(), admin.tenant.id, status, limit).await?;
    Ok(Json(serde_json::json!({ "directives": rows })))
}

async fn retry(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DirectiveRow>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(
        s.engine
            .retry_directive(admin.tenant.id, id)
            .await
            .map_err(engine_not_found)?,
    ))
}

async fn cancel(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<DirectiveRow>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(
        s.engine
            .cancel_directive(admin.tenant.id, id)
            .await
            .map_err(engine_not_found)?,
    ))
}

fn not_found(e: fleetprompt_store::StoreError) -> ApiError {
    match e {
        fleetprompt_store::StoreError::NotFound { .. } => ApiError::NotFound("directive".into()),
        other => other.into(),
    }
}

fn engine_not_found(e: fleetprompt_engine::EngineError) -> ApiError {
    match e {
        fleetprompt_engine::EngineError::NotFound(_) => ApiError::NotFound("directive".into()),
        other => other.into(),
    }
}
