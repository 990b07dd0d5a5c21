//! `noop`: does nothing, successfully. For benchmarks and smoke tests.

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use crate::{Engine, EngineError, Handler, Outcome};

/// The `noop` handler.
pub struct Noop;

impl Handler for Noop {
    fn validate<'a>(
        &'a self,
        _: &'a Engine,
        _: TenantId,
        _: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn execute<'a>(&'a self, _: &'a Engine, _: &'a Claimed) -> BoxFuture<'a, Outcome> {
        futures::future::ready(Outcome::Succeeded {
            result: Value::Null,
            http_status: None,
            external_ref: None,
        })
        .boxed()
    }
}
