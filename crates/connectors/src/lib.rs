//! Clients for the outside world. Each returns a [`Delivery`] that says, in
//! the receiver's own terms, whether a retry can help; business rules
//! (which directive, which destination) live in the engine.
//!
//! # Layout
//! - [`outbound`]: which addresses outbound requests may reach, checked
//!   when a destination is created and again on every connection.
//! - [`http`]: the shared HTTP client, its bounded reads and the
//!   classification of responses.
//! - [`webhook`]: signed JSON webhooks (Standard Webhooks / Svix style).
//! - [`mattermost`]: incoming webhooks and REST API v4 posts.
//! - [`llm`]: OpenAI-compatible chat completions.

pub mod http;
pub mod llm;
pub mod mattermost;
pub mod outbound;
pub mod webhook;

pub use http::{Delivery, Failure, Outbound};
pub use outbound::{Cidr, NotAllowed, OutboundPolicy};
