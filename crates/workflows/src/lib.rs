//! Declarative workflow rules for FleetPrompt.
//!
//! Tenants (and the shipped `website_chat` package) describe, in TOML, which
//! signals or schedules should create which directives. This crate loads
//! those files, validates the whole set (reporting every problem as
//! `file:line:col: message`), compiles conditions (CEL) and templates
//! (minijinja) once, and then routes signals to planned directives. It does
//! no I/O besides reading the rule directory: the engine owns storage,
//! timers, dedupe and cancellation; the rules only choose and parametrise
//! platform-owned directive kinds.
//!
//! ```no_run
//! # use fleetprompt_workflows::*;
//! # fn main() -> Result<(), LoadError> {
//! let rules = RuleSet::load_dir("workflows".as_ref(), &CheckOptions::default())?;
//! let signal = SignalInput {
//!     id: "sig-1".into(),
//!     r#type: "webchat.message.received".into(),
//!     subject: "conversation:42".into(),
//!     payload: serde_json::json!({"content": "hello"}),
//!     occurred_at: "2025-01-01T00:00:00Z".into(),
//! };
//! let ctx = RouteContext::new(serde_json::Value::Null, chrono::Utc::now());
//! for evaluation in rules.route("acme", &signal, &ctx) {
//!     println!("{}: {:?}", evaluation.rule_id, evaluation.outcome);
//! }
//! # Ok(()) }
//! ```
//!
//! The file format is documented in `docs/workflows.md`.
//!
//! # Layout
//!
//! - `model`: serde structs mirroring the TOML, with spans kept for error
//!   positions.
//! - `load`: reading `<dir>/*.toml` and `<dir>/tenants/<slug>/*.toml`,
//!   validating and compiling into a [`RuleSet`].
//! - `rule`: the compiled [`RuleSet`], its per-scope indexes, [`Scope`],
//!   [`CheckOptions`], [`Backoff`], [`RuleSummary`].
//! - `route`: [`RuleSet::route`], [`RuleSet::explain`],
//!   [`RuleSet::cancellers`] and their result types.
//! - `cron`: [`CronTrigger`], [`RuleSet::cron_rules`], [`RuleSet::cron_tick`].
//! - `expr`: CEL conditions. `template`: minijinja templates (with a
//!   Jinja-compatible `truncate` filter).
//! - `taxonomy`: [`RuleSet::unknown_signal_types`], warnings for `on` and
//!   `cancel_on` patterns that no known signal type matches.
//! - `pattern`: signal type patterns (`webchat.*`). `duration`: `"10m"`.
//! - `diagnostic`: [`Diagnostic`] and byte-offset to line:col mapping.
//!   `error`: [`LoadError`].

mod cron;
mod diagnostic;
mod duration;
mod error;
mod expr;
mod load;
mod model;
mod pattern;
mod route;
mod rule;
mod taxonomy;
mod template;

pub use crate::cron::{CronTrigger, PlannedSignal};
pub use crate::diagnostic::Diagnostic;
pub use crate::duration::parse_duration;
pub use crate::error::LoadError;
pub use crate::load::{
    DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_MAX_MS, DEFAULT_MAX_ATTEMPTS, RuleSource, read_dir,
};
pub use crate::pattern::{TypePattern, type_matches};
pub use crate::route::{
    CancelTarget, Outcome, PlannedDirective, RouteContext, RuleEvaluation, SignalInput, SkipReason,
    Throttle,
};
pub use crate::rule::{
    ArgsCheck, ArgsProblem, Backoff, BackoffKind, CheckOptions, Destinations, RuleFile, RuleSet,
    RuleSummary, Scope,
};

#[cfg(test)]
mod testing;
