//! `/admin/v1/*`: tenant-scoped by the admin token.

mod conversations;
mod destinations;
mod directives;
mod edge_connectors;
mod installations;
mod packages;
mod signals;
mod sites;
mod timeline;
mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;

use crate::AppState;

/// Largest admin request body by default; a larger one is answered with a
/// JSON 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Every admin route, reading bodies of at most `body_limit` bytes.
pub fn router(body_limit: usize) -> Router<AppState> {
    Router::new()
        .merge(destinations::router())
        .merge(directives::router())
        .merge(edge_connectors::router())
        .merge(signals::router())
        .merge(timeline::router())
        .merge(installations::router())
        .merge(packages::router())
        .merge(sites::router())
        .merge(conversations::router())
        .merge(workflows::router())
        .layer(DefaultBodyLimit::max(body_limit))
}
