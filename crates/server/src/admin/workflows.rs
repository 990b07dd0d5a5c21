//! `GET /admin/v1/workflows`, `POST /admin/v1/replay`, and the rule files a
//! tenant publishes: `/admin/v1/workflows/files[/{name}]`,
//! `POST /admin/v1/workflows/check` and `POST /admin/v1/workflows/backtest`.

use std::collections::BTreeMap;

use super::routing::{get, post};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::time::{now_ms, parse_rfc3339, to_rfc3339};
use fleetprompt_engine::published::BacktestRequest;
use fleetprompt_engine::rules::source_label;
use fleetprompt_store::signal::ReplayFilter;
use fleetprompt_store::workflow::WorkflowVersionRow;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson, Path, TextBody};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/workflows", get(show))
        .route("/workflows/files", get(list_files))
        .route(
            "/workflows/files/{name}",
            get(show_file).put(publish).delete(delete),
        )
        .route("/workflows/check", post(check))
        .route("/workflows/backtest", post(backtest))
        .route("/replay", post(replay))
}

/// The rules active for this tenant (shipped defaults and its own), the
/// source of each (`file:<path>` or `published:<name>@<sha256>`), their
/// files' hashes, and the last reload's result.
async fn show(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rules = s.engine.rules();
    let set = rules.current();
    let slug = admin.tenant.slug.as_str();
    let files: Vec<_> = set
        .files()
        .iter()
        .filter(|f| f.scope.applies_to(slug))
        .collect();
    let summaries: Vec<Value> = set
        .summaries()
        .into_iter()
        .filter(|r| r.scope.applies_to(slug))
        .map(|r| {
            let source = files
                .iter()
                .find(|f| f.path == r.file)
                .map(|f| source_label(f));
            let mut v = serde_json::to_value(&r).unwrap_or_default();
            v["source"] = json!(source);
            v
        })
        .collect();
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({ "path": f.path, "scope": f.scope, "sha256": f.sha256, "source": source_label(f) })
        })
        .collect();
    Ok(Json(
        json!({ "rules": summaries, "files": files, "status": rules.status().for_tenant(slug) }),
    ))
}

fn version_json(v: &WorkflowVersionRow) -> Value {
    json!({
        "version": v.version, "action": v.action, "sha256": v.sha256,
        "actor": v.actor, "at": to_rfc3339(v.at),
    })
}

async fn list_files(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let files = s.engine.workflow_files(admin.tenant.id).await?;
    let files: Vec<Value> = files
        .iter()
        .map(|f| {
            json!({
                "name": f.name, "sha256": f.sha256, "version": f.version,
                "actor": f.actor, "published_at": to_rfc3339(f.published_at),
                "bytes": f.body.len(),
            })
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}

async fn show_file(
    State(s): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let f = s.engine.workflow_file(admin.tenant.id, &name).await?;
    let history: Vec<Value> = f.history.iter().map(version_json).collect();
    let live = f.file.map(|f| {
        json!({
            "body": f.body, "sha256": f.sha256, "version": f.version,
            "actor": f.actor, "published_at": to_rfc3339(f.published_at),
        })
    });
    Ok(Json(json!({
        "name": name,
        "deleted": live.is_none(),
        "file": live,
        "history": history,
    })))
}

async fn publish(
    State(s): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
    TextBody(text): TextBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let r = s
        .engine
        .publish_workflow_file(admin.tenant.id, &name, &text, admin.origin())
        .await?;
    let status = if r.changed && r.version == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(serde_json::to_value(&r).unwrap_or_default())))
}

async fn delete(
    State(s): State<AppState>,
    admin: Admin,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    s.engine
        .delete_workflow_file(admin.tenant.id, &name, admin.origin())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    files: BTreeMap<String, String>,
}

async fn check(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<CheckBody>,
) -> Result<Json<Value>, ApiError> {
    let r = s
        .engine
        .check_workflow_files(admin.tenant.id, &b.files)
        .await?;
    Ok(Json(
        json!({ "valid": true, "rules": r.rules, "warnings": r.warnings }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    files: BTreeMap<String, String>,
    since: String,
    until: Option<String>,
}

async fn backtest(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<BacktestBody>,
) -> Result<Json<Value>, ApiError> {
    let req = BacktestRequest {
        files: b.files,
        since: time("since", Some(&b.since))?.unwrap_or_default(),
        until: time("until", b.until.as_deref())?.unwrap_or_else(now_ms),
    };
    let r = s.engine.backtest(admin.tenant.id, &req).await?;
    let mut v = serde_json::to_value(&r).unwrap_or_default();
    v["since"] = json!(to_rfc3339(req.since));
    v["until"] = json!(to_rfc3339(req.until));
    Ok(Json(v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    #[serde(rename = "type")]
    signal_type: Option<String>,
    subject: Option<String>,
    since: Option<String>,
    until: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

fn time(field: &'static str, v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|t| {
        parse_rfc3339(t).ok_or_else(|| {
            ApiError::Unprocessable(
                "validation_failed",
                format!("{field}: must be an RFC 3339 time"),
            )
        })
    })
    .transpose()
}

async fn replay(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<ReplayBody>,
) -> Result<Json<Value>, ApiError> {
    let filter = ReplayFilter {
        since: time("since", b.since.as_deref())?,
        until: time("until", b.until.as_deref())?,
        signal_type: b.signal_type,
        subject: b.subject,
    };
    let report = s.engine.replay(admin.tenant.id, &filter, b.dry_run).await?;
    Ok(Json(json!({
        "signals": report.signals,
        "directives_created": report.directives_created,
        "directives_deduplicated": report.directives_deduplicated,
        "directives_cancelled": report.directives_cancelled,
        "rule_errors": report.rule_errors,
        "dry_run": b.dry_run,
    })))
}
