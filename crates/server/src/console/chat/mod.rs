//! The website chat's console pages: the inbox, a conversation with its
//! timeline, and sites. Built only on the console's `pub` foundation and
//! the engine's public API, so the folder can move into the website chat
//! package's own crate.

use axum::Router;

use crate::AppState;

/// The website chat's console routes, relative to `/console`.
pub fn router() -> Router<AppState> {
    Router::new()
}
