//! The accept loop: connection discipline in front of the router.
//!
//! - HTTP/1.1 only (TLS, and with it HTTP/2, ends at the reverse proxy).
//! - A connection that has not sent a request's headers within
//!   `header_timeout` is closed. Hyper's timer runs from the moment the
//!   connection waits for a request head, so the same timeout closes a new
//!   connection that sends nothing (or its headers byte by byte) and a
//!   keep-alive connection left idle between requests.
//! - At most `max_connections` are open at once. At the cap the loop stops
//!   accepting (new connections wait in the kernel's backlog) and says so in
//!   the log, at most every ten seconds, and in a counter.
//! - On shutdown it stops accepting, ends the packages' live streams with a
//!   reconnect event, and lets hyper finish the requests in flight; the
//!   caller bounds how long that may take (its drain deadline).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use metrics::{Unit, counter, describe_counter};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// Connections accepted and served.
pub const CONNECTIONS: &str = "fleetprompt_http_connections_total";
/// Times the accept loop found the connection cap reached.
pub const CONNECTION_LIMIT: &str = "fleetprompt_http_connection_limit_reached_total";

/// Describes the listener's metrics. Call once at start.
pub fn describe() {
    describe_counter!(CONNECTIONS, Unit::Count, "HTTP connections accepted.");
    describe_counter!(
        CONNECTION_LIMIT,
        Unit::Count,
        "Times new connections had to wait because the connection cap was reached."
    );
}

/// How the listener treats connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Time a connection has to send a request's headers, and the most a
    /// keep-alive connection may sit idle between requests.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: 8_192,
        }
    }
}

/// How often the "connection limit reached" line may be logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting, calls `on_stop` (which ends long-lived streams) and waits for
/// the connections in flight to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_stop: impl FnOnce(),
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 only. Detecting HTTP/2 without TLS (h2c, which browsers do
    // not speak) means waiting for a connection's first bytes with no
    // timeout at all, so a silent connection would be held forever.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut last_warned: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                counter!(CONNECTION_LIMIT).increment(1);
                if last_warned.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                    last_warned = Some(Instant::now());
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: new connections wait until one closes (--max-connections)"
                    );
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (EMFILE) or a connection that died
                    // in the backlog: wait a moment instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        counter!(CONNECTIONS).increment(1);
        let app = app.clone();
        let service = TowerToHyperService::new(tower::service_fn(
            move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.oneshot(req).await.unwrap_or_else(|e| match e {})) }
            },
        ));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    on_stop();
    graceful.shutdown().await;
    Ok(())
}
