//! `webchat.site.register`, `webchat.site.rotate_secret`, `webchat.site.disable`,
//! `webchat.site.enable`, `webchat.site.update`.
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

use super::WebchatError;
use super::site::{UpdateArgs, new_sealed_secret};
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

/// `webchat.site.enable`: a disabled site's widget works again, at once on
/// every node (the status change is a configuration notice).
pub struct SiteEnable;

impl Handler for SiteEnable {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args)
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        transition(engine, d, &["disabled"], "active").boxed()
    }
}

fn update_args(args: &Value) -> Result<UpdateArgs, EngineError> {
    UpdateArgs::parse(args).map_err(|e| match e {
        WebchatError::Invalid(v) => EngineError::Validation(v),
        WebchatError::Engine(e) => e,
        other => EngineError::Validation(ValidationError::Invalid {
            field: "args",
            reason: other.to_string(),
        }),
    })
}

/// `webchat.site.update`: new origins and settings, checked as at
/// registration; with `expected_version`, applied only if no other change
/// came first.
pub struct SiteUpdate;

impl Handler for SiteUpdate {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            update_args(args)?;
            validate_site(engine, tenant, args).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            let a = match update_args(&d.args) {
                Ok(a) => a,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let settings = match serde_json::to_value(&a.settings) {
                Ok(v) => v,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let cfg = store_site::SiteConfig {
                allowed_origins: &a.allowed_origins,
                settings: &settings,
                idle_timeout_ms: a.settings.idle_timeout_secs as i64 * 1000,
            };
            let result = async {
                let mut tx = engine.db().begin().await?;
                let applied =
                    store_site::update_config(&mut tx, d.tenant, a.site_id, a.expected_version, &cfg)
                        .await?;
                let site = store_site::get_tx(&mut tx, d.tenant, a.site_id).await?;
                tx.commit().await?;
                Ok::<_, StoreError>((applied, site))
            }
            .await;
            match result {
                Ok((true, site)) => {
                    succeeded(json!({ "site_id": a.site_id, "version": site.version }))
                }
                // An earlier attempt of this directive applied it, and its
                // completion was lost: the site is as asked, one version on.
                Ok((false, site))
                    if a.expected_version.is_some_and(|v| site.version == v + 1)
                        && site.allowed_origins == a.allowed_origins
                        && site.settings == settings =>
                {
                    succeeded(json!({ "site_id": a.site_id, "version": site.version }))
                }
                Ok((false, site)) => Outcome::fail(format!(
                    "version_conflict: the site is at version {}; this change was made against version {}",
                    site.version,
                    a.expected_version.unwrap_or_default()
                )),
                Err(StoreError::NotFound) => Outcome::fail("site does not exist"),
                Err(e) => retry(e),
            }
        }
        .boxed()
    }
}

/// Longest the old key of a rotation may keep working: 7 days.
pub const MAX_GRACE_SECS: u64 = 7 * 86_400;

/// The arguments of `webchat.site.rotate_secret`, checked once here so the
/// sites API and the directives API (and rules) cannot differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotateSecretArgs {
    /// The site.
    pub site_id: SiteId,
    /// The key being rotated from (makes a repeated run rotate once).
    pub from_key_id: i32,
    /// How long tokens signed with the old key keep working, at most
    /// [`MAX_GRACE_SECS`].
    pub grace_secs: u64,
}

impl RotateSecretArgs {
    /// Reads and checks the arguments.
    pub fn parse(args: &Value) -> Result<Self, EngineError> {
        let bad = |reason: &str| {
            EngineError::Validation(ValidationError::Invalid {
                field: "args",
                reason: reason.into(),
            })
        };
        let site_id = site_arg(args)?;
        let from_key_id = args
            .get("from_key_id")
            .and_then(Value::as_i64)
            .and_then(|k| i32::try_from(k).ok())
            .ok_or_else(|| bad("`from_key_id` (an integer) is required"))?;
        let grace_secs = match args.get("grace_secs") {
            None | Some(Value::Null) => 0,
            Some(v) => v.as_u64().filter(|g| *g <= MAX_GRACE_SECS).ok_or_else(|| {
                EngineError::Validation(ValidationError::Invalid {
                    field: "grace_secs",
                    reason: "must be a whole number of seconds, at most 7 days".into(),
                })
            })?,
        };
        Ok(Self {
            site_id,
            from_key_id,
            grace_secs,
        })
    }
}

/// `webchat.site.rotate_secret`: a new signing secret; the old one works
/// for `grace_secs` more (at most [`MAX_GRACE_SECS`]).
pub struct SiteRotateSecret;

impl Handler for SiteRotateSecret {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            RotateSecretArgs::parse(args)?;
            validate_site(engine, tenant, args).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            // Checked again: a directive created before the cap existed
            // must not outlive it either.
            let RotateSecretArgs {
                site_id: id,
                from_key_id: from,
                grace_secs: grace,
            } = match RotateSecretArgs::parse(&d.args) {
                Ok(a) => a,
                Err(e) => return Outcome::fail(e.to_string()),
            };
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
