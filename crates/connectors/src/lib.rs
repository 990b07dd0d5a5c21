//! Clients for the outside world. Each returns a [`Delivery`] that says, in
//! the receiver's own terms, whether a retry can help; business rules
//! (which directive, which destination) live in the engine.
//!
//! # Layout
//! - [`http`]: the shared HTTP client and the classification of responses.
//! - [`webhook`]: signed JSON webhooks (Standard Webhooks / Svix style).

pub mod http;
pub mod webhook;

pub use http::{Delivery, Failure};
