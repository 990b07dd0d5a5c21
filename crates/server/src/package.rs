//! What a package adds to the HTTP application. The binary passes each
//! package's [`HttpPackage`] to [`app`](crate::app) (through
//! [`Gate::open`](crate::startup::Gate::open)) and to
//! [`startup::serve`](crate::startup::serve); the server names no package.
//!
//! A package's handlers are thin like the platform's: they use this crate's
//! extractors ([`Admin`](crate::extract::Admin), [`ApiJson`](crate::extract::ApiJson)
//! …), [`AppState`] and [`ApiError`](crate::error::ApiError) (its own error
//! enum converts into it, so every answer keeps the one JSON error shape).

use axum::Router;

use crate::AppState;
use crate::admin::Routes;

/// A package's routes and what it needs of the server's life cycle.
/// Nothing here is about one package in particular.
pub trait HttpPackage: Send + Sync + 'static {
    /// Its public routes (no admin authentication), merged at the root;
    /// they may set layers of their own (CORS, body limits), which is why
    /// they get the state.
    fn public_routes(&self, state: &AppState) -> Router<AppState> {
        let _ = state;
        Router::new()
    }

    /// Its admin routes, under `/admin/v1`, added through [`Routes`] so
    /// that the role table holds them ([`crate::admin::table`]); agents may
    /// call only what it allows them ([`Routes::allow_agents`]).
    fn admin_routes(&self) -> Routes {
        Routes::new()
    }

    /// Routes Edge Connectors call with their own token, under `/edge/v1`.
    fn edge_routes(&self) -> Router<AppState> {
        Router::new()
    }

    /// Its console pages, relative to `/console`, built on the console's
    /// foundation ([`crate::console`]: the member extractor, CSRF-checked
    /// forms, the page layout).
    fn console_routes(&self, state: &AppState) -> Router<AppState> {
        let _ = state;
        Router::new()
    }

    /// Its console pages' navigation entries (each naming the package, so
    /// they are hidden for a tenant that has uninstalled it); they come
    /// before the platform's.
    fn console_nav(&self) -> &'static [crate::console::NavItem] {
        &[]
    }

    /// The server stops accepting: end long-lived responses (live
    /// streams) now, so the drain is not held up by them.
    fn on_stop(&self) {}

    /// Describes its HTTP metrics (and registers their zero series);
    /// called once, at start.
    fn describe_metrics(&self) {}
}
