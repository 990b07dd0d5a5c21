//! The widget script and the demo page, embedded in the binary.
//!
//! `/widget.js` is the stable URL customers paste; it is cached for five
//! minutes so a new release reaches pages quickly. `/widget/<hash>.js` names
//! the exact content and is cached for a year. Both are served gzipped to
//! clients that accept it, compressed once at first use.

use std::io::Write;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use fleetprompt_server::AppState;
use fleetprompt_server::extract::Path;

/// The widget's source, as shipped.
pub const WIDGET_JS: &str = include_str!("../../../../../widget/widget.js");
const DEMO_HTML: &str = include_str!("../../../../../widget/demo.html");

struct Asset {
    hash: String,
    gzip: Vec<u8>,
}

static WIDGET: LazyLock<Asset> = LazyLock::new(|| Asset {
    hash: hex::encode(&Sha256::digest(WIDGET_JS.as_bytes())[..8]),
    gzip: gzip(WIDGET_JS.as_bytes()),
});

/// Gzip at the best level: done once, served many times.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to memory cannot fail");
    enc.finish().expect("writing to memory cannot fail")
}

/// The content-addressed path of the current widget script.
pub fn widget_path() -> String {
    format!("/widget/{}.js", WIDGET.hash)
}

/// The widget's size gzipped, in bytes (its budget is 15 KB).
pub fn widget_gzip_bytes() -> usize {
    WIDGET.gzip.len()
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/widget.js", get(stable))
        .route("/widget/{file}", get(hashed))
        .route("/demo", get(demo))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")))
}

fn script(headers: &HeaderMap, cache: &'static str) -> Response {
    let etag = format!("\"{}\"", WIDGET.hash);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let mut resp = if accepts_gzip(headers) {
        let mut r = WIDGET.gzip.clone().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        WIDGET_JS.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header value"),
    );
    // Any page may load the script; what it can do is decided per request.
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

async fn stable(headers: HeaderMap) -> Response {
    script(&headers, "public, max-age=300")
}

async fn hashed(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file != format!("{}.js", WIDGET.hash) {
        return fleetprompt_server::error::ApiError::NotFound("script".into()).into_response();
    }
    script(&headers, "public, max-age=31536000, immutable")
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
