//! `webhook.post`: POSTs a signed JSON body to a named webhook destination.
//!
//! Args: `{ "destination": "<name>", "body": { … } }`. The directive id is the
//! `webhook-id` header, identical on every retry, so receivers can dedupe.

use fleetprompt_core::TenantId;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;

use crate::destination::{WebhookConfig, open_config};
use crate::{ArgsError, Attempt, Engine, EngineError, Failed, Handler, OrRetry, Outcome};

/// The `webhook.post` handler.
pub struct WebhookPost;

/// The arguments of `webhook.post`.
#[derive(Debug, Deserialize)]
pub struct WebhookArgs {
    /// A webhook destination's name.
    pub destination: String,
    /// The JSON body; an empty object when not given.
    #[serde(default = "empty_object")]
    pub body: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

impl Handler for WebhookPost {
    type Args = WebhookArgs;

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a WebhookArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let name = &args.destination;
            let d = crate::destination::find(engine, tenant, name)
                .await
                .map_err(|e| match e {
                    EngineError::NotFound(what) => {
                        ArgsError::new(&["destination"], format!("{what} does not exist")).into()
                    }
                    other => other,
                })?;
            if d.kind != "webhook" {
                return Err(ArgsError::new(
                    &["destination"],
                    format!(
                        "destination {name:?} is a {} destination, not a webhook",
                        d.kind
                    ),
                )
                .into());
            }
            Ok(())
        }
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: WebhookArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let name = &args.destination;
            let dest = match crate::destination::find(engine, d.tenant, name).await {
                Ok(dest) => dest,
                Err(EngineError::NotFound(_)) => {
                    return Err(Failed::fail(format!(
                        "destination {name:?} no longer exists"
                    )));
                }
                Err(e) => return Err(Failed::retry(e)),
            };
            let config: WebhookConfig = open_config(engine, d.tenant, &dest).or_fail()?;
            let delivery = fleetprompt_connectors::webhook::post(
                engine.http(),
                &config.url,
                &config.signing_secret,
                &d.id.to_string(),
                &args.body,
            )
            .await;
            Ok(Outcome::from_delivery(delivery))
        }
        .boxed()
    }
}
