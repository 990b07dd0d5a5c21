//! `noop`: does nothing, successfully. For benchmarks and smoke tests.

use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::{Attempt, Engine, Handler, Outcome};

/// The `noop` handler.
pub struct Noop;

impl Handler for Noop {
    /// Anything: a smoke test's arguments are its own.
    type Args = serde::de::IgnoredAny;

    fn execute<'a>(
        &'a self,
        _: &'a Engine,
        _: &'a Claimed,
        _: Self::Args,
    ) -> BoxFuture<'a, Attempt> {
        futures::future::ready(Ok(Outcome::succeeded(Value::Null))).boxed()
    }
}
