//! `/edge/v1/*`: the API Edge Connectors call, authenticated by their own
//! `fpe_…` token. The tenant is the connector's, never the request's.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use fleetprompt_core::DirectiveId;
use fleetprompt_core::time::to_rfc3339;
use fleetprompt_engine::edge::{ClaimRequest, ReportedOutcome, TaskResult};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{ApiJson, Edge, Path};

/// Largest request body a connector sends (results carry short error texts).
const BODY_LIMIT: usize = 64 * 1024;

/// Every edge route, the platform's and `packages`' (a package's answer to
/// what a connector reports, such as a reply email).
pub fn router(packages: &[std::sync::Arc<dyn crate::package::HttpPackage>]) -> Router<AppState> {
    packages
        .iter()
        .fold(
            Router::new()
                .route("/heartbeat", post(heartbeat))
                .route("/tasks/claim", post(claim))
                .route("/tasks/{id}/result", post(result)),
            |r, p| r.merge(p.edge_routes()),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeartbeatBody {
    /// The connector's version, shown in the admin listing.
    version: Option<String>,
}

async fn heartbeat(
    State(s): State<AppState>,
    Edge(connector): Edge,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Json<Value>, ApiError> {
    fleetprompt_engine::edge::heartbeat(&s.engine, &connector, body.version.as_deref()).await?;
    Ok(Json(json!({
        "connector_id": connector.id,
        "tenant_id": connector.tenant_id,
        "server_time": to_rfc3339(fleetprompt_core::time::now_ms()),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimBody {
    /// The kinds the connector runs, e.g. `["email.send"]`.
    kinds: Vec<String>,
    /// Most tasks to take (default 10).
    limit: Option<i64>,
    /// How long to wait for a due task, in milliseconds (default 0, at most
    /// 25 000): a long poll.
    wait_ms: Option<u64>,
    /// How long each task is leased, in milliseconds (default 60 000).
    lease_ms: Option<u64>,
}

async fn claim(
    State(s): State<AppState>,
    Edge(connector): Edge,
    ApiJson(b): ApiJson<ClaimBody>,
) -> Result<Json<Value>, ApiError> {
    let req = ClaimRequest {
        kinds: b.kinds,
        limit: b.limit.unwrap_or(10),
        wait: Duration::from_millis(b.wait_ms.unwrap_or(0)),
        lease: b
            .lease_ms
            .map(Duration::from_millis)
            .unwrap_or(fleetprompt_engine::edge::DEFAULT_LEASE),
    };
    let tasks = fleetprompt_engine::edge::claim_tasks(&s.engine, &connector, &req).await?;
    Ok(Json(json!({ "tasks": tasks })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResultBody {
    attempt: i32,
    outcome: ReportedOutcome,
    error: Option<String>,
    external_ref: Option<String>,
    smtp_code: Option<u16>,
    /// The SMTP server's reply text.
    smtp_reply: Option<String>,
}

async fn result(
    State(s): State<AppState>,
    Edge(connector): Edge,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ResultBody>,
) -> Result<Json<Value>, ApiError> {
    let id: DirectiveId = id.parse().map_err(|_| ApiError::NotFound("task".into()))?;
    fleetprompt_engine::edge::report_result(
        &s.engine,
        &connector,
        id,
        TaskResult {
            attempt: b.attempt,
            outcome: b.outcome,
            error: b.error,
            external_ref: b.external_ref,
            smtp_code: b.smtp_code,
            smtp_reply: b.smtp_reply,
        },
    )
    .await?;
    let row = fleetprompt_store::directive::get(s.engine.db(), connector.tenant_id, id).await?;
    Ok(Json(
        json!({ "id": id, "status": row.status, "attempts": row.attempts }),
    ))
}
