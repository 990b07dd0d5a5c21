//! `GET /admin/v1/timeline?subject=…`: the audit trail of one subject.

use super::routing::get;
use axum::Json;
use axum::extract::State;
use fleetprompt_core::Subject;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, Query};

pub(super) fn router() -> super::Routes {
    super::Routes::new().route("/timeline", get(show))
}

#[derive(Deserialize)]
struct TimelineQuery {
    subject: String,
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    Query(q): Query<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
    let subject = Subject::parse(q.subject)?;
    let entries =
        fleetprompt_store::timeline::for_subject(s.engine.db(), admin.tenant.id, subject.as_str())
            .await?;
    Ok(Json(json!({ "subject": subject, "entries": entries })))
}
