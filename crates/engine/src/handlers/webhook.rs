//! `webhook.post`: POSTs a signed JSON body to a named webhook destination.
//!
//! Args: `{ "destination": "<name>", "body": { … } }`. The directive id is the
//! `webhook-id` header, identical on every retry, so receivers can dedupe.

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::Value;

use super::str_arg;
use crate::destination::{WebhookConfig, open_config};
use crate::{Engine, EngineError, Handler, Outcome};

/// The `webhook.post` handler.
pub struct WebhookPost;

impl Handler for WebhookPost {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let name = str_arg(args, "destination")?;
            let d = crate::destination::find(engine, tenant, name)
                .await
                .map_err(|e| match e {
                    EngineError::NotFound(what) => EngineError::Validation(
                        fleetprompt_core::signal::ValidationError::Invalid {
                            field: "args",
                            reason: format!("{what} does not exist"),
                        },
                    ),
                    other => other,
                })?;
            if d.kind != "webhook" {
                return Err(EngineError::Validation(
                    fleetprompt_core::signal::ValidationError::Invalid {
                        field: "args",
                        reason: format!(
                            "destination {name:?} is a {} destination, not a webhook",
                            d.kind
                        ),
                    },
                ));
            }
            Ok(())
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            let name = match str_arg(&d.args, "destination") {
                Ok(n) => n,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let dest = match crate::destination::find(engine, d.tenant, name).await {
                Ok(dest) => dest,
                Err(EngineError::NotFound(_)) => {
                    return Outcome::fail(format!("destination {name:?} no longer exists"));
                }
                Err(e) => {
                    return Outcome::Retry {
                        error: e.to_string(),
                        http_status: None,
                        retry_after: None,
                    };
                }
            };
            let config: WebhookConfig = match open_config(engine, d.tenant, &dest) {
                Ok(c) => c,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let body = d
                .args
                .get("body")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            let delivery = fleetprompt_connectors::webhook::post(
                engine.http(),
                &config.url,
                &config.signing_secret,
                &d.id.to_string(),
                &body,
            )
            .await;
            Outcome::from_delivery(delivery)
        }
        .boxed()
    }
}
