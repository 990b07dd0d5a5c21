//! `/console`: the operator console, server-rendered HTML over the same
//! engine calls as the admin API, with a small hand-written script and style
//! sheet (no framework, no build step).
//!
//! # What a page is built from (the foundation, kept `pub` for every page)
//! - [`Member`]: the signed-in member, from the session cookie. A GET
//!   without a valid session is answered `303` to `/console/login?next=…`.
//! - [`CsrfForm`]: a form body whose CSRF field (a name starting with
//!   `csrf`, see [`csrf_field`]) is checked against the session before the
//!   handler runs; a forged or missing one is a `403` page.
//! - [`page`]: the layout (header, nav, skip link, main, flash message).
//! - [`ConsoleError`]: what a console handler returns on failure: an HTML
//!   error page (or the sign-in redirect), never the API's JSON.
//! - [`flash`]: a one-time message for the next page after a redirect.
//! - [`NAV`]: the navigation entries.
//!
//! Pages are grouped one file per noun; the website chat's pages live in
//! [`chat`] with their own router, built only on these `pub` items and the
//! engine's public API. See `docs/console.md` for how to add a page.

pub mod assets;
mod auth;
pub mod chat;
mod error;
mod home;
mod layout;
mod login;

// The platform's pages (one file per noun) and what they share.
mod destinations;
mod directives;
mod members;
mod packages;
mod rules;
mod timing;
mod tokens;
mod ui;

pub use auth::{CsrfForm, Member, csrf_field, login_csrf_check, login_csrf_token};
pub use error::ConsoleError;
pub use layout::{NAV, NavItem, flash, page, page_with, redirect, redirect_with_flash};

use axum::Router;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Where the console is mounted.
pub const PREFIX: &str = "/console";

/// Largest console form body.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The console's routes, to be nested at [`PREFIX`]. Unknown routes under
/// it are an HTML 404 page, wrong methods an HTML 405.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(platform_router())
        .merge(home::router())
        .merge(login::router())
        .merge(assets::router())
        .merge(chat::router())
        .method_not_allowed_fallback(|| async { ConsoleError::MethodNotAllowed })
        .fallback(not_found)
        .layer(axum::middleware::from_fn(layout::flash_layer))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(timing::server_timing))
}

async fn not_found(uri: Uri) -> Response {
    tracing::debug!(path = %uri.path(), "no console page");
    ConsoleError::NotFound("page".into()).into_response()
}

/// The platform's pages: packages, destinations, members, tokens, rules
/// and directives.
fn platform_router() -> Router<AppState> {
    Router::new()
        .merge(packages::router())
        .merge(destinations::router())
        .merge(members::router())
        .merge(tokens::router())
        .merge(rules::router())
        .merge(directives::router())
}
