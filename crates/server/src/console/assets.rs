//! The console's script and style sheet, embedded in the binary and served
//! under `/console/assets/` with a content hash in the name, cached for a
//! year (a new release has new names), gzipped for clients that accept it.

use std::sync::LazyLock;

use axum::Router;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::asset::{Asset, IMMUTABLE};
use crate::extract::Path;

/// The console's script, as shipped.
pub const CONSOLE_JS: &str = include_str!("../../../../console/console.js");
/// The console's style sheet, as shipped.
pub const CONSOLE_CSS: &str = include_str!("../../../../console/console.css");

static JS: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(CONSOLE_JS, "text/javascript; charset=utf-8"));
static CSS: LazyLock<Asset> = LazyLock::new(|| Asset::new(CONSOLE_CSS, "text/css; charset=utf-8"));

/// The content-addressed path of the console's script.
pub fn js_path() -> String {
    format!("{}/assets/console.{}.js", super::PREFIX, JS.hash())
}

/// The content-addressed path of the console's style sheet.
pub fn css_path() -> String {
    format!("{}/assets/console.{}.css", super::PREFIX, CSS.hash())
}

/// The script and style sheet together, gzipped, in bytes (budget 40 KB).
pub fn gzip_bytes() -> usize {
    JS.gzip_len() + CSS.gzip_len()
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/assets/{file}", get(serve))
}

async fn serve(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let found = [(&*JS, "js"), (&*CSS, "css")]
        .into_iter()
        .find(|(a, ext)| file == format!("console.{}.{ext}", a.hash()));
    match found {
        Some((a, _)) => a.respond(&headers, IMMUTABLE),
        None => super::ConsoleError::NotFound("file".into()).into_response(),
    }
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
