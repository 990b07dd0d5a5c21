//! `GET /admin/v1/workflows` and `POST /admin/v1/replay`.

use super::routing::{get, post};
use axum::Json;
use axum::extract::State;
use fleetprompt_core::time::parse_rfc3339;
use fleetprompt_store::signal::ReplayFilter;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/workflows", get(show))
        .route("/replay", post(replay))
}

/// The rules active for this tenant (shipped defaults and its own), their
/// files' hashes, and the last reload's result.
async fn show(State(s): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let rules = s.engine.rules();
    let set = rules.current();
    let slug = admin.tenant.slug.as_str();
    let summaries: Vec<_> = set
        .summaries()
        .into_iter()
        .filter(|r| r.scope.applies_to(slug))
        .collect();
    let files: Vec<Value> = set
        .files()
        .iter()
        .filter(|f| f.scope.applies_to(slug))
        .map(|f| json!({ "path": f.path, "scope": f.scope, "sha256": f.sha256 }))
        .collect();
    Ok(Json(
        json!({ "rules": summaries, "files": files, "status": rules.status() }),
    ))
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
