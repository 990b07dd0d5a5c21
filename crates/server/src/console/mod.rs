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
//! - [`when`], [`badge`]: a time and a status, as every page shows them.
//!
//! Pages are grouped one file per noun. A package's pages live in its own
//! crate, built only on these `pub` items, and join the console through
//! [`HttpPackage::console_routes`] and [`HttpPackage::console_nav`]. See
//! `docs/console.md` for how to add a page.

pub mod assets;
mod auth;
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
pub use layout::{
    NAV, Nav, NavItem, badge, flash, page, page_with, redirect, redirect_with_flash, when,
};

use axum::Router;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::package::HttpPackage;

/// Where the console is mounted.
pub const PREFIX: &str = "/console";

/// Largest console form body.
pub const BODY_LIMIT: usize = 256 * 1024;

/// The console's routes with the pages of `packages`, to be nested at
/// [`PREFIX`]. Unknown routes under it are an HTML 404 page, wrong methods
/// an HTML 405.
pub fn router(state: &AppState, packages: &[std::sync::Arc<dyn HttpPackage>]) -> Router<AppState> {
    let nav: Vec<NavItem> = packages
        .iter()
        .flat_map(|p| p.console_nav().iter().copied())
        .chain(NAV.iter().copied())
        .collect();
    packages
        .iter()
        .fold(Router::new(), |r, p| r.merge(p.console_routes(state)))
        .merge(platform_router())
        .merge(home::router())
        .merge(login::router())
        .merge(assets::router())
        .method_not_allowed_fallback(|| async { ConsoleError::MethodNotAllowed })
        .fallback(not_found)
        .layer(axum::middleware::from_fn(layout::flash_layer))
        .layer(axum::middleware::from_fn(headers))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(timing::server_timing))
        .layer(axum::Extension(Nav(nav.into())))
}

/// What every console answer carries: its own origin only for scripts,
/// styles, fetches and forms (no inline script or style exists), never
/// framed; and pages with tenant data are never cached.
async fn headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use axum::http::{HeaderValue, header};
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                 connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        h.entry(header::CACHE_CONTROL)
            .or_insert(HeaderValue::from_static("no-store"));
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
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
