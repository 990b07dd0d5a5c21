//! Destinations: created with their secrets sealed, opened only by handlers.

use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DestinationId, TenantId};
use fleetprompt_store::destination::{self, DestinationRow};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{Engine, EngineError};

/// What `webhook` destinations keep sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// HMAC key of the `webhook-signature` header (`whsec_…`).
    pub signing_secret: String,
}

/// A destination as shown to admins: never its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct DestinationView {
    /// Its id.
    pub id: DestinationId,
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// A redacted summary.
    pub config: Value,
}

impl From<DestinationRow> for DestinationView {
    fn from(d: DestinationRow) -> Self {
        Self {
            id: d.id,
            name: d.name,
            kind: d.kind,
            config: d.public_config,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> EngineError {
    EngineError::Validation(ValidationError::Invalid {
        field,
        reason: reason.into(),
    })
}

fn seal_context(tenant: TenantId, id: DestinationId) -> String {
    format!("destination:{tenant}:{id}")
}

fn check_url(url: &str) -> Result<(), EngineError> {
    let u = reqwest::Url::parse(url).map_err(|e| invalid("url", format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(invalid("url", "must be an http or https URL with a host"));
    }
    Ok(())
}

/// Creates a destination. For webhooks, returns the signing secret once.
pub async fn create(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
    kind: &str,
    config: &Value,
) -> Result<(DestinationView, Option<String>), EngineError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "name",
            "must be 1 to 64 characters of a-z, A-Z, 0-9, '-' and '_'",
        ));
    }
    let (sealed, public, shown_once) = match kind {
        "webhook" => {
            let url = config
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("url", "is required"))?;
            check_url(url)?;
            let secret = match config.get("signing_secret").and_then(Value::as_str) {
                Some(s) if s.len() >= 24 => s.to_owned(),
                Some(_) => return Err(invalid("signing_secret", "must be at least 24 characters")),
                None => format!(
                    "{}{}",
                    fleetprompt_connectors::webhook::SECRET_PREFIX,
                    base64::Engine::encode(
                        &base64::engine::general_purpose::STANDARD,
                        fleetprompt_core::secret::random_token(24).as_bytes()
                    )
                ),
            };
            let cfg = WebhookConfig {
                url: url.to_owned(),
                signing_secret: secret.clone(),
            };
            (
                serde_json::to_vec(&cfg).map_err(|e| invalid("config", e.to_string()))?,
                json!({ "url": fleetprompt_connectors::http::redact_url(url) }),
                Some(secret),
            )
        }
        other => {
            return Err(invalid(
                "kind",
                format!("unknown destination kind {other:?}; known kinds: webhook"),
            ));
        }
    };
    let id = DestinationId::new();
    let row = DestinationRow {
        id,
        name: name.to_owned(),
        kind: kind.to_owned(),
        sealed_config: engine.key().seal(&seal_context(tenant, id), &sealed),
        public_config: public,
        created_at: now_ms(),
    };
    let mut tx = engine.db().begin().await?;
    destination::insert(&mut tx, tenant, &row).await?;
    tx.commit().await?;
    Ok((row.into(), shown_once))
}

/// Finds a tenant's destination by name.
pub async fn find(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
) -> Result<DestinationRow, EngineError> {
    destination::find_by_name(engine.db(), tenant, name)
        .await
        .map_err(|e| match e {
            fleetprompt_store::StoreError::NotFound => {
                EngineError::NotFound(format!("destination {name:?}"))
            }
            other => other.into(),
        })
}

/// Opens a destination's sealed configuration.
pub fn open_config<T: DeserializeOwned>(
    engine: &Engine,
    tenant: TenantId,
    d: &DestinationRow,
) -> Result<T, EngineError> {
    let bytes = engine
        .key()
        .open(&seal_context(tenant, d.id), &d.sealed_config)
        .map_err(|_| EngineError::Secret)?;
    serde_json::from_slice(&bytes).map_err(|_| EngineError::Secret)
}
