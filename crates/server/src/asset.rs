//! Static files embedded in the binary (the console's script and style
//! sheet, a package's scripts): named by a hash of their content, gzipped
//! once at first use, answered with an `ETag` and the caller's caching.

use std::io::Write;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

/// One embedded file.
#[derive(Debug)]
pub struct Asset {
    body: &'static str,
    hash: String,
    gzip: Vec<u8>,
    content_type: &'static str,
}

impl Asset {
    /// `body`, served as `content_type`; hashed and compressed now, so
    /// build it once (in a `LazyLock`).
    pub fn new(body: &'static str, content_type: &'static str) -> Self {
        Self {
            body,
            hash: hex::encode(&Sha256::digest(body.as_bytes())[..8]),
            gzip: gzip(body.as_bytes()),
            content_type,
        }
    }

    /// The first 8 bytes of its SHA-256, in hex: the name a release gives it.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Its size gzipped, in bytes (what a budget counts).
    pub fn gzip_len(&self) -> usize {
        self.gzip.len()
    }

    /// The answer to a GET of it: `304` when the client's `If-None-Match`
    /// names this content, otherwise the body (gzipped when the client
    /// accepts it) with `cache_control`, an `ETag` and `nosniff`.
    pub fn respond(&self, headers: &HeaderMap, cache_control: &'static str) -> Response {
        let etag = format!("\"{}\"", self.hash);
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
            let mut r = self.gzip.clone().into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        } else {
            self.body.into_response()
        };
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        h.insert(
            header::ETAG,
            HeaderValue::from_str(&etag).expect("hex is a valid header value"),
        );
        h.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        resp
    }
}

/// Gzip at the best level: done once, served many times.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).expect("writing to memory cannot fail");
    enc.finish().expect("writing to memory cannot fail")
}

/// The `Cache-Control` of a file whose name holds its content hash.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_known_etag_is_not_modified_and_gzip_only_when_accepted() {
        let a = Asset::new("body { color: red }", "text/css; charset=utf-8");
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_NONE_MATCH,
            format!("\"{}\"", a.hash()).parse().unwrap(),
        );
        assert_eq!(a.respond(&h, IMMUTABLE).status(), StatusCode::NOT_MODIFIED);
        let plain = a.respond(&HeaderMap::new(), IMMUTABLE);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, "br, gzip".parse().unwrap());
        let gz = a.respond(&h, IMMUTABLE);
        assert_eq!(gz.headers()[header::CONTENT_ENCODING], "gzip");
        assert_eq!(gz.headers()[header::CACHE_CONTROL], IMMUTABLE);
    }
}
