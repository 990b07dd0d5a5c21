//! The `website_chat` package, native mode: sites and their signed widget
//! tokens, message ingestion, live replies and the idle sweep.
//!
//! Every write that changes conversation state records its signals in the
//! same transaction (the one invariant). The tenant and site of a widget
//! request come only from the site record behind the public key or the
//! token, never from the request body.
//!
//! # Layout
//! - [`error`]: this package's error enum.
//! - [`settings`]: a site's widget settings, with defaults and limits.
//! - [`site`]: what installing the package sets up (the IP-hash key);
//!   registering, editing, rotating, disabling and enabling sites (as
//!   directives, so they appear in the audit timeline).
//! - `package.toml`: the manifest (read by [`crate::package`]).
//! - [`handlers`]: the `webchat.site.*` directive handlers.
//! - `site_cache`: site records as widget requests read them.
//! - [`session`]: bootstrap (site key + origin -> token) and token checks.
//! - [`ingest`]: visitor messages, contact capture, closing, history.
//! - [`spam`]: the spam score of a visitor message (links, repetition).
//! - [`reply`]: replies to the visitor (operator or approved assistant).
//! - [`escalation`]: `webchat.escalate_to_mattermost`, and what every
//!   notification shares (summary, contact, deep link).
//! - [`email`]: `webchat.escalate_to_email`, `email.send` (an Edge Connector
//!   delivers it) and replies that come back by email.
//! - [`outbound`]: `webchat.reply_send`, `webchat.conversation.close`.
//! - [`conversation`]: an operator's actions on a conversation (escalate,
//!   close, reopen, assign) and the `reopen`/`assign` handlers.
//! - [`assist`]: `webchat.reply_generate` (LLM, or BM25 over the FAQ).
//! - [`live`]: the in-process broadcast that feeds the widget's event stream.
//! - [`sweep`]: ends idle conversations.
//! - [`verify`]: installation verification (a test message end to end).
//! - [`demo`]: the demo tenant and site of the embedded setup.

pub mod assist;
pub mod conversation;
pub mod demo;
pub mod email;
pub mod error;
pub mod escalation;
pub mod handlers;
pub mod ingest;
pub mod live;
pub mod outbound;
pub mod reply;
pub mod session;
pub mod settings;
pub mod site;
pub(crate) mod site_cache;
pub mod spam;
pub mod sweep;
pub mod verify;

pub use error::WebchatError;

/// The package's slug in installations (its manifest's `slug`).
pub const PACKAGE: &str = "website_chat";

/// `conversation:<id>`: the subject of every conversation signal.
pub fn conversation_subject(id: fleetprompt_core::id::ConversationId) -> String {
    format!("conversation:{id}")
}

/// `site:<id>`: the subject of site administration directives.
pub fn site_subject(id: fleetprompt_core::id::SiteId) -> String {
    format!("site:{id}")
}

/// Records signals that were inserted in a committed transaction.
pub(crate) fn count_signals(types: &[&str]) {
    for t in types {
        crate::metrics::signal_recorded(t);
    }
}
