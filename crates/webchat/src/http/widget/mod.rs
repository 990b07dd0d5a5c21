//! `/v1/widget/*`: the public API the chat widget calls, plus `/widget.js`
//! and `/demo`.
//!
//! Every widget request is answered with `Vary: Origin`. CORS is granted
//! (and preflights pass) only for an origin in the allowlist of the site
//! named by the `site_key` query parameter, which the widget adds to every
//! call; the site key only decides CORS — who the caller is comes from the
//! signed token (or, at bootstrap, from the site record behind the key).
//!
//! # Layout
//! - [`cors`]: the CORS layer.
//! - [`limit`]: rate limits per visitor, per client address and per site.
//! - [`api`]: bootstrap, messages, history, contact, close.
//! - [`stream`]: the live event stream (SSE).
//! - [`assets`]: the embedded widget script and the demo page.

mod api;
pub mod assets;
mod cors;
pub mod limit;
pub mod stream;

use crate::WebchatError;
use crate::store::site::SiteRow;
use crate::types::token::Claims;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use metrics::{Unit, counter, describe_counter};

use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;

/// Widget requests refused, by reason.
pub const REJECTED: &str = "fleetprompt_widget_rejected_total";

/// Every value of [`REJECTED`]'s `reason` label: the one list that the
/// description, the zero series at start and [`rejected`]'s check share.
pub const REJECT_REASONS: &[&str] = &[
    "origin",
    "token",
    "rate_limit_visitor",
    "rate_limit_address",
    "rate_limit_site",
    "rate_limit_new_visitors",
    "challenge",
    "too_large",
    "invalid",
    "site_inactive",
    "streams_site",
];

/// Describes the widget's metrics and registers each reason at zero, so a
/// dashboard's `rate()` sees the first refusal too. Call once at start.
pub fn describe() {
    describe_counter!(
        REJECTED,
        Unit::Count,
        format!(
            "Widget requests refused, by reason ({}).",
            REJECT_REASONS.join(", ")
        )
    );
    for reason in REJECT_REASONS {
        counter!(REJECTED, "reason" => *reason).absolute(0);
    }
}

/// Counts a refusal; `reason` is one of [`REJECT_REASONS`].
pub(crate) fn rejected(reason: &'static str) {
    debug_assert!(
        REJECT_REASONS.contains(&reason),
        "unlisted widget refusal reason {reason:?}"
    );
    counter!(REJECTED, "reason" => reason).increment(1);
}

/// Counts and converts an error of the package.
pub(crate) fn refuse(e: WebchatError) -> ApiError {
    let reason = match &e {
        WebchatError::Unauthorized(_) => Some("token"),
        WebchatError::Forbidden(m) if m.contains("origin") || m.contains("Origin") => {
            Some("origin")
        }
        WebchatError::Forbidden(_) => Some("site_inactive"),
        WebchatError::TooLarge { .. } => Some("too_large"),
        WebchatError::Invalid(_) => Some("invalid"),
        WebchatError::RateLimited(_) => Some("rate_limit_new_visitors"),
        WebchatError::ChallengeRequired | WebchatError::ChallengeFailed(_) => Some("challenge"),
        WebchatError::NotFound(_)
        | WebchatError::Engine(_)
        | WebchatError::VersionConflict { .. } => None,
    };
    if let Some(r) = reason {
        rejected(r);
    }
    e.into()
}

/// Largest widget request body; messages have their own, smaller limit.
const BODY_LIMIT: usize = 64 * 1024;

/// The widget API, the script and the demo page; live streams are held in
/// `streams`.
pub fn router(state: &AppState, streams: std::sync::Arc<stream::Streams>) -> Router<AppState> {
    Router::new()
        .merge(api::router())
        .merge(stream::router().layer(axum::Extension(streams)))
        // Inside the CORS layer, which answers preflights (OPTIONS) itself.
        .method_not_allowed_fallback(fleetprompt_server::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            cors::layer,
        ))
        .merge(assets::router())
}

/// The bearer token of a widget request, checked against its site.
pub(crate) async fn authenticate(
    s: &AppState,
    headers: &HeaderMap,
) -> Result<(SiteRow, Claims), ApiError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| {
            rejected("token");
            ApiError::InvalidToken("a valid widget token is required (Authorization: Bearer fpw_…)")
        })?;
    crate::session::authenticate(&s.engine, token, origin(headers))
        .await
        .map_err(refuse)
}

/// The request's `Origin` header, if any.
pub(crate) fn origin(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
}
