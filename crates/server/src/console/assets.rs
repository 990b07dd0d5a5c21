//! The console's script and style sheet, embedded in the binary and served
//! under `/console/assets/` with a content hash in the name, cached for a
//! year (a new release has new names), gzipped for clients that accept it.

use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::extract::Path;

/// The console's script, as shipped.
pub const CONSOLE_JS: &str = include_str!("../../../../console/console.js");
/// The console's style sheet, as shipped.
pub const CONSOLE_CSS: &str = include_str!("../../../../console/console.css");

struct Asset {
    name: String,
    body: &'static str,
    gzip: Vec<u8>,
    kind: &'static str,
}

fn asset(stem: &str, ext: &str, body: &'static str, kind: &'static str) -> Asset {
    Asset {
        name: format!(
            "{stem}.{}.{ext}",
            hex::encode(&Sha256::digest(body.as_bytes())[..8])
        ),
        body,
        gzip: crate::widget::assets::gzip(body.as_bytes()),
        kind,
    }
}

static JS: LazyLock<Asset> = LazyLock::new(|| {
    asset(
        "console",
        "js",
        CONSOLE_JS,
        "text/javascript; charset=utf-8",
    )
});
static CSS: LazyLock<Asset> =
    LazyLock::new(|| asset("console", "css", CONSOLE_CSS, "text/css; charset=utf-8"));

/// The content-addressed path of the console's script.
pub fn js_path() -> String {
    format!("{}/assets/{}", super::PREFIX, JS.name)
}

/// The content-addressed path of the console's style sheet.
pub fn css_path() -> String {
    format!("{}/assets/{}", super::PREFIX, CSS.name)
}

/// The script and style sheet together, gzipped, in bytes (budget 40 KB).
pub fn gzip_bytes() -> usize {
    JS.gzip.len() + CSS.gzip.len()
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/assets/{file}", get(serve))
}

async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = [&*JS, &*CSS].into_iter().find(|a| a.name == file) else {
        return super::ConsoleError::NotFound("file".into()).into_response();
    };
    let etag = format!("\"{}\"", a.name);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == etag)
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let gz = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut resp = if gz {
        let mut r = a.gzip.clone().into_response();
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        a.body.into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(a.kind));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The console's budget: script and style sheet ≤ 40 KB gzipped.
    #[test]
    fn console_assets_stay_within_their_gzip_budget() {
        let n = gzip_bytes();
        assert!(n <= 40 * 1024, "console assets are {n} bytes gzipped");
        assert!(n > 500, "the assets are embedded ({n} bytes)");
    }

    #[test]
    fn console_script_uses_no_eval_or_inner_html() {
        for bad in ["eval(", "new Function", "innerHTML =", "document.write"] {
            assert!(!CONSOLE_JS.contains(bad), "console.js uses {bad}");
        }
    }
}
