//! `webchat.site.register`, `webchat.site.rotate_secret`, `webchat.site.disable`.
//!
//! Each is idempotent, as every handler must be (delivery is at-least-once):
//! activation and disabling are state transitions that succeed when already
//! done, and a rotation names the key it rotates from, so running it twice
//! rotates once.

use fleetprompt_core::TenantId;
use fleetprompt_core::id::SiteId;
use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::StoreError;
use fleetprompt_store::queue::Claimed;
use fleetprompt_store::webchat::site as store_site;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::site::new_sealed_secret;
use crate::{Engine, EngineError, Handler, Outcome};

fn site_arg(args: &Value) -> Result<SiteId, EngineError> {
    args.get("site_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            EngineError::Validation(ValidationError::Invalid {
                field: "args",
                reason: "`site_id` (a site id) is required".into(),
            })
        })
}

fn validate_site<'a>(
    engine: &'a Engine,
    tenant: TenantId,
    args: &'a Value,
) -> BoxFuture<'a, Result<(), EngineError>> {
    async move {
        let id = site_arg(args)?;
        match store_site::get(engine.db(), tenant, id).await {
            // Registration validates before the site row is committed with it.
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
    .boxed()
}

fn succeeded(result: Value) -> Outcome {
    Outcome::Succeeded {
        result,
        http_status: None,
        external_ref: None,
    }
}

fn retry(e: impl std::fmt::Display) -> Outcome {
    Outcome::Retry {
        error: e.to_string(),
        http_status: None,
        retry_after: None,
    }
}

/// Runs `f` in a transaction and commits it; database errors become retries.
async fn transition(engine: &Engine, d: &Claimed, from: &[&str], to: &str) -> Outcome {
    let id = match site_arg(&d.args) {
        Ok(id) => id,
        Err(e) => return Outcome::fail(e.to_string()),
    };
    let result = async {
        let mut tx = engine.db().begin().await?;
        let changed = store_site::set_status(&mut tx, d.tenant, id, from, to).await?;
        let site = store_site::get_tx(&mut tx, d.tenant, id).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((changed, site.status))
    }
    .await;
    match result {
        Ok((_, status)) if status == to => succeeded(json!({ "site_id": id, "status": status })),
        Ok((_, status)) => Outcome::fail(format!("site is {status}; cannot make it {to}")),
        Err(StoreError::NotFound) => Outcome::fail("site does not exist"),
        Err(e) => retry(e),
    }
}

/// `webchat.site.register`: activates a pending site.
pub struct SiteRegister;

impl Handler for SiteRegister {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args)
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        transition(engine, d, &["pending"], "active").boxed()
    }
}

/// `webchat.site.disable`: its tokens stop working at once, because every
/// token check reads the site's status.
pub struct SiteDisable;

impl Handler for SiteDisable {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args)
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        transition(engine, d, &["pending", "active"], "disabled").boxed()
    }
}

/// `webchat.site.rotate_secret`: a new signing secret; the old one works
/// for `grace_secs` more.
pub struct SiteRotateSecret;

impl Handler for SiteRotateSecret {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            if args.get("from_key_id").and_then(Value::as_i64).is_none() {
                return Err(EngineError::Validation(ValidationError::Invalid {
                    field: "args",
                    reason: "`from_key_id` (an integer) is required".into(),
                }));
            }
            validate_site(engine, tenant, args).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            let id = match site_arg(&d.args) {
                Ok(id) => id,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let Some(from) = d.args.get("from_key_id").and_then(Value::as_i64) else {
                return Outcome::fail("`from_key_id` is required");
            };
            let from = from as i32;
            let grace = d
                .args
                .get("grace_secs")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let sealed = new_sealed_secret(engine.key(), d.tenant, id, from + 1);
            let result = async {
                let mut tx = engine.db().begin().await?;
                let until = now_ms() + grace as i64 * 1000;
                store_site::rotate_secret(&mut tx, d.tenant, id, from, &sealed, until).await?;
                let site = store_site::get_tx(&mut tx, d.tenant, id).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(site.key_id)
            }
            .await;
            match result {
                // Either this attempt rotated, or an earlier one did.
                Ok(key_id) if key_id > from => {
                    succeeded(json!({ "site_id": id, "key_id": key_id, "grace_secs": grace }))
                }
                Ok(key_id) => Outcome::fail(format!("site key is {key_id}, expected {from}")),
                Err(StoreError::NotFound) => Outcome::fail("site does not exist"),
                Err(e) => retry(e),
            }
        }
        .boxed()
    }
}
