//! `/console/live`: the signed-in member's tenant feed over SSE. Each event
//! says only which conversation got a message (and from whom); the page
//! then fetches what it shows with the same session, so nothing reaches a
//! browser that its member could not open anyway.

use std::convert::Infallible;
use std::time::Duration;

use crate::live::hub;
use axum::Extension;
use axum::Router;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use futures::Stream;

use fleetprompt_server::AppState;
use fleetprompt_server::console::Member;

use crate::http::widget::stream::Streams;

/// A feed ends after this long and the browser connects again, so a
/// signed-out or disabled member's feed does not outlive their session
/// by more than this.
const MAX_LIFE: Duration = Duration::from_secs(300);

/// The feed's route; `streams` says when the server stops, which ends it
/// (like the widget's streams) so the drain is not held up.
pub(super) fn router(streams: std::sync::Arc<Streams>) -> Router<AppState> {
    Router::new()
        .route("/live", get(feed))
        .layer(Extension(streams))
}

async fn feed(
    Extension(streams): Extension<std::sync::Arc<Streams>>,
    m: Member,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let sub = hub().subscribe_tenant(m.tenant.id);
    let mut stopping = streams.stopping();
    let end = Box::pin(async move {
        tokio::select! {
            _ = tokio::time::sleep(MAX_LIFE) => {}
            _ = stopping.wait_for(|s| *s) => {}
        }
    });
    let ready = Event::default().event("ready").data("{}");
    let events = futures::stream::unfold(Some((Some(ready), sub, end)), |state| async move {
        let (first, mut sub, mut end) = state?;
        if let Some(ev) = first {
            return Some((Ok(ev), Some((None, sub, end))));
        }
        tokio::select! {
            e = sub.recv() => {
                let e = e?;
                let ev = Event::default()
                    .event("message")
                    .json_data(&e.0)
                    .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                Some((Ok(ev), Some((None, sub, end))))
            }
            () = &mut end => Some((Ok(Event::default().event("reconnect").data("{}")), None)),
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
