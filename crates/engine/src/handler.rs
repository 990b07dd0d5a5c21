//! Directive handlers: platform-owned code that does one kind of work.
//!
//! Rules and API callers choose and parametrise handlers; they never run code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Engine, EngineError};

/// How an attempt ended, in the handler's judgement.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done. `result` is kept on the directive.
    Succeeded {
        /// What to keep (e.g. the receiver's status).
        result: Value,
        /// The receiver's HTTP status, if any.
        http_status: Option<u16>,
        /// A receiver-side reference (message id …).
        external_ref: Option<String>,
    },
    /// Failed, but another attempt may succeed.
    Retry {
        /// What went wrong.
        error: String,
        /// The receiver's HTTP status, if any.
        http_status: Option<u16>,
        /// The receiver's own wait, which overrides backoff.
        retry_after: Option<Duration>,
    },
    /// Failed, and retrying cannot help.
    Fail {
        /// What went wrong.
        error: String,
        /// The receiver's HTTP status, if any.
        http_status: Option<u16>,
        /// A receiver-side error id, if any.
        external_ref: Option<String>,
    },
}

impl Outcome {
    /// Done, with `result` kept and no receiver status or reference.
    pub fn succeeded(result: Value) -> Self {
        Self::Succeeded {
            result,
            http_status: None,
            external_ref: None,
        }
    }

    /// A permanent failure with no receiver status.
    pub fn fail(error: impl Into<String>) -> Self {
        Self::Fail {
            error: error.into(),
            http_status: None,
            external_ref: None,
        }
    }

    /// Maps a connector's [`Delivery`](fleetprompt_connectors::Delivery).
    pub fn from_delivery(d: fleetprompt_connectors::Delivery) -> Self {
        match d {
            fleetprompt_connectors::Delivery::Delivered { status, body } => Self::Succeeded {
                result: serde_json::json!({ "status": status, "body": body }),
                http_status: Some(status),
                external_ref: None,
            },
            fleetprompt_connectors::Delivery::Failed(f) if f.retriable => Self::Retry {
                error: f.error,
                http_status: f.status,
                retry_after: f.retry_after,
            },
            fleetprompt_connectors::Delivery::Failed(f) => Self::Fail {
                error: f.error,
                http_status: f.status,
                external_ref: None,
            },
        }
    }
}

/// The signal types that report how a kind's directives ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultSignals {
    /// Recorded when a directive succeeds.
    pub succeeded: &'static str,
    /// Recorded when a directive fails for good.
    pub failed: &'static str,
}

impl Default for ResultSignals {
    fn default() -> Self {
        Self {
            succeeded: "directive.succeeded",
            failed: "directive.failed",
        }
    }
}

/// An attempt that did not succeed, for `?` in a handler: retry later, or
/// fail for good. Use [`OrRetry`] on any result to say which.
#[derive(Debug, Clone, PartialEq)]
pub struct Failed(Outcome);

impl Failed {
    /// Another attempt may succeed.
    pub fn retry(error: impl std::fmt::Display) -> Self {
        Self(Outcome::Retry {
            error: error.to_string(),
            http_status: None,
            retry_after: None,
        })
    }

    /// Retrying cannot help.
    pub fn fail(error: impl std::fmt::Display) -> Self {
        Self(Outcome::fail(error.to_string()))
    }

    /// A receiver's answer that is a retry or a failure (from
    /// [`Outcome::from_delivery`], say); a success is kept as it is.
    pub fn outcome(o: Outcome) -> Self {
        Self(o)
    }
}

impl From<Failed> for Outcome {
    fn from(f: Failed) -> Self {
        f.0
    }
}

impl From<ArgsError> for Failed {
    fn from(e: ArgsError) -> Self {
        Self::fail(e)
    }
}

/// What an attempt ends with: `Ok` for the handler's own outcome,
/// `Err` for a retry or a failure raised with `?`.
pub type Attempt = Result<Outcome, Failed>;

/// Says how an error ends the attempt: `.or_retry()?` / `.or_fail()?`.
pub trait OrRetry<T> {
    /// The error is passing (the database, the network): retry.
    fn or_retry(self) -> Result<T, Failed>;
    /// The error is permanent: fail.
    fn or_fail(self) -> Result<T, Failed>;
}

impl<T, E: std::fmt::Display> OrRetry<T> for Result<T, E> {
    fn or_retry(self) -> Result<T, Failed> {
        self.map_err(Failed::retry)
    }

    fn or_fail(self) -> Result<T, Failed> {
        self.map_err(Failed::fail)
    }
}

/// Arguments that do not fit their kind: which field (`args.destination`)
/// and what is wrong with it (`missing field`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", self.field())]
pub struct ArgsError {
    /// The path below `args` (`["to", "0"]`); empty for `args` itself.
    pub path: Vec<String>,
    /// What is wrong.
    pub reason: String,
}

impl ArgsError {
    /// An error about the field at `path`.
    pub fn new(path: &[&str], reason: impl Into<String>) -> Self {
        Self {
            path: path.iter().map(|s| (*s).to_owned()).collect(),
            reason: reason.into(),
        }
    }

    /// The field as the API names it: `args`, `args.destination`, `args.to.0`.
    pub fn field(&self) -> String {
        std::iter::once("args")
            .chain(self.path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Reads a directive's arguments as `T`; no arguments (`null`) read as an
/// empty table, so a kind whose arguments are all optional needs none.
pub fn parse_args<T: DeserializeOwned>(args: &Value) -> Result<T, ArgsError> {
    let empty = Value::Object(Default::default());
    let args = if args.is_null() { &empty } else { args };
    serde_path_to_error::deserialize(args).map_err(|e| {
        let mut path: Vec<String> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(index.to_string()),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = e.into_inner().to_string();
        // serde names a missing field in its message, at the table's path:
        // move it into the path, so the error names the field itself.
        let reason = match message
            .strip_prefix("missing field `")
            .and_then(|m| m.split_once('`'))
        {
            Some((field, _)) => {
                path.push(field.to_owned());
                "missing field".to_owned()
            }
            None => message,
        };
        ArgsError { path, reason }
    })
}

/// One kind of directive, with its arguments' type.
pub trait Handler: Send + Sync + 'static {
    /// The arguments, read once when the directive is created (a bad one is
    /// refused there, naming the field) and again by each attempt.
    type Args: DeserializeOwned + Send + Sync + 'static;

    /// The signals that report this kind's end; `directive.succeeded` /
    /// `directive.failed` unless the kind has its own vocabulary.
    fn result_signals(&self) -> ResultSignals {
        ResultSignals::default()
    }

    /// A second pair of result signals, recorded and routed with the first
    /// in the completion's transaction: `email.send` ends its escalation
    /// too (a package's `<noun>.notified` / `.failed`).
    fn also_result_signals(&self) -> Option<ResultSignals> {
        None
    }

    /// A signal recorded (not routed) in the transaction that creates a
    /// directive of this kind, e.g. a package's `<noun>.created`.
    fn created_signal(&self) -> Option<&'static str> {
        None
    }

    /// Checks the arguments against the tenant's records when the
    /// directive is created (a destination exists and is of the right
    /// kind …), so bad input is refused with a clear error instead of
    /// failing later. Their shape is checked already.
    fn validate<'a>(
        &'a self,
        _engine: &'a Engine,
        _tenant: TenantId,
        _args: &'a Self::Args,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        futures::future::ready(Ok(())).boxed()
    }

    /// Runs one attempt. Must be idempotent: delivery is at-least-once.
    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        directive: &'a Claimed,
        args: Self::Args,
    ) -> BoxFuture<'a, Attempt>;
}

/// A [`Handler`] with its arguments' type erased, as the registry holds it.
pub trait AnyHandler: Send + Sync + 'static {
    /// See [`Handler::result_signals`].
    fn result_signals(&self) -> ResultSignals;
    /// See [`Handler::also_result_signals`].
    fn also_result_signals(&self) -> Option<ResultSignals>;
    /// See [`Handler::created_signal`].
    fn created_signal(&self) -> Option<&'static str>;
    /// Whether `args` has this kind's shape (no database needed).
    fn check_args(&self, args: &Value) -> Result<(), ArgsError>;
    /// Reads `args` and runs [`Handler::validate`] on them.
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>>;
    /// Reads the directive's arguments (failing the attempt when they do
    /// not fit) and runs [`Handler::execute`].
    fn execute<'a>(&'a self, engine: &'a Engine, directive: &'a Claimed) -> BoxFuture<'a, Outcome>;
}

impl<H: Handler> AnyHandler for H {
    fn result_signals(&self) -> ResultSignals {
        Handler::result_signals(self)
    }

    fn also_result_signals(&self) -> Option<ResultSignals> {
        Handler::also_result_signals(self)
    }

    fn created_signal(&self) -> Option<&'static str> {
        Handler::created_signal(self)
    }

    fn check_args(&self, args: &Value) -> Result<(), ArgsError> {
        parse_args::<H::Args>(args).map(|_| ())
    }

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let typed = parse_args::<H::Args>(args)?;
            Handler::validate(self, engine, tenant, &typed).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            // Checked at creation; a directive made before a kind's
            // arguments were typed may still not fit, and never will.
            let args = match parse_args::<H::Args>(&d.args) {
                Ok(a) => a,
                Err(e) => return Failed::from(e).into(),
            };
            match Handler::execute(self, engine, d, args).await {
                Ok(o) => o,
                Err(f) => f.into(),
            }
        }
        .boxed()
    }
}

/// The known directive kinds and their handlers.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<&'static str, Arc<dyn AnyHandler>>,
}

impl HandlerRegistry {
    /// Adds a handler for `kind`.
    pub fn register(&mut self, kind: &'static str, handler: impl Handler) {
        self.handlers.insert(kind, Arc::new(handler));
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn AnyHandler>> {
        self.handlers.get(kind)
    }

    /// Whether `args` fit `kind`'s arguments (for `workflows check`, which
    /// has no database); `Ok` for an unknown kind, which is its own error.
    pub fn check_args(&self, kind: &str, args: &Value) -> Result<(), ArgsError> {
        match self.handlers.get(kind) {
            Some(h) => h.check_args(args),
            None => Ok(()),
        }
    }

    /// Every known kind, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        self.handlers.keys().copied().collect()
    }

    /// Every signal type the handlers record: their result signals (both
    /// pairs) and their creation signals, sorted and without repeats.
    pub fn signal_types(&self) -> Vec<&'static str> {
        let mut types = std::collections::BTreeSet::new();
        for h in self.handlers.values() {
            for r in std::iter::once(h.result_signals()).chain(h.also_result_signals()) {
                types.insert(r.succeeded);
                types.insert(r.failed);
            }
            types.extend(h.created_signal());
        }
        types.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::handlers::WebhookArgs;

    fn err<T: DeserializeOwned + std::fmt::Debug>(args: Value) -> String {
        parse_args::<T>(&args).expect_err("refused").to_string()
    }

    #[test]
    fn a_missing_field_is_named_with_its_path() {
        let e = parse_args::<WebhookArgs>(&json!({ "body": {} })).unwrap_err();
        assert_eq!(e.path, ["destination"]);
        assert_eq!(e.to_string(), "args.destination: missing field");
    }

    #[test]
    fn a_wrong_type_or_value_is_named_with_its_path() {
        assert!(
            err::<WebhookArgs>(json!({ "destination": 3 }))
                .starts_with("args.destination: invalid type: integer `3`"),
        );
    }

    #[test]
    fn optional_arguments_may_be_left_out_and_unknown_ones_are_kept_for_later() {
        let hook: WebhookArgs = parse_args(&json!({ "destination": "h", "extra": 1 })).unwrap();
        assert_eq!(hook.body, json!({}));
    }

    #[test]
    fn the_registry_checks_arguments_by_kind() {
        let r = crate::handlers::platform();
        assert_eq!(
            r.check_args("webhook.post", &json!({}))
                .unwrap_err()
                .field(),
            "args.destination"
        );
        assert!(
            r.check_args("webhook.post", &json!({ "destination": "h" }))
                .is_ok()
        );
        assert!(r.check_args("noop", &json!({ "anything": [1, 2] })).is_ok());
        // An unknown kind is reported as such elsewhere.
        assert!(r.check_args("teleport", &json!({})).is_ok());
    }

    #[test]
    fn failures_raised_with_question_mark_keep_their_kind() {
        fn attempt(pass: bool) -> Attempt {
            Err::<(), _>("database unavailable").or_retry()?;
            if pass {
                Ok(Outcome::fail("unreachable"))
            } else {
                Err(Failed::fail("never"))
            }
        }
        assert!(matches!(
            Outcome::from(attempt(true).unwrap_err()),
            Outcome::Retry { error, .. } if error == "database unavailable"
        ));
        fn bad_args() -> Attempt {
            let a: WebhookArgs = parse_args(&json!({}))?;
            Ok(Outcome::fail(a.destination))
        }
        assert!(matches!(
            Outcome::from(bad_args().unwrap_err()),
            Outcome::Fail { error, .. } if error == "args.destination: missing field"
        ));
    }
}
