//! Domain types of FleetPrompt: ids, signals, directives, retry policy, secrets.
//!
//! This crate does no I/O. Everything here is checked once, when built, so the
//! layers above can trust a value by its type.
//!
//! # Layout
//! - [`id`]: newtype ids with a typed prefix (`ten_…`, `sig_…`, `dir_…`, `dst_…`),
//!   and [`define_id!`] for a package's own.
//! - [`credential`]: finding (and redacting) credentials in free text.
//! - [`signal`]: signal types, subjects, new signals and payload validation.
//! - [`directive`]: directive kinds, statuses, origins, attempt outcomes.
//! - [`member`]: member roles and email checks.
//! - [`retry`]: the retry policy and its exponential backoff with jitter.
//! - [`secret`]: AEAD sealing of secrets at rest, admin tokens, sessions
//!   and passwords, and their constant-time verification.
//! - [`time`]: the one clock representation (milliseconds since the epoch).

pub mod credential;
pub mod directive;
pub mod id;
pub mod member;
pub mod retry;
pub mod secret;
pub mod signal;
pub mod time;

pub use directive::{AttemptOutcome, DirectiveKind, DirectiveStatus, Origin, Runner};
pub use id::{DestinationId, DirectiveId, EdgeConnectorId, MemberId, SignalId, TenantId, TokenId};
pub use retry::RetryPolicy;
pub use signal::{NewSignal, SignalType, Subject};
