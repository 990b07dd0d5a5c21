//! `Server-Timing` on every console answer: how long the server took to
//! make it (`app;dur=<ms>`), for the browser's developer tools and for
//! `fleetprompt bench console`, which reports it without the network.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;

/// Times the rest of the console's stack (the handler, its extractors and
/// the page's rendering) and says so in a `Server-Timing` header. A
/// streamed answer (server-sent events) is timed to its headers.
pub(super) async fn server_timing(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let mut resp = next.run(req).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={ms:.3}")) {
        resp.headers_mut().append("server-timing", v);
    }
    resp
}
