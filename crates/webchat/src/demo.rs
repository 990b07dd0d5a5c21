//! The demo tenant and site of the embedded setup, so that the first
//! `fleetprompt serve` gives a working chat at `/demo`.
//!
//! The demo site is stored active directly rather than through the
//! `webchat.site.register` directive: it must work before the worker has run
//! anything, and it is the platform's own fixture, not an admin's change.

use crate::store::site::{self as store_site, SiteRow};
use crate::types::id::SiteId;
use fleetprompt_core::secret::random_token;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::StoreError;
use fleetprompt_store::tenant;
use serde_json::json;

use crate::error::WebchatError;
use crate::settings::SiteSettings;
use crate::site::{new_sealed_secret, parse_origins};
use fleetprompt_engine::Engine;

/// The demo tenant's slug.
pub const DEMO_TENANT: &str = "demo";

/// The demo site, as `serve` reports it.
#[derive(Debug)]
pub struct Demo {
    /// The demo site's public widget key.
    pub public_key: String,
    /// The demo tenant's admin token, only when the tenant was just created.
    pub admin_token: Option<String>,
}

/// Creates the demo tenant and site if missing, and allows `origins` (the
/// addresses this server answers on) to use the demo widget.
pub async fn ensure(engine: &Engine, origins: &[String]) -> Result<Demo, WebchatError> {
    let (tenant_id, admin_token) = match tenant::find_by_slug(engine.db(), DEMO_TENANT).await {
        Ok(t) => (t.id, None),
        Err(StoreError::NotFound { .. }) => {
            let mut tx = engine.db().begin().await?;
            let (t, token) = tenant::create(&mut tx, DEMO_TENANT).await?;
            tx.commit().await?;
            (t.id, Some(token.token))
        }
        Err(e) => return Err(e.into()),
    };
    let origins = parse_origins(origins)?;
    let existing = store_site::list(engine.db(), tenant_id).await?;
    let mut tx = engine.db().begin().await?;
    let public_key = if let Some(site) = existing.into_iter().next() {
        store_site::set_origins(&mut tx, tenant_id, site.id, &origins).await?;
        site.public_key
    } else {
        fleetprompt_engine::installation::ensure(engine, &mut tx, tenant_id, crate::PACKAGE)
            .await?;
        let id = SiteId::new();
        let now = now_ms();
        let settings = SiteSettings {
            title: "FleetPrompt demo".into(),
            greeting:
                "Hi! This is the demo chat. Send a message, then answer it through the admin API."
                    .into(),
            ..SiteSettings::default()
        };
        let row = SiteRow {
            tenant: tenant_id,
            id,
            public_key: format!("pk_{}", random_token(18)),
            mode: "native".into(),
            status: "active".into(),
            allowed_origins: origins,
            settings: serde_json::to_value(&settings).unwrap_or_else(|_| json!({})),
            key_id: 1,
            sealed_secret: new_sealed_secret(engine.key(), tenant_id, id, 1),
            prev_key_id: None,
            prev_sealed_secret: None,
            prev_valid_until: None,
            idle_timeout_ms: settings.idle_timeout_secs as i64 * 1000,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store_site::insert(&mut tx, tenant_id, &row).await?;
        row.public_key
    };
    tx.commit().await?;
    Ok(Demo {
        public_key,
        admin_token,
    })
}
