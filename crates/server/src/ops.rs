//! Health, readiness, metrics, and the HTTP metrics layer.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

use crate::AppState;

/// HTTP requests answered, by route template and status.
pub const HTTP_REQUESTS: &str = "fleetprompt_http_requests_total";
/// HTTP request duration, by route template.
pub const HTTP_DURATION: &str = "fleetprompt_http_request_duration_seconds";

/// Describes the server's metrics. Call once at start.
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        Unit::Count,
        "HTTP requests answered, by route template and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request duration, by route template."
    );
}

/// `/healthz`, `/readyz`, `/metrics`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
}

/// Ready while the database takes writes: answered within a second, from
/// the store's breaker and at most one probe write a second (see
/// `Db::ready`), so a load balancer stops sending work to a node whose
/// database is unreachable, full or read-only, and sends it again once
/// writes work.
async fn readyz(State(s): State<AppState>) -> Response {
    match s.engine.db().ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(e) => {
            tracing::debug!(error = %e, "not ready");
            let why = match e {
                fleetprompt_store::StoreError::StorageFull(_) => "database storage full",
                _ => "database unavailable",
            };
            (StatusCode::SERVICE_UNAVAILABLE, why).into_response()
        }
    }
}

async fn metrics_text(State(s): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
        .into_response()
}

/// Counts and times every request by its route template (never the raw
/// path, whose ids would make unbounded label values), inside a span that
/// names method and route but no header, query string or body.
pub async fn track_http(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().clone();
    let span = tracing::info_span!("http", %method, route = %route);
    let start = Instant::now();
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    let status = resp.status().as_u16();
    counter!(HTTP_REQUESTS, "route" => route.clone(), "status" => status.to_string()).increment(1);
    histogram!(HTTP_DURATION, "route" => route).record(start.elapsed().as_secs_f64());
    if status >= 500 {
        span.in_scope(|| tracing::warn!(status, "request failed"));
    } else {
        span.in_scope(|| {
            tracing::debug!(
                status,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "request"
            )
        });
    }
    resp
}
