//! HTTP surfaces: the admin API, health and metrics. Handlers are thin: they
//! authenticate, parse, call the engine, and shape the answer. Errors are
//! mapped to HTTP in one place, [`error::ApiError`].
//!
//! # Layout
//! - [`asset`]: embedded static files, content-hashed and gzipped once.
//! - [`listen`]: the accept loop (header timeout, connection cap, drain).
//! - [`error`]: the API error enum and its JSON body.
//! - [`extract`]: JSON bodies with JSON errors, and admin authentication.
//! - [`client`]: the client address (peer, or what a trusted proxy says).
//! - [`admin`]: `/admin/v1/*`, one module per noun.
//! - [`edge`]: `/edge/v1/*`, what Edge Connectors call with their own token.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics` and the HTTP metrics layer.
//! - [`startup`]: serving health while the process waits for the database.
//! - [`package`]: what a package adds to the application
//!   ([`HttpPackage`](package::HttpPackage): public, admin and edge routes).
//! - [`console`]: `/console/*`, the operator console (HTML); packages add
//!   their pages through [`HttpPackage`](package::HttpPackage).

pub mod admin;
pub mod asset;
pub mod client;
pub mod console;
pub mod edge;
pub mod error;
pub mod extract;
pub mod listen;
pub mod ops;
pub mod package;
pub mod startup;

use std::sync::Arc;

use axum::Router;
use fleetprompt_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed.
    pub trusted_proxies: Arc<client::TrustedProxies>,
    /// Largest admin request body, in bytes ([`admin::BODY_LIMIT`] by default).
    pub admin_body_limit: usize,
}

/// The largest body any route reads unless its router sets its own.
const BODY_LIMIT: usize = 64 * 1024;

/// The whole HTTP application, with the routes of `packages`. Unknown
/// routes and wrong methods answer JSON errors like every handler, from one
/// fallback each.
pub fn app(state: AppState, packages: &[Arc<dyn package::HttpPackage>]) -> Router {
    let public = packages
        .iter()
        .fold(Router::new(), |r, p| r.merge(p.public_routes(&state)));
    Router::new()
        .merge(ops::router())
        .nest("/admin/v1", admin::router(state.admin_body_limit, packages))
        .nest("/edge/v1", edge::router(packages))
        .merge(public)
        .nest(console::PREFIX, console::router(&state, packages))
        // After every route is added: it applies to the routes present
        // (a package's public routes may set their own inside their
        // layers, so that preflights still reach a CORS layer).
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { error::ApiError::NotFound("route".into()) })
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(ops::track_http))
        .with_state(state)
}

/// The answer to a known route with a method it does not have (for a
/// package's routes that set their own fallback).
pub async fn method_not_allowed() -> error::ApiError {
    error::ApiError::MethodNotAllowed
}
