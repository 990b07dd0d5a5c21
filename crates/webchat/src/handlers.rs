//! `webchat.site.register`, `webchat.site.rotate_secret`, `webchat.site.disable`,
//! `webchat.site.enable`, `webchat.site.update`.
//!
//! Each is idempotent, as every handler must be (delivery is at-least-once):
//! activation and disabling are state transitions that succeed when already
//! done, and a rotation names the key it rotates from, so running it twice
//! rotates once.

use crate::store::site as store_site;
use crate::types::id::SiteId;
use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::StoreError;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::site::{UpdateArgs, new_sealed_secret};
use fleetprompt_engine::handler::OrRetry;
use fleetprompt_engine::handler::parse_args;
use fleetprompt_engine::{Attempt, Engine, EngineError, Failed, Handler, Outcome};

/// The arguments of `webchat.site.register` and `webchat.site.disable`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct SiteArgs {
    /// The site.
    pub site_id: SiteId,
}

async fn validate_site(engine: &Engine, tenant: TenantId, id: SiteId) -> Result<(), EngineError> {
    match store_site::get(engine.db(), tenant, id).await {
        // Registration validates before the site row is committed with it.
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves the site from one of `from` to `to` in a transaction; database
/// errors become retries.
async fn transition(engine: &Engine, d: &Claimed, id: SiteId, from: &[&str], to: &str) -> Attempt {
    let result = async {
        let mut tx = engine.db().begin().await?;
        let changed = store_site::set_status(&mut tx, d.tenant, id, from, to).await?;
        let site = store_site::get_tx(&mut tx, d.tenant, id).await?;
        tx.commit().await?;
        Ok::<_, StoreError>((changed, site.status))
    }
    .await;
    match result {
        Ok((_, status)) if status == to => Ok(Outcome::succeeded(
            json!({ "site_id": id, "status": status }),
        )),
        Ok((_, status)) => Err(Failed::fail(format!(
            "site is {status}; cannot make it {to}"
        ))),
        Err(StoreError::NotFound { .. }) => Err(Failed::fail("site does not exist")),
        Err(e) => Err(Failed::retry(e)),
    }
}

/// A site's status change: `webchat.site.register` (pending → active),
/// `webchat.site.disable` (pending or active → disabled: its tokens stop
/// working at once, because every token check reads the site's status) and
/// `webchat.site.enable` (disabled → active, at once on every node: the
/// status change is a configuration notice).
pub struct SiteTransition {
    /// The statuses it moves a site from.
    pub from: &'static [&'static str],
    /// The status it moves it to.
    pub to: &'static str,
}

/// `webchat.site.register`.
pub const SITE_REGISTER: SiteTransition = SiteTransition {
    from: &["pending"],
    to: "active",
};
/// `webchat.site.disable`.
pub const SITE_DISABLE: SiteTransition = SiteTransition {
    from: &["pending", "active"],
    to: "disabled",
};
/// `webchat.site.enable`.
pub const SITE_ENABLE: SiteTransition = SiteTransition {
    from: &["disabled"],
    to: "active",
};

impl Handler for SiteTransition {
    type Args = SiteArgs;

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a SiteArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args.site_id).boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: SiteArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move { transition(engine, d, args.site_id, self.from, self.to).await }.boxed()
    }
}

/// `webchat.site.update`: new origins and settings, checked as at
/// registration; with `expected_version`, applied only if no other change
/// came first.
pub struct SiteUpdate;

impl Handler for SiteUpdate {
    type Args = UpdateArgs;

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a UpdateArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args.site_id).boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        a: UpdateArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let settings = serde_json::to_value(&a.settings).or_fail()?;
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
                Ok((true, site)) => Ok(Outcome::succeeded(
                    json!({ "site_id": a.site_id, "version": site.version }),
                )),
                // An earlier attempt of this directive applied it, and its
                // completion was lost: the site is as asked, one version on.
                Ok((false, site))
                    if a.expected_version.is_some_and(|v| site.version == v + 1)
                        && site.allowed_origins == a.allowed_origins
                        && site.settings == settings =>
                {
                    Ok(Outcome::succeeded(
                        json!({ "site_id": a.site_id, "version": site.version }),
                    ))
                }
                Ok((false, site)) => Err(Failed::fail(format!(
                    "version_conflict: the site is at version {}; this change was made against version {}",
                    site.version,
                    a.expected_version.unwrap_or_default()
                ))),
                Err(StoreError::NotFound { .. }) => Err(Failed::fail("site does not exist")),
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}

/// Longest the old key of a rotation may keep working: 7 days.
pub const MAX_GRACE_SECS: u64 = 7 * 86_400;

/// The arguments of `webchat.site.rotate_secret`, checked once here so the
/// sites API and the directives API (and rules) cannot differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct RotateSecretArgs {
    /// The site.
    pub site_id: SiteId,
    /// The key being rotated from (makes a repeated run rotate once).
    pub from_key_id: i32,
    /// How long tokens signed with the old key keep working, at most
    /// [`MAX_GRACE_SECS`].
    #[serde(default, deserialize_with = "grace")]
    pub grace_secs: u64,
}

/// A grace in whole seconds, at most [`MAX_GRACE_SECS`]; `null` is none.
fn grace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_u64().filter(|g| *g <= MAX_GRACE_SECS).ok_or_else(|| {
            serde::de::Error::custom("must be a whole number of seconds, at most 7 days")
        }),
    }
}

impl RotateSecretArgs {
    /// Reads and checks the arguments.
    pub fn parse(args: &Value) -> Result<Self, EngineError> {
        Ok(parse_args(args)?)
    }
}

/// `webchat.site.rotate_secret`: a new signing secret; the old one works
/// for `grace_secs` more (at most [`MAX_GRACE_SECS`]).
pub struct SiteRotateSecret;

impl Handler for SiteRotateSecret {
    type Args = RotateSecretArgs;

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a RotateSecretArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_site(engine, tenant, args.site_id).boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: RotateSecretArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            // Read again by each attempt: a directive created before the
            // cap existed must not outlive it either.
            let RotateSecretArgs {
                site_id: id,
                from_key_id: from,
                grace_secs: grace,
            } = args;
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
                Ok(key_id) if key_id > from => Ok(Outcome::succeeded(
                    json!({ "site_id": id, "key_id": key_id, "grace_secs": grace }),
                )),
                Ok(key_id) => Err(Failed::fail(format!(
                    "site key is {key_id}, expected {from}"
                ))),
                Err(StoreError::NotFound { .. }) => Err(Failed::fail("site does not exist")),
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}
