//! Storage: every query FleetPrompt makes, for SQLite and PostgreSQL.
//!
//! The caller owns the transaction ([`Db::begin`] / [`Tx::commit`]); store
//! functions take a [`Tx`] for writes or a [`Db`] for reads, and a
//! [`TenantId`](fleetprompt_core::TenantId) for every tenant-owned record.
//! Where the two backends can share SQL they do (numbered `$n` parameters work
//! on both); where a statement differs (the queue's claim and completion)
//! each backend has its own file behind a small dialect trait
//! ([`queue`]'s `sqlite.rs` and `postgres.rs`).
//!
//! Rows are decoded by column name (`sqlx::FromRow`); typed ids and the
//! enums stored by name are sqlx types of their own (core's `sqlx`
//! feature, enabled here only) and bind directly. A stored value that does
//! not decode (another id type's prefix, an unknown status, JSON that does
//! not parse) is [`StoreError::Corrupt`].
//!
//! # Layout
//! - [`cron`]: the last tick of each schedule rule, per tenant.
//! - [`db`]: connecting, pragmas, the backend enum, transactions, wake-ups.
//! - [`migrate`]: the embedded, checksummed migrations.
//! - [`notice`]: LISTEN/NOTIFY between nodes (PostgreSQL).
//! - [`package`]: what a package's own store module builds on.
//! - [`tenant`]: tenants and admin tokens (the tenant's and members' own).
//! - [`member`]: members of a tenant and their browser sessions.
//! - [`destination`]: outbound destinations, sealed at rest.
//! - [`signal`]: recording and reading signals.
//! - [`statistics`]: planner statistics for the tables that grow, the
//!   platform's and those the packages name (PostgreSQL).
//! - [`directive`]: creating, reading, cancelling and re-driving directives.
//! - [`edge`]: Edge Connectors, their tokens and heartbeats.
//! - [`evaluation`]: rule evaluations (why a rule did or did not act).
//! - [`health`]: outages told apart, the breaker, readiness.
//! - [`installation`]: which packages a tenant has installed (or uninstalled).
//! - [`queue`]: claiming due directives, completing attempts, reaping leases
//!   (the claim and completion of each backend in `queue/sqlite.rs` and
//!   `queue/postgres.rs`).
//! - [`retention`]: pruning what has aged out (`fleetprompt prune`), with
//!   each package's [`retention::PackageRetention`] for its own tables.
//! - [`timeline`]: a subject's causal history.
//! - [`workflow`]: rule files tenants publish, with their history.

pub mod cron;
pub mod db;
pub mod destination;
pub mod directive;
pub mod edge;
pub mod evaluation;
pub mod health;
pub mod installation;
pub mod member;
pub mod migrate;
pub mod notice;
pub mod package;
pub mod queue;
pub mod retention;
pub mod signal;
pub mod statistics;
pub mod tenant;
pub mod timeline;
pub mod workflow;

pub use db::{Backend, Db, Tx};

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (not an outage: see the two below). Opaque: the
    /// driver's error stays inside the store; its message is kept for logs.
    #[error("database error: {0}")]
    Database(DbError),
    /// The database cannot be reached now (connection refused or lost, no
    /// connection free in time, the breaker open after recent failures,
    /// a read-only server): retrying later may succeed.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has no room to write (`SQLITE_FULL`, PostgreSQL
    /// `53100 disk_full`): writes succeed again once space is freed.
    #[error("database storage is full: {0}")]
    StorageFull(String),
    /// The record does not exist for this tenant.
    #[error("{what} not found")]
    NotFound {
        /// Which kind of record (`directive`, `site` …).
        what: &'static str,
    },
    /// A uniqueness rule was broken (e.g. a tenant slug already taken, or
    /// two writers racing to insert one record): the message says which.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The record is not in a state that allows the change.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A stored value could not be decoded: a bug or a damaged database.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// Migrations could not be applied.
    #[error("migration {version} failed: {reason}")]
    Migration {
        /// The migration's number.
        version: i64,
        /// Why.
        reason: String,
    },
}

/// A database failure that is neither an outage nor a broken rule the
/// store knows by name. Its text is the driver's, for logs; the driver's
/// error type stays inside this crate.
pub struct DbError(sqlx::Error);

impl DbError {
    pub(crate) fn new(e: sqlx::Error) -> Self {
        Self(e)
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Debug for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        health::classify(e)
    }
}

impl StoreError {
    /// A copy of this error when it is an outage (the database unreachable
    /// or full), which every caller waiting on the same database shares;
    /// `None` for an error of one request's own.
    pub fn outage(&self) -> Option<StoreError> {
        match self {
            Self::Unavailable(m) => Some(Self::Unavailable(m.clone())),
            Self::StorageFull(m) => Some(Self::StorageFull(m.clone())),
            _ => None,
        }
    }

    /// A missing record of kind `what`.
    pub fn not_found(what: &'static str) -> Self {
        Self::NotFound { what }
    }

    /// Whether this is a missing record (of any kind).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}

/// Result alias of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A stored value that does not decode (a bug or a hand edit).
pub fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A JSON document stored as TEXT (as every JSON column is, on both
/// backends), for a row field read with
/// `#[sqlx(try_from = "JsonText<T>")]`: sqlx's own `Json` reads only
/// PostgreSQL's `json`/`jsonb` types. A NULL reads as JSON `null`, so an
/// `Option<T>` field is `None` for it. A document that does not parse is a
/// decode error, and so [`StoreError::Corrupt`].
#[doc(hidden)]
pub struct JsonText<T>(T);

impl<DB: sqlx::Database, T> sqlx::Type<DB> for JsonText<T>
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database, T: serde::de::DeserializeOwned> sqlx::Decode<'r, DB> for JsonText<T>
where
    Option<&'r str>: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(Self(
            match <Option<&'r str> as sqlx::Decode<'r, DB>>::decode(value)? {
                Some(text) => serde_json::from_str(text)?,
                None => T::deserialize(serde_json::Value::Null)?,
            },
        ))
    }
}

/// `From<JsonText<T>>` for the types stored as JSON (one impl each: the
/// orphan rule allows no blanket one).
macro_rules! json_text {
    ($($t:ty),* $(,)?) => {$(
        impl From<JsonText<$t>> for $t {
            fn from(j: JsonText<$t>) -> Self {
                j.0
            }
        }
    )*};
}
json_text!(
    serde_json::Value,
    Option<serde_json::Value>,
    fleetprompt_core::RetryPolicy,
    fleetprompt_core::Origin,
);

/// A batch of rows bound as one JSON parameter (`$n`, an array of arrays)
/// and read as the table `k`: `k.key` is a row's 0-based position and
/// `k.value ->> i` its i-th column, as text (cast numbers). A batch of any
/// size is then one statement with one prepared plan, instead of a
/// statement per row (on PostgreSQL a round trip each, on SQLite a hand-off
/// to the connection's thread) or a plan per batch size. PostgreSQL reads
/// it as `jsonb`, parsed once: on `json` every `->>` re-parses its row's
/// text, which profiled as a sixth of the database's time on ingest.
/// SQLite likewise: `json_each` hands each row over as text that every
/// `->>` parses again (an eighth of the writer's time on ingest), while
/// `jsonb_each` parses the batch once and hands rows over in its binary
/// form.
pub fn json_rows(backend: Backend, n: u8) -> String {
    match backend {
        Backend::Sqlite => format!("jsonb_each(${n}) AS k"),
        Backend::Postgres => format!(
            "(SELECT e.value, e.ord - 1 AS key FROM jsonb_array_elements(${n}::jsonb) WITH ORDINALITY AS e(value, ord)) AS k"
        ),
    }
}

/// Rows as the JSON text [`json_rows`] reads.
pub fn json_array(rows: impl Iterator<Item = serde_json::Value>) -> String {
    serde_json::Value::from(rows.collect::<Vec<_>>()).to_string()
}

/// Whether an error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Runs the same code against whichever backend a [`Db`] reads from.
/// The body is compiled once per backend, with `$c` bound to that pool.
/// Used by the store's modules and by package store modules (see
/// [`package`]); the caller's crate names sqlx for the body.
#[macro_export]
macro_rules! on_db {
    ($db:expr, $c:ident => $body:expr) => {
        match $db.reader()? {
            $crate::db::Reader::Sqlite($c) => $body,
            $crate::db::Reader::Postgres($c) => $body,
        }
    };
}

/// Runs the same code against a [`Tx`]'s connection, whichever backend it is.
/// Used like [`on_db!`].
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx.inner_mut() {
            $crate::db::TxInner::Sqlite(t) => {
                let $c = &mut **t;
                $body
            }
            $crate::db::TxInner::Postgres(t) => {
                let $c = &mut **t;
                $body
            }
        }
    };
}
