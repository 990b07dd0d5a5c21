//! `/admin/v1/sites`: register, list, show, edit (domains and settings,
//! ordered by the site's version), rotate the signing secret, disable,
//! enable. The changes run as directives; the API waits for them.

use std::time::Duration;

use crate::site::{self, RegisterRequest, SiteView};
use crate::store::site::SiteRow;
use crate::types::id::SiteId;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use fleetprompt_core::{DirectiveId, DirectiveStatus};
use fleetprompt_server::admin::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::extract::{Admin, ApiJson, OptionalJson, Path};

/// How long the API waits for a site directive before answering 202.
const WAIT: Duration = Duration::from_secs(10);

pub(super) fn router() -> fleetprompt_server::admin::Routes {
    fleetprompt_server::admin::Routes::new()
        .route("/sites", post(register).get(list))
        .route("/sites/{id}", get(show).patch(update))
        .route("/sites/{id}/rotate_secret", post(rotate))
        .route("/sites/{id}/disable", post(disable))
        .route("/sites/{id}/enable", post(enable))
        .route("/sites/{id}/test-message", post(test_message))
}

fn parse_id(id: &str) -> Result<SiteId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("site".into()))
}

/// `https://HOST` as the client addressed this server (the scheme from a
/// proxy's `X-Forwarded-Proto`, else http).
fn public_base(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

fn view(row: &SiteRow, headers: &HeaderMap) -> Value {
    let mut v = serde_json::to_value(SiteView::from(row)).unwrap_or_default();
    v["embed_snippet"] = json!(format!(
        "<script async src=\"{}/widget.js\" data-site-key=\"{}\"></script>",
        public_base(headers),
        row.public_key
    ));
    v
}

/// Waits for the directive, then answers with the site as it now is: 200
/// (or `done`) when it succeeded, 202 while it is still running, 409 when it
/// failed.
async fn finish(
    s: &AppState,
    admin: &Admin,
    id: SiteId,
    directive: DirectiveId,
    headers: &HeaderMap,
    done: StatusCode,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let d = site::wait_for(&s.engine, admin.tenant.id, directive, WAIT).await?;
    let row = site::get(&s.engine, admin.tenant.id, id).await?;
    let mut body = view(&row, headers);
    body["directive"] =
        json!({ "id": d.id, "kind": d.kind, "status": d.status, "last_error": d.last_error });
    let status = match d.status {
        DirectiveStatus::Succeeded => done,
        DirectiveStatus::Failed | DirectiveStatus::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    domains: Vec<String>,
    #[serde(default = "native")]
    mode: String,
    #[serde(default)]
    settings: Value,
}

fn native() -> String {
    "native".into()
}

async fn register(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    ApiJson(b): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let origin = admin.origin();
    let req = RegisterRequest {
        domains: b.domains,
        mode: b.mode,
        settings: b.settings,
    };
    let (row, directive) = site::register(&s.engine, admin.tenant.id, req, origin).await?;
    finish(&s, &admin, row.id, directive, &headers, StatusCode::CREATED).await
}

async fn list(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let rows = crate::store::site::list(s.engine.db(), admin.tenant.id).await?;
    let sites: Vec<Value> = rows.iter().map(|r| view(r, &headers)).collect();
    Ok(Json(json!({ "sites": sites })))
}

async fn show(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<([(header::HeaderName, String); 1], Json<Value>), ApiError> {
    let row = site::get(&s.engine, admin.tenant.id, parse_id(&id)?).await?;
    let etag = format!("\"{}\"", row.version);
    Ok(([(header::ETAG, etag)], Json(view(&row, &headers))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    domains: Option<Vec<String>>,
    settings: Option<Value>,
    version: Option<i64>,
}

/// The version an `If-Match` header names: `"3"`, `W/"3"` or `3`.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::BadRequest("If-Match must name the site's version, e.g. If-Match: \"3\"".into())
    };
    let text = raw.to_str().map_err(|_| bad())?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    let text = text.trim_matches('"');
    text.parse::<i64>()
        .ok()
        .filter(|v| *v >= 1)
        .map(Some)
        .ok_or_else(bad)
}

async fn update(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<UpdateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let version = match (if_match(&headers)?, b.version) {
        (Some(h), Some(v)) if h != v => {
            return Err(ApiError::BadRequest(format!(
                "If-Match names version {h} and the body version {v}; give one"
            )));
        }
        (h, v) => h.or(v),
    };
    let req = site::UpdateRequest {
        domains: b.domains,
        settings: b.settings,
        version,
    };
    let origin = admin.origin();
    let d = site::update(&s.engine, admin.tenant.id, id, req, origin).await?;
    let (status, Json(body)) = finish(&s, &admin, id, d, &headers, StatusCode::OK).await?;
    // Another change came first between the check above and the
    // directive's run: the same answer as a stale version given outright.
    if status == StatusCode::CONFLICT
        && let Some(e) = body["directive"]["last_error"].as_str()
        && let Some(m) = e.strip_prefix("version_conflict: ")
    {
        return Err(ApiError::Conflict("version_conflict", m.to_owned()));
    }
    Ok((status, Json(body)))
}

async fn enable(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let origin = admin.origin();
    let d = site::enable(&s.engine, admin.tenant.id, id, origin).await?;
    finish(&s, &admin, id, d, &headers, StatusCode::OK).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    #[serde(default)]
    grace_secs: u64,
}

async fn rotate(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    // The body is optional: none means no grace period.
    let b = body.unwrap_or_default();
    let origin = admin.origin();
    let d = site::rotate_secret(&s.engine, admin.tenant.id, id, b.grace_secs, origin).await?;
    finish(&s, &admin, id, d, &headers, StatusCode::OK).await
}

async fn disable(
    State(s): State<AppState>,
    admin: Admin,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = parse_id(&id)?;
    let origin = admin.origin();
    let d = site::disable(&s.engine, admin.tenant.id, id, origin).await?;
    finish(&s, &admin, id, d, &headers, StatusCode::OK).await
}

/// Sends a test visitor message through the whole path and reports the
/// signal and, when Mattermost is set up, the notification's outcome.
async fn test_message(
    State(s): State<AppState>,
    admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_id(&id)?;
    let report = crate::verify::test_message(&s.engine, admin.tenant.id, id, WAIT).await?;
    Ok(Json(report))
}
