//! Serving before the engine is ready: the process binds at once and
//! answers `/healthz` (alive) and `/readyz` (503) while it waits for the
//! database, and every other route with 503 and `Retry-After`; once the
//! engine is ready the [`Gate`] opens and every request goes to [`app`].
//! An orchestrator then sees a live process that is not ready yet, instead
//! of one that exits and restarts in a loop while the database is away.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::package::HttpPackage;
use crate::{AppState, app};

/// The application once the engine is ready; until then, the start-up
/// answers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Gate(Arc<OnceLock<Router>>);

impl Gate {
    /// Opens the gate: from now on every request goes to the application
    /// (with the routes of `packages`).
    pub fn open(&self, state: AppState, packages: &[Arc<dyn HttpPackage>]) {
        let _ = self.0.set(app(state, packages));
    }

    /// The router that serves through the gate.
    pub fn router(&self) -> Router {
        let gate = self.clone();
        Router::new().fallback_service(tower::service_fn(move |req: Request| {
            let gate = gate.clone();
            async move {
                Ok::<Response, Infallible>(match gate.0.get() {
                    Some(app) => app.clone().oneshot(req).await.into_response(),
                    None => starting(req.uri().path()),
                })
            }
        }))
    }
}

/// What a request gets while the process waits for the database.
fn starting(path: &str) -> Response {
    match path {
        "/healthz" => (StatusCode::OK, "ok").into_response(),
        "/readyz" => (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: waiting for the database",
        )
            .into_response(),
        _ => ApiError::Unavailable.into_response(),
    }
}

/// Serves through `gate` on `listener`, with the listener's connection
/// discipline ([`crate::listen`]), until `shutdown` resolves; then stops
/// accepting, tells `packages` ([`HttpPackage::on_stop`]: their live
/// streams end with a reconnect event), and returns once the requests in
/// flight have finished.
pub async fn serve(
    listener: TcpListener,
    gate: Gate,
    limits: crate::listen::Limits,
    packages: Vec<Arc<dyn HttpPackage>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::listen::serve(listener, gate.router(), &limits, shutdown, move || {
        for p in &packages {
            p.on_stop();
        }
    })
    .await
}
