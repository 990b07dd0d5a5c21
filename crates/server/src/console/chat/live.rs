//! `/console/live`: the signed-in member's tenant feed over SSE. Each event
//! says only which conversation got a message (and from whom); the page
//! then fetches what it shows with the same session, so nothing reaches a
//! browser that its member could not open anyway.

use std::convert::Infallible;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use fleetprompt_engine::webchat::live::hub;
use futures::Stream;

use crate::AppState;
use crate::console::Member;

/// A feed ends after this long and the browser connects again, so a
/// signed-out or disabled member's feed does not outlive their session
/// by more than this.
const MAX_LIFE: Duration = Duration::from_secs(300);

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/live", get(feed))
}

async fn feed(
    State(s): State<AppState>,
    m: Member,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let sub = hub().subscribe_tenant(m.tenant.id);
    let mut stopping = s.streams.stopping();
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
