//! Directive handlers: platform-owned code that does one kind of work.
//!
//! Rules and API callers choose and parametrise handlers; they never run code.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::Claimed;
use futures::future::BoxFuture;
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

/// One kind of directive.
pub trait Handler: Send + Sync + 'static {
    /// The signals that report this kind's end; `directive.succeeded` /
    /// `directive.failed` unless the kind has its own vocabulary.
    fn result_signals(&self) -> ResultSignals {
        ResultSignals::default()
    }

    /// A second pair of result signals, recorded and routed with the first
    /// in the completion's transaction: `email.send` ends its escalation
    /// too (`webchat.escalation.notified` / `.failed`).
    fn also_result_signals(&self) -> Option<ResultSignals> {
        None
    }

    /// A signal recorded (not routed) in the transaction that creates a
    /// directive of this kind, e.g. `webchat.escalation.created`.
    fn created_signal(&self) -> Option<&'static str> {
        None
    }

    /// Checks arguments when the directive is created, so bad input is
    /// refused with a clear error instead of failing later.
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>>;

    /// Runs one attempt. Must be idempotent: delivery is at-least-once.
    fn execute<'a>(&'a self, engine: &'a Engine, directive: &'a Claimed) -> BoxFuture<'a, Outcome>;
}

/// The known directive kinds and their handlers.
#[derive(Clone, Default)]
pub struct HandlerRegistry {
    handlers: BTreeMap<&'static str, Arc<dyn Handler>>,
}

impl HandlerRegistry {
    /// Adds a handler for `kind`.
    pub fn register(&mut self, kind: &'static str, handler: impl Handler) {
        self.handlers.insert(kind, Arc::new(handler));
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.handlers.get(kind)
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
