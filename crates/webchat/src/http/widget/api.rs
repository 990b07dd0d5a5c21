//! Bootstrap, messages, history, contact capture and closing.

use crate::WebchatError;
use crate::ingest::{self, Incoming};
use crate::reply::widget_view;
use crate::session::{self, Client, Presented};
use crate::settings::SiteSettings;
use crate::store::site::SiteRow;
use crate::types::id::MessageId;
use crate::types::pow::Solution;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use axum::{Json, Router};
use fleetprompt_core::time::{now_ms, to_rfc3339};
use serde::Deserialize;
use serde_json::{Value, json};

use super::limit::limiter;
use super::{authenticate, origin, refuse, rejected};
use fleetprompt_server::AppState;
use fleetprompt_server::client::ClientAddr;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::extract::{ApiJson, Query};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/widget/bootstrap", post(bootstrap))
        .route("/v1/widget/challenge", post(challenge))
        .route("/v1/widget/messages", post(send).get(history))
        .route("/v1/widget/contact", post(contact))
        .route("/v1/widget/close", post(close))
}

/// Counts a refused body (unknown fields such as `tenant_id` included).
fn body<T>(b: Result<ApiJson<T>, ApiError>) -> Result<T, ApiError> {
    b.map(|ApiJson(v)| v).map_err(|e| {
        rejected(if matches!(e, ApiError::TooLarge) {
            "too_large"
        } else {
            "invalid"
        });
        e
    })
}

/// The query every widget call may carry: `site_key` (for CORS) and, for
/// history, `after`. Anything else (`tenant_id` …) is refused.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WidgetQuery {
    #[serde(rename = "site_key")]
    _site_key: Option<String>,
    after: Option<String>,
}

fn query(q: Result<Query<WidgetQuery>, ApiError>) -> Result<WidgetQuery, ApiError> {
    q.map(|Query(q)| q).map_err(|e| {
        rejected("invalid");
        // An unknown or malformed parameter is a 422 here, as the widget
        // API has always answered; text that cannot be stored stays a 400.
        match e {
            ApiError::BadRequest(m) => ApiError::Unprocessable("validation_failed", m),
            other => other,
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BootstrapBody {
    site_key: String,
    visitor_id: Option<String>,
    visitor_secret: Option<String>,
    proof_of_work: Option<Solution>,
}

async fn bootstrap(
    State(s): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
    b: Result<ApiJson<BootstrapBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    query(q)?;
    let b = body(b)?;
    let client = Client {
        origin: origin(&headers),
        ip: Some(addr.0.to_string()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
    };
    let presented = Presented {
        visitor: b.visitor_id.as_deref(),
        visitor_secret: b.visitor_secret.as_deref(),
        proof_of_work: b.proof_of_work.as_ref(),
    };
    // Only a new visitor is counted: a returning one (with their secret)
    // refreshing a token never runs into the limit.
    let admit_new = |site: &SiteRow, settings: &SiteSettings| {
        limiter()
            .check(
                &format!("n:{}:{}", site.id, addr.limit_key()),
                settings.rate_limit_new_visitors_per_min,
                now_ms(),
            )
            .map_err(WebchatError::RateLimited)
    };
    let boot = session::bootstrap(&s.engine, &b.site_key, presented, &client, admit_new)
        .await
        .map_err(refuse)?;
    Ok(Json(json!({
        "token": boot.token,
        "token_type": "Bearer",
        "expires_at": to_rfc3339(boot.expires_at),
        "expires_in": (boot.expires_at - now_ms()) / 1000,
        "visitor_id": boot.visitor,
        "visitor_secret": boot.visitor_secret,
        "site_id": boot.site.id,
        "settings": boot.settings.public(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChallengeBody {
    site_key: String,
}

/// A proof-of-work challenge, harder the more this address asked for in
/// the last minute.
async fn challenge(
    State(s): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
    b: Result<ApiJson<ChallengeBody>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    query(q)?;
    let b = body(b)?;
    let recent = limiter().count(&format!("c:{}", addr.limit_key()), now_ms());
    let c = session::challenge(&s.engine, &b.site_key, origin(&headers), recent)
        .await
        .map_err(refuse)?;
    Ok(Json(json!(c)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageBody {
    client_message_id: String,
    content: String,
    page_url: Option<String>,
}

async fn send(
    State(s): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
    b: Result<ApiJson<MessageBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    query(q)?;
    let (site, claims) = authenticate(&s, &headers).await?;
    let b = body(b)?;
    let settings = SiteSettings::from_stored(&site.settings);
    let now = now_ms();
    // Narrowest first: the visitor, then their address (all its visitors),
    // then the site, so one noisy visitor or address cannot spend the
    // whole site's budget.
    limiter()
        .check(
            &format!("v:{}:{}", site.id, claims.visitor),
            settings.rate_limit_visitor_per_min,
            now,
        )
        .map_err(|secs| {
            rejected("rate_limit_visitor");
            ApiError::TooManyRequests(secs)
        })?;
    limiter()
        .check(
            &format!("a:{}:{}", site.id, addr.limit_key()),
            settings.address_share(),
            now,
        )
        .map_err(|secs| {
            rejected("rate_limit_address");
            ApiError::TooManyRequests(secs)
        })?;
    limiter()
        .check(
            &format!("s:{}", site.id),
            settings.rate_limit_site_per_min,
            now,
        )
        .map_err(|secs| {
            rejected("rate_limit_site");
            ApiError::TooManyRequests(secs)
        })?;
    let accepted = ingest::send_message(
        &s.engine,
        &site,
        &claims,
        Incoming {
            client_message_id: &b.client_message_id,
            content: &b.content,
            page_url: b.page_url.as_deref(),
        },
    )
    .await
    .map_err(refuse)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "message_id": accepted.message_id,
            "conversation_id": accepted.conversation_id,
            "duplicate": accepted.duplicate,
        })),
    ))
}

async fn history(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let q = query(q)?;
    let (site, claims) = authenticate(&s, &headers).await?;
    let after = q
        .after
        .as_deref()
        .filter(|a| !a.is_empty())
        .map(|a| a.parse::<MessageId>())
        .transpose()
        .map_err(|e| {
            rejected("invalid");
            ApiError::Unprocessable("validation_failed", e.to_string())
        })?;
    let (conv, messages) = ingest::history(&s.engine, &site, &claims, after)
        .await
        .map_err(refuse)?;
    Ok(Json(json!({
        "conversation_id": conv.as_ref().map(|c| c.id),
        "status": conv.as_ref().map(|c| c.status.clone()),
        "messages": messages.iter().map(widget_view).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactBody {
    email: String,
    name: Option<String>,
}

async fn contact(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
    b: Result<ApiJson<ContactBody>, ApiError>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    query(q)?;
    let (site, claims) = authenticate(&s, &headers).await?;
    let b = body(b)?;
    ingest::capture_contact(&s.engine, &site, &claims, &b.email, b.name.as_deref())
        .await
        .map_err(refuse)?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "ok": true }))))
}

async fn close(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<WidgetQuery>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    query(q)?;
    let (site, claims) = authenticate(&s, &headers).await?;
    let ended = ingest::close(&s.engine, &site, &claims)
        .await
        .map_err(refuse)?;
    Ok(Json(json!({ "conversation_id": ended })))
}
