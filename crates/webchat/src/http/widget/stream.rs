//! `GET /v1/widget/stream`: replies to the visitor, live, as server-sent
//! events (`event: message`, data = the message as history shows it).
//!
//! The widget reads it with `fetch` rather than `EventSource`, so the token
//! travels in the `Authorization` header, never in a URL that proxies log.
//!
//! A stream ends with one last event that says what the widget should do:
//! - `reconnect`: the token expired, or this node is shutting down; the
//!   widget connects again (with a fresh token, perhaps to another node)
//!   after a short random delay, and fetches the history it missed.
//! - `replaced`: the visitor opened more streams than allowed (default 3,
//!   e.g. many tabs); the oldest is closed so, and does not reconnect by
//!   itself.
//!
//! Each site may hold a bounded number of streams; past it a new one is
//! answered 429, so one site cannot take every connection of the server.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::live::hub;
use crate::types::id::{SiteId, VisitorId};
use axum::Extension;
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use fleetprompt_core::time::now_ms;
use futures::Stream;
use tokio::sync::{oneshot, watch};

use super::{authenticate, rejected};
use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;

/// Live streams a visitor may hold by default; a new one closes the oldest.
pub const STREAMS_PER_VISITOR: usize = 3;
/// Live streams a site may hold by default; past it new ones get 429.
pub const STREAMS_PER_SITE: usize = 2_000;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v1/widget/stream", get(stream))
}

/// Why a stream ends.
#[derive(Debug, Clone, Copy)]
enum End {
    /// Token expired or the node is stopping: connect again.
    Reconnect,
    /// A newer stream of the same visitor took its place.
    Replaced,
}

/// The open streams of this process, with their caps, and the notice that
/// the process is stopping.
pub struct Streams {
    per_visitor: usize,
    per_site: usize,
    // A std mutex: held for map operations only, never across an await.
    open: Mutex<Open>,
    stopping: watch::Sender<bool>,
}

/// One visitor's streams, oldest first, each with the sender that tells it
/// it was replaced.
type Queue = VecDeque<(u64, oneshot::Sender<()>)>;

#[derive(Default)]
struct Open {
    next: u64,
    visitors: HashMap<(SiteId, VisitorId), Queue>,
    sites: HashMap<SiteId, usize>,
}

impl Streams {
    /// A registry with these caps (each at least 1).
    pub fn new(per_visitor: usize, per_site: usize) -> Self {
        Self {
            per_visitor: per_visitor.max(1),
            per_site: per_site.max(1),
            open: Mutex::default(),
            stopping: watch::channel(false).0,
        }
    }

    /// Ends every stream with `event: reconnect`, and makes new ones end so
    /// at once: the process is stopping, and SSE streams would otherwise
    /// hold the HTTP server's graceful shutdown until their tokens expire.
    pub fn stop_all(&self) {
        self.stopping.send_replace(true);
    }

    /// Turns true when the process is stopping: any other long-lived
    /// stream (the console's live feed) ends then too.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Streams open now.
    pub fn count(&self) -> usize {
        self.open.lock().expect("streams lock").sites.values().sum()
    }

    /// Registers a stream; `None` when the site is at its cap. A visitor at
    /// its cap has its oldest stream replaced.
    fn open(self: &Arc<Self>, site: SiteId, visitor: VisitorId) -> Option<Slot> {
        let (tx, rx) = oneshot::channel();
        let mut open = self.open.lock().expect("streams lock");
        let on_site = open.sites.get(&site).copied().unwrap_or(0);
        if on_site >= self.per_site {
            return None;
        }
        open.next += 1;
        let id = open.next;
        let mine = open.visitors.entry((site, visitor)).or_default();
        while mine.len() >= self.per_visitor {
            if let Some((_, old)) = mine.pop_front() {
                let _ = old.send(());
            }
        }
        mine.push_back((id, tx));
        *open.sites.entry(site).or_default() += 1;
        Some(Slot {
            streams: self.clone(),
            site,
            visitor,
            id,
            replaced: Some(rx),
        })
    }
}

/// One registered stream; dropping it (the client went away, or the stream
/// ended) frees its place.
struct Slot {
    streams: Arc<Streams>,
    site: SiteId,
    visitor: VisitorId,
    id: u64,
    replaced: Option<oneshot::Receiver<()>>,
}

impl Slot {
    /// Resolves when the stream must end, and why.
    fn ended(&mut self, left: Duration) -> impl Future<Output = End> + use<> {
        let replaced = self.replaced.take();
        let mut stopping = self.streams.stopping.subscribe();
        async move {
            let replaced = async move {
                match replaced {
                    // A dropped sender means the slot was taken out of the
                    // queue: replaced either way.
                    Some(rx) => {
                        let _ = rx.await;
                    }
                    None => futures::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = replaced => End::Replaced,
                _ = stopping.wait_for(|s| *s) => End::Reconnect,
                () = tokio::time::sleep(left) => End::Reconnect,
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().expect("streams lock");
        let key = (self.site, self.visitor);
        if let Some(mine) = open.visitors.get_mut(&key) {
            mine.retain(|(id, _)| *id != self.id);
            if mine.is_empty() {
                open.visitors.remove(&key);
            }
        }
        if let Some(n) = open.sites.get_mut(&self.site) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.sites.remove(&self.site);
            }
        }
    }
}

fn last_event(why: End) -> Event {
    match why {
        End::Reconnect => Event::default().event("reconnect").data("{}"),
        End::Replaced => Event::default().event("replaced").data("{}"),
    }
}

async fn stream(
    State(s): State<AppState>,
    Extension(streams): Extension<Arc<Streams>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let (site, claims) = authenticate(&s, &headers).await?;
    let mut slot = streams.open(site.id, claims.visitor).ok_or_else(|| {
        rejected("streams_site");
        ApiError::TooManyRequests(5)
    })?;
    let sub = hub().subscribe(site.tenant, site.id, claims.visitor);
    let left = Duration::from_millis((claims.expires_at - now_ms()).max(0) as u64);
    let ended = Box::pin(slot.ended(left));
    let ready = Event::default().event("ready").data("{}");
    // State: the first event still to send, then the live subscription
    // until `ended`, then one last event, then nothing.
    let events =
        futures::stream::unfold(Some((Some(ready), sub, ended, slot)), |state| async move {
            let (first, mut sub, mut ended, slot) = state?;
            if let Some(ev) = first {
                return Some((Ok(ev), Some((None, sub, ended, slot))));
            }
            tokio::select! {
                e = sub.recv() => {
                    let e = e?;
                    let ev = Event::default()
                        .event("message")
                        .json_data(&e.0)
                        .unwrap_or_else(|_| Event::default().comment("unencodable event"));
                    Some((Ok(ev), Some((None, sub, ended, slot))))
                }
                why = &mut ended => {
                    drop(slot);
                    Some((Ok(last_event(why)), None))
                }
            }
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_visitor_past_its_cap_loses_its_oldest_stream_and_a_full_site_refuses() {
        let streams = Arc::new(Streams::new(2, 3));
        let (site, v) = (SiteId::new(), VisitorId::new());
        let mut a = streams.open(site, v).unwrap();
        let _b = streams.open(site, v).unwrap();
        let a_end = a.ended(Duration::from_secs(60));
        let _c = streams.open(site, v).unwrap();
        assert!(matches!(a_end.await, End::Replaced));
        drop(a);
        assert_eq!(streams.count(), 2);
        let _d = streams.open(site, VisitorId::new()).unwrap();
        assert!(streams.open(site, VisitorId::new()).is_none(), "site cap");
        assert!(
            streams.open(SiteId::new(), v).is_some(),
            "other sites unaffected"
        );
    }

    #[tokio::test]
    async fn stopping_ends_every_stream_with_reconnect() {
        let streams = Arc::new(Streams::new(3, 10));
        let mut a = streams.open(SiteId::new(), VisitorId::new()).unwrap();
        let end = a.ended(Duration::from_secs(60));
        streams.stop_all();
        assert!(matches!(end.await, End::Reconnect));
    }
}
