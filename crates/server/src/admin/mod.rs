//! `/admin/v1/*`: tenant-scoped by the admin token.

mod conversations;
mod destinations;
mod directives;
mod edge_connectors;
mod installations;
mod signals;
mod sites;
mod timeline;
mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::AppState;

/// Largest admin request body; a larger one is answered with a JSON 413.
const BODY_LIMIT: usize = 1024 * 1024;

/// Every admin route.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(destinations::router())
        .merge(directives::router())
        .merge(edge_connectors::router())
        .merge(signals::router())
        .merge(timeline::router())
        .merge(installations::router())
        .merge(sites::router())
        .merge(conversations::router())
        .merge(workflows::router())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
}
