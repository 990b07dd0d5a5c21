//! What a package's own store module builds on.
//!
//! A package (website chat is the first) keeps its tables' SQL in a store
//! module of its own crate, the only module of that crate that names sqlx.
//! It writes that SQL the way the store's modules do, with the same
//! machinery:
//!
//! - [`on_db!`](crate::on_db) and [`on_tx!`](crate::on_tx) run one body
//!   against whichever backend a [`Db`] reads from or a [`Tx`] writes to,
//!   so a statement shared by both backends is written once (numbered `$n`
//!   parameters work on both). The driver's pools and transactions stay
//!   behind these two macros.
//! - [`TxInner`] is a transaction's connection per backend, for what one
//!   backend alone does (PostgreSQL's advisory locks, a statement written
//!   differently for each): match on it, and keep each backend's SQL in a
//!   function (or file) of its own.
//! - [`json_rows`] and [`json_array`] bind a batch of rows as one JSON
//!   parameter; [`signal_row`] and [`insert_signal_rows`] write a batch of
//!   signals that way, in the caller's transaction.
//! - [`corrupt`] and [`is_unique_violation`] turn what the driver says into
//!   [`StoreError`](crate::StoreError)s the layers above know.
//! - [`text_column!`] gives a package's own ids (made with
//!   `fleetprompt_core::define_id!`) their column type.
//! - [`Tx::mark_config_changed`] marks a record that caches hold (a site)
//!   as changed, here and on the other nodes.
//! - [`ser_ms`] and [`ser_opt_ms`] serialize times as RFC 3339, as every
//!   record the API shows does.
//!
//! Anything else a package needs from the platform's tables goes through
//! the platform's store functions, never its SQL.

use fleetprompt_core::time::Millis;
use fleetprompt_core::{NewSignal, SignalId, TenantId};
use serde::Serializer;
use serde_json::Value;

pub use crate::db::TxInner;
pub use crate::{Backend, Db, Tx, corrupt, is_unique_violation, json_array, json_rows};
/// `text_column!(Type, |v| v.to_string())` makes a package's id (or any
/// type with `FromStr`) a TEXT column of both backends, stored in its
/// string form and decoded with its own parse, as the platform's ids are.
/// Invoke it in the package's store module: it names `::sqlx`.
pub use fleetprompt_core::text_column;

/// A new signal as one row of the JSON array [`insert_signal_rows`] reads.
pub fn signal_row(tenant: TenantId, id: SignalId, s: &NewSignal, recorded_at: Millis) -> Value {
    crate::signal::json_row(tenant, id, s, recorded_at)
}

/// The statement that inserts the signals of the JSON rows `k` (as
/// [`json_rows`] names them, made by [`signal_row`]) in their order,
/// skipping any whose dedupe key the tenant already has.
pub fn insert_signal_rows(k: &str) -> String {
    crate::signal::insert_json_rows(k)
}

/// Serializes a time as RFC 3339 (`#[serde(serialize_with = …)]`).
pub fn ser_ms<S: Serializer>(ms: &Millis, s: S) -> Result<S::Ok, S::Error> {
    crate::timeline::ser_ms(ms, s)
}

/// Serializes an optional time as RFC 3339, or null.
pub fn ser_opt_ms<S: Serializer>(ms: &Option<Millis>, s: S) -> Result<S::Ok, S::Error> {
    crate::timeline::ser_opt_ms(ms, s)
}
