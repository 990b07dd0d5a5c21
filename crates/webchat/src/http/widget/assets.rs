//! The widget script and the demo page, embedded in the binary.
//!
//! `/widget.js` is the stable URL customers paste; it is cached for five
//! minutes so a new release reaches pages quickly. `/widget/<hash>.js` names
//! the exact content and is cached for a year. Both are served gzipped to
//! clients that accept it, compressed once at first use.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use fleetprompt_server::AppState;
use fleetprompt_server::asset::{Asset, IMMUTABLE};
use fleetprompt_server::extract::Path;

/// The widget's source, as shipped.
pub const WIDGET_JS: &str = include_str!("../../../../../widget/widget.js");
const DEMO_HTML: &str = include_str!("../../../../../widget/demo.html");

static WIDGET: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(WIDGET_JS, "text/javascript; charset=utf-8"));

/// The content-addressed path of the current widget script.
pub fn widget_path() -> String {
    format!("/widget/{}.js", WIDGET.hash())
}

/// The widget's size gzipped, in bytes (its budget is 15 KB).
pub fn widget_gzip_bytes() -> usize {
    WIDGET.gzip_len()
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/widget.js", get(stable))
        .route("/widget/{file}", get(hashed))
        .route("/demo", get(demo))
}

fn script(headers: &HeaderMap, cache: &'static str) -> Response {
    let mut resp = WIDGET.respond(headers, cache);
    // Any page may load the script; what it can do is decided per request.
    resp.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

async fn stable(headers: HeaderMap) -> Response {
    script(&headers, "public, max-age=300")
}

async fn hashed(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file != format!("{}.js", WIDGET.hash()) {
        return fleetprompt_server::error::ApiError::NotFound("script".into()).into_response();
    }
    script(&headers, IMMUTABLE)
}

/// The demo page, for the demo tenant's first site.
async fn demo(State(s): State<AppState>) -> Response {
    use crate::demo::DEMO_TENANT;
    let db = s.engine.db();
    let Ok(tenant) = fleetprompt_store::tenant::find_by_slug(db, DEMO_TENANT).await else {
        return (
            StatusCode::NOT_FOUND,
            "the demo is not set up on this server",
        )
            .into_response();
    };
    let site = match crate::store::site::list(db, tenant.id).await {
        Ok(sites) => sites.into_iter().next(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the demo site failed");
            None
        }
    };
    let Some(site) = site else {
        return (
            StatusCode::NOT_FOUND,
            "the demo is not set up on this server",
        )
            .into_response();
    };
    // The key is generated (pk_ + base64url), so it needs no HTML escaping.
    let page = DEMO_HTML
        .replace("{{WIDGET_SRC}}", &widget_path())
        .replace("{{SITE_KEY}}", &site.public_key);
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Html(page),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The widget's budget: 15 KB gzipped, loaded on every customer page.
    #[test]
    fn widget_stays_within_its_gzip_budget() {
        let n = widget_gzip_bytes();
        println!("widget.js: {} bytes, {n} bytes gzipped", WIDGET_JS.len());
        assert!(
            n <= 15 * 1024,
            "widget.js is {n} bytes gzipped; the budget is 15360"
        );
    }

    #[test]
    fn widget_uses_no_eval() {
        for bad in ["eval(", "new Function", "innerHTML", "document.write"] {
            assert!(!WIDGET_JS.contains(bad), "widget.js uses {bad}");
        }
    }
}
