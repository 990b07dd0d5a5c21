//! `POST /admin/v1/signals`.

use super::routing::post;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fleetprompt_core::NewSignal;
use fleetprompt_core::time::{now_ms, parse_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new().route("/signals", post(record))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignalBody {
    #[serde(rename = "type")]
    signal_type: String,
    subject: String,
    #[serde(default = "empty_object")]
    payload: Value,
    dedupe_key: String,
    occurred_at: Option<String>,
}

fn empty_object() -> Value {
    json!({})
}

async fn record(
    State(s): State<AppState>,
    admin: Admin,
    ApiJson(b): ApiJson<SignalBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let occurred_at = match b.occurred_at.as_deref() {
        None => now_ms(),
        Some(t) => parse_rfc3339(t).ok_or_else(|| {
            ApiError::Unprocessable(
                "validation_failed",
                "occurred_at: must be an RFC 3339 timestamp".into(),
            )
        })?,
    };
    let signal = NewSignal::new(
        &b.signal_type,
        &b.subject,
        b.payload,
        b.dedupe_key,
        occurred_at,
    )?;
    let r = s.engine.record_signal(admin.tenant.id, signal).await?;
    Ok(if r.duplicate {
        (
            StatusCode::OK,
            Json(json!({ "id": r.id, "duplicate": true })),
        )
    } else {
        (StatusCode::CREATED, Json(json!({ "id": r.id })))
    })
}
