//! `GET /v1/widget/stream`: replies to the visitor, live, as server-sent
//! events (`event: message`, data = the message as history shows it).
//!
//! The widget reads it with `fetch` rather than `EventSource`, so the token
//! travels in the `Authorization` header, never in a URL that proxies log.
//! The stream ends when the token expires; the widget bootstraps again and
//! reconnects, fetching any history it missed.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use fleetprompt_core::time::now_ms;
use fleetprompt_engine::webchat::live::hub;
use futures::{Stream, StreamExt};

use super::authenticate;
use crate::AppState;
use crate::error::ApiError;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/widget/stream", get(stream))
}

async fn stream(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (site, claims) = authenticate(&s, &headers).await?;
    let sub = hub().subscribe(site.tenant, site.id, claims.visitor);
    let ready = futures::stream::once(async { Ok(Event::default().event("ready").data("{}")) });
    let events = futures::stream::unfold(sub, |mut sub| async move {
        let e = sub.recv().await?;
        let ev = Event::default()
            .event("message")
            .json_data(&e.0)
            .unwrap_or_else(|_| Event::default().comment("unencodable event"));
        Some((Ok(ev), sub))
    });
    let left = Duration::from_millis((claims.expires_at - now_ms()).max(0) as u64);
    let until_expiry = tokio::time::sleep(left);
    Ok(Sse::new(ready.chain(events).take_until(until_expiry))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
