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

/// What `mattermost` (incoming webhook) destinations keep sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct MattermostConfig {
    /// The incoming webhook URL (its path is the credential).
    pub webhook_url: String,
}

/// What `mattermost_api` (REST API v4) destinations keep sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct MattermostApiConfig {
    /// Server URL, e.g. `https://chat.example.com`.
    pub base_url: String,
    /// Bot or personal access token.
    pub token: String,
    /// Channel to post in.
    pub channel_id: String,
}

/// What `llm` (OpenAI-compatible) destinations keep sealed.
#[derive(Debug, Serialize, Deserialize)]
pub struct LlmConfig {
    /// e.g. `http://localhost:11434` or `https://api.openai.com/v1`.
    pub base_url: String,
    /// Model name.
    pub model: String,
    /// Bearer key, when the server needs one.
    pub api_key: Option<String>,
    /// Longest one completion may take, in milliseconds (default 15 s,
    /// always below the handler timeout).
    pub timeout_ms: Option<u64>,
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
    check_url_field("url", url)
}

fn check_url_field(field: &'static str, url: &str) -> Result<(), EngineError> {
    let u = reqwest::Url::parse(url).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(invalid(field, "must be an http or https URL with a host"));
    }
    Ok(())
}

fn required<'a>(config: &'a Value, field: &'static str) -> Result<&'a str, EngineError> {
    config
        .get(field)
        .and_then(Value::as_str)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| invalid(field, "is required"))
}

fn sealed_bytes<T: Serialize>(cfg: &T) -> Result<Vec<u8>, EngineError> {
    serde_json::to_vec(cfg).map_err(|e| invalid("config", e.to_string()))
}

/// The destination kinds `create` accepts.
pub const KINDS: &[&str] = &["webhook", "mattermost", "mattermost_api", "llm"];

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
    let max_in_flight = match config.get("max_in_flight") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|n| (1..=10_000).contains(n))
                .ok_or_else(|| invalid("max_in_flight", "must be 1 to 10000"))?,
        ),
    };
    let (sealed, mut public, shown_once) = match kind {
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
        "mattermost" => {
            let url = required(config, "webhook_url")?;
            check_url_field("webhook_url", url)?;
            let cfg = MattermostConfig {
                webhook_url: url.to_owned(),
            };
            (
                sealed_bytes(&cfg)?,
                json!({ "webhook_url": fleetprompt_connectors::http::redact_url(url) }),
                None,
            )
        }
        "mattermost_api" => {
            let base_url = required(config, "base_url")?;
            check_url_field("base_url", base_url)?;
            let token = required(config, "token")?;
            let channel_id = required(config, "channel_id")?;
            let cfg = MattermostApiConfig {
                base_url: base_url.trim_end_matches('/').to_owned(),
                token: token.to_owned(),
                channel_id: channel_id.to_owned(),
            };
            (
                sealed_bytes(&cfg)?,
                json!({
                    "base_url": fleetprompt_connectors::http::redact_url(base_url),
                    "channel_id": channel_id,
                    "token": "(sealed)",
                }),
                None,
            )
        }
        "llm" => {
            let base_url = required(config, "base_url")?;
            check_url_field("base_url", base_url)?;
            let model = required(config, "model")?;
            let api_key = config
                .get("api_key")
                .and_then(Value::as_str)
                .filter(|k| !k.is_empty());
            let timeout_ms = match config.get("timeout_ms") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|t| (100..=600_000).contains(t))
                        .ok_or_else(|| invalid("timeout_ms", "must be 100 to 600000"))?,
                ),
            };
            let cfg = LlmConfig {
                base_url: base_url.to_owned(),
                model: model.to_owned(),
                api_key: api_key.map(str::to_owned),
                timeout_ms,
            };
            (
                sealed_bytes(&cfg)?,
                json!({
                    "base_url": fleetprompt_connectors::http::redact_url(base_url),
                    "model": model,
                    "api_key": api_key.map(|_| "(sealed)"),
                    "timeout_ms": timeout_ms,
                }),
                None,
            )
        }
        other => {
            return Err(invalid(
                "kind",
                format!(
                    "unknown destination kind {other:?}; known kinds: {}",
                    KINDS.join(", ")
                ),
            ));
        }
    };
    // Public, not sealed: the worker reads it for every destination it
    // delivers to (see `flow`).
    if let Some(n) = max_in_flight {
        public["max_in_flight"] = json!(n);
    }
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

/// Finds a tenant's destination by name, from the configuration cache
/// ([`crate::cache`]) when it can: routing checks the destinations a
/// message's rules name, and a name that is none is remembered too.
pub async fn find(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
) -> Result<DestinationRow, EngineError> {
    let cache = engine.destination_cache();
    let key = (tenant, name.to_owned());
    let found = match cache.get(engine.db(), &key) {
        Some(found) => found,
        None => {
            let generation = engine.db().config_generation();
            let found = match destination::find_by_name(engine.db(), tenant, name).await {
                Ok(d) => Some(d),
                Err(fleetprompt_store::StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            cache.keep(key, found.clone(), generation);
            found
        }
    };
    found.ok_or_else(|| EngineError::NotFound(format!("destination {name:?}")))
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
