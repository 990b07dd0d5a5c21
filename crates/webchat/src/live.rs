//! Live replies: an in-process broadcast channel per visitor, feeding the
//! widget's event stream.
//!
//! A visitor has at most one open conversation per site, and a channel per
//! visitor (rather than per conversation) also carries the replies of a
//! conversation that opens after the stream connected.
//!
//! The same hub carries each tenant's inbox feed ([`Hub::subscribe_tenant`],
//! [`Hub::publish_tenant`]): one small event per new message, so an
//! operator's open inbox or conversation shows it without reloading.
//!
//! The hub is process-wide so that anything that stores an agent or
//! assistant message (the admin API, a directive handler on a worker) can
//! publish without threading a handle through. It reaches only streams
//! connected to this process: with several API nodes, fan-out needs a
//! cross-node signal (PostgreSQL `LISTEN/NOTIFY` on a `webchat_live`
//! channel, published in the reply's transaction); until then a widget on
//! another node sees the reply at its next history fetch.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use crate::types::id::{SiteId, VisitorId};
use fleetprompt_core::TenantId;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

/// Messages buffered per channel for a slow stream before it skips ahead
/// (it can fetch what it missed from the history endpoint).
const CAPACITY: usize = 64;

/// One event for a visitor's stream (a message as the widget shows it).
#[derive(Debug, Clone, Serialize)]
pub struct LiveEvent(pub Value);

/// The registry of visitor channels.
#[derive(Default)]
pub struct Hub {
    // A std mutex: it is held for a map operation only, never across an await.
    channels: Mutex<HashMap<String, broadcast::Sender<LiveEvent>>>,
}

static HUB: LazyLock<Hub> = LazyLock::new(Hub::default);

/// This process's hub.
pub fn hub() -> &'static Hub {
    &HUB
}

fn key(tenant: TenantId, site: SiteId, visitor: VisitorId) -> String {
    format!("{tenant}:{site}:{visitor}")
}

/// The key of a tenant's inbox feed (visitor keys have three parts).
fn tenant_key(tenant: TenantId) -> String {
    format!("inbox:{tenant}")
}

/// What an inbox hears: a conversation got a message. It carries ids and
/// the author's role only; a page fetches what it shows with the member's
/// own session.
#[derive(Debug, Clone, Serialize)]
pub struct InboxEvent {
    /// Always `message`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The conversation.
    pub conversation_id: crate::types::id::ConversationId,
    /// Its site.
    pub site_id: SiteId,
    /// Who wrote it: `visitor`, `agent` or `assistant`.
    pub role: String,
}

impl InboxEvent {
    /// A new message in `conversation_id`.
    pub fn message(
        conversation_id: crate::types::id::ConversationId,
        site_id: SiteId,
        role: impl Into<String>,
    ) -> Self {
        Self {
            kind: "message",
            conversation_id,
            site_id,
            role: role.into(),
        }
    }
}

impl Hub {
    /// Subscribes to a visitor's events.
    pub fn subscribe(
        &'static self,
        tenant: TenantId,
        site: SiteId,
        visitor: VisitorId,
    ) -> Subscription {
        let k = key(tenant, site, visitor);
        let mut map = self.channels.lock().expect("hub lock");
        let rx = map
            .entry(k.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription {
            hub: self,
            key: k,
            rx,
        }
    }

    /// Sends an event to a visitor's connected streams; returns how many.
    pub fn publish(
        &self,
        tenant: TenantId,
        site: SiteId,
        visitor: VisitorId,
        event: LiveEvent,
    ) -> usize {
        let map = self.channels.lock().expect("hub lock");
        map.get(&key(tenant, site, visitor))
            .and_then(|tx| tx.send(event).ok())
            .unwrap_or(0)
    }

    /// Subscribes to a tenant's inbox feed: an [`InboxEvent`] for every new
    /// message of any of its conversations, as JSON.
    pub fn subscribe_tenant(&'static self, tenant: TenantId) -> Subscription {
        let k = tenant_key(tenant);
        let mut map = self.channels.lock().expect("hub lock");
        let rx = map
            .entry(k.clone())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        Subscription {
            hub: self,
            key: k,
            rx,
        }
    }

    /// Sends an event to a tenant's connected inboxes; returns how many.
    pub fn publish_tenant(&self, tenant: TenantId, event: &InboxEvent) -> usize {
        let map = self.channels.lock().expect("hub lock");
        map.get(&tenant_key(tenant))
            .and_then(|tx| {
                tx.send(LiveEvent(serde_json::to_value(event).unwrap_or_default()))
                    .ok()
            })
            .unwrap_or(0)
    }

    /// Channels with at least one stream (for tests and gauges).
    pub fn channels(&self) -> usize {
        self.channels.lock().expect("hub lock").len()
    }
}

/// A stream's subscription; dropping the last one frees the channel.
pub struct Subscription {
    hub: &'static Hub,
    key: String,
    rx: broadcast::Receiver<LiveEvent>,
}

impl Subscription {
    /// The next event; `None` only if the channel closed.
    pub async fn recv(&mut self) -> Option<LiveEvent> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                // Skipped events are in the history; carry on with new ones.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut map = self.hub.channels.lock().expect("hub lock");
        // This subscription still counts as a receiver until it is dropped.
        if map
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn events_reach_subscribers_and_channels_are_freed() {
        let (t, s, v) = (TenantId::new(), SiteId::new(), VisitorId::new());
        let before = hub().channels();
        let mut sub = hub().subscribe(t, s, v);
        assert_eq!(hub().publish(t, s, v, LiveEvent(json!({ "n": 1 }))), 1);
        assert_eq!(
            hub().publish(t, s, VisitorId::new(), LiveEvent(json!({}))),
            0
        );
        assert_eq!(sub.recv().await.unwrap().0["n"], 1);
        drop(sub);
        assert_eq!(hub().channels(), before);
    }

    #[tokio::test]
    async fn a_tenant_feed_hears_only_its_tenant() {
        let (t, other) = (TenantId::new(), TenantId::new());
        let mut sub = hub().subscribe_tenant(t);
        let c = crate::types::id::ConversationId::new();
        let e = InboxEvent::message(c, SiteId::new(), "visitor");
        assert_eq!(hub().publish_tenant(other, &e), 0);
        assert_eq!(hub().publish_tenant(t, &e), 1);
        let got = sub.recv().await.unwrap().0;
        assert_eq!(got["type"], "message");
        assert_eq!(got["conversation_id"], c.to_string());
    }
}
