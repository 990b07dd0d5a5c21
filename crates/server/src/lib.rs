//! HTTP surfaces: the admin API, health and metrics. Handlers are thin: they
//! authenticate, parse, call the engine, and shape the answer. Errors are
//! mapped to HTTP in one place, [`error::ApiError`].
//!
//! # Layout
//! - [`error`]: the API error enum and its JSON body.
//! - [`extract`]: JSON bodies with JSON errors, and admin authentication.
//! - [`admin`]: `/admin/v1/*`, one module per noun.
//! - [`edge`]: `/edge/v1/*`, what Edge Connectors call with their own token.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics` and the HTTP metrics layer.
//! - [`startup`]: serving health while the process waits for the database.
//! - [`widget`]: `/v1/widget/*`, `/widget.js` and `/demo`.

pub mod admin;
pub mod edge;
pub mod error;
pub mod extract;
pub mod ops;
pub mod startup;
pub mod widget;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use fleetprompt_engine::Engine;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(ops::router())
        .nest("/admin/v1", admin::router())
        .nest("/edge/v1", edge::router())
        .merge(widget::router(&state))
        .layer(axum::middleware::from_fn(ops::track_http))
        .with_state(state)
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
