//! Destinations: created with their secrets sealed, opened only by handlers.

use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DestinationId, DirectiveId, Origin, TenantId};
use fleetprompt_store::destination::{self, DestinationRow};
use fleetprompt_store::directive;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, json};

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
    /// Most bytes of an answer read (default 1 MiB); a longer one fails
    /// the attempt with `response_too_large`.
    #[serde(default)]
    pub max_response_bytes: Option<u64>,
}

impl LlmConfig {
    /// The answer size limit in force.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
            .map(|n| n as usize)
            .unwrap_or(fleetprompt_connectors::http::DEFAULT_MAX_RESPONSE_BYTES)
    }
}

/// Bounds of an LLM destination's `max_response_bytes`: 1 KiB to 64 MiB.
const LLM_RESPONSE_BYTES: std::ops::RangeInclusive<u64> = 1024..=64 * 1024 * 1024;

/// What `email` destinations keep: which of the tenant's Edge Connectors
/// sends, to whom, and from whom. Nothing here is secret (the SMTP password
/// stays with the connector), but it is sealed like every destination's.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmailConfig {
    /// The Edge Connector that sends (`edge_…`).
    pub connector_id: fleetprompt_core::EdgeConnectorId,
    /// The team's addresses; a reply from one of them reaches the visitor.
    pub to: Vec<String>,
    /// The sender, e.g. `Acme Support <support@acme.example>`; the
    /// connector's `--from` when none.
    pub from: Option<String>,
}

/// Most recipients of an email destination (Proton counts each one as an
/// email against its sending limits, and caps a message at 100).
pub const EMAIL_TO_MAX: usize = 20;

/// The bare address of `Name <addr>` or `addr`, lowercased, if it is one.
pub fn email_address(mailbox: &str) -> Option<String> {
    let m = mailbox.trim();
    let (name, addr) = match (m.rfind('<'), m.ends_with('>')) {
        (Some(open), true) => (&m[..open], &m[open + 1..m.len() - 1]),
        (None, false) => ("", m),
        _ => return None,
    };
    if name.contains(['<', '>', '\r', '\n']) {
        return None;
    }
    fleetprompt_core::member::check_email(addr.trim()).ok()?;
    Some(addr.trim().to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::email_address;

    #[test]
    fn mailboxes_yield_their_address() {
        assert_eq!(
            email_address("Acme Desk <Desk@Acme.example>").as_deref(),
            Some("desk@acme.example")
        );
        assert_eq!(
            email_address(" team@example.com ").as_deref(),
            Some("team@example.com")
        );
        for bad in [
            "Acme <nope>",
            "not an address",
            "a <b@c.com",
            "x\n <a@b.com>",
            "<a@b.com> x",
        ] {
            assert_eq!(email_address(bad), None, "{bad:?}");
        }
    }
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

/// Checks a destination URL's shape, then that the outbound policy lets
/// us reach where it leads now (connections are checked again each time).
async fn check_url_field(
    engine: &Engine,
    field: &'static str,
    url: &str,
) -> Result<(), EngineError> {
    let u = reqwest::Url::parse(url).map_err(|e| invalid(field, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(invalid(field, "must be an http or https URL with a host"));
    }
    engine.http().policy().check_destination(url).await?;
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
pub const KINDS: &[&str] = &["webhook", "mattermost", "mattermost_api", "llm", "email"];

/// Checks a kind's configuration (its URLs against the outbound policy
/// too) and splits it into what is sealed, the redacted summary, and the
/// secret shown once (a generated webhook signing secret). Creating and
/// editing a destination both come through here, so they cannot differ.
async fn build(
    engine: &Engine,
    tenant: TenantId,
    kind: &str,
    config: &Value,
) -> Result<(Vec<u8>, Value, Option<String>), EngineError> {
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
            check_url_field(engine, "url", url).await?;
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
            check_url_field(engine, "webhook_url", url).await?;
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
            check_url_field(engine, "base_url", base_url).await?;
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
            check_url_field(engine, "base_url", base_url).await?;
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
            let max_response_bytes = match config.get("max_response_bytes") {
                None | Some(Value::Null) => None,
                Some(v) => Some(
                    v.as_u64()
                        .filter(|n| LLM_RESPONSE_BYTES.contains(n))
                        .ok_or_else(|| invalid("max_response_bytes", "must be 1024 to 67108864"))?,
                ),
            };
            let cfg = LlmConfig {
                base_url: base_url.to_owned(),
                model: model.to_owned(),
                api_key: api_key.map(str::to_owned),
                timeout_ms,
                max_response_bytes,
            };
            (
                sealed_bytes(&cfg)?,
                json!({
                    "base_url": fleetprompt_connectors::http::redact_url(base_url),
                    "model": model,
                    "api_key": api_key.map(|_| "(sealed)"),
                    "timeout_ms": timeout_ms,
                    "max_response_bytes": max_response_bytes,
                }),
                None,
            )
        }
        "email" => {
            let connector = required(config, "connector")?;
            let found = fleetprompt_store::edge::find(engine.db(), tenant, connector)
                .await
                .map_err(|e| match e {
                    fleetprompt_store::StoreError::NotFound { .. } => invalid(
                        "connector",
                        format!("no Edge Connector {connector:?} in this tenant (create one with POST /admin/v1/edge-connectors)"),
                    ),
                    other => other.into(),
                })?;
            if found.revoked_at.is_some() {
                return Err(invalid(
                    "connector",
                    format!("Edge Connector {connector:?} is revoked"),
                ));
            }
            let to: Vec<String> = match config.get("to") {
                Some(Value::String(one)) => vec![one.clone()],
                Some(Value::Array(many)) => many
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| invalid("to", "must be a list of addresses"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(invalid(
                        "to",
                        "is required: a list of addresses, e.g. [\"team@example.com\"]",
                    ));
                }
            };
            if to.is_empty() || to.len() > EMAIL_TO_MAX {
                return Err(invalid(
                    "to",
                    format!("must name 1 to {EMAIL_TO_MAX} addresses"),
                ));
            }
            for t in &to {
                if email_address(t).is_none() {
                    return Err(invalid("to", format!("{t:?} is not an email address")));
                }
            }
            let from = match config.get("from") {
                None | Some(Value::Null) => None,
                Some(Value::String(f)) if email_address(f).is_some() => Some(f.trim().to_owned()),
                Some(_) => {
                    return Err(invalid(
                        "from",
                        "must be an address, e.g. \"Acme <support@acme.example>\"",
                    ));
                }
            };
            let cfg = EmailConfig {
                connector_id: found.id,
                to: to.iter().map(|t| t.trim().to_owned()).collect(),
                from,
            };
            (
                sealed_bytes(&cfg)?,
                json!({
                    "connector_id": cfg.connector_id,
                    "connector": found.name,
                    "to": cfg.to,
                    "from": cfg.from,
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
    Ok((sealed, public, shown_once))
}

/// Creates a destination. For webhooks, returns the signing secret once.
pub async fn create(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
    kind: &str,
    config: &Value,
    actor: &Origin,
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
    let (sealed, public, shown_once) = build(engine, tenant, kind, config).await?;
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
    audit(engine, &mut tx, tenant, "destination.created", &row, actor).await?;
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
                Err(fleetprompt_store::StoreError::NotFound { .. }) => None,
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

/// Finds a tenant's destination by id (`dst_…`) or by name, from the
/// database (the admin API's view, never a cached one).
pub async fn lookup(
    engine: &Engine,
    tenant: TenantId,
    name_or_id: &str,
) -> Result<DestinationRow, EngineError> {
    let found = match name_or_id.parse::<DestinationId>() {
        Ok(id) => destination::find_by_id(engine.db(), tenant, id).await,
        Err(_) => destination::find_by_name(engine.db(), tenant, name_or_id).await,
    };
    found.map_err(|e| match e {
        fleetprompt_store::StoreError::NotFound { .. } => {
            EngineError::NotFound(format!("destination {name_or_id:?}"))
        }
        other => other.into(),
    })
}

/// Changes a destination. `changes` holds the kind's settings to replace
/// (`null` removes an optional one; for a webhook, a `null`
/// `signing_secret` makes a new one, returned once); the rest stay as they
/// are. Name and kind never change. The result is checked exactly as at
/// creation, the outbound policy included, and takes effect on every node
/// at commit: the next attempt of any directive delivers with it.
pub async fn update(
    engine: &Engine,
    tenant: TenantId,
    name_or_id: &str,
    changes: &Map<String, Value>,
    actor: &Origin,
) -> Result<(DestinationView, Option<String>), EngineError> {
    let row = lookup(engine, tenant, name_or_id).await?;
    for (field, now) in [("name", &row.name), ("kind", &row.kind)] {
        if let Some(v) = changes.get(field)
            && v.as_str() != Some(now.as_str())
        {
            return Err(invalid(
                field,
                "cannot change; create a new destination and delete this one instead",
            ));
        }
    }
    let mut config = match open_config::<Value>(engine, tenant, &row)? {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    if row.kind == "email" {
        // Created with the connector's name, kept by its id (which the
        // connector lookup accepts as well).
        if let Some(id) = config.remove("connector_id") {
            config.insert("connector".into(), id);
        }
    }
    if let Some(n) = row.public_config.get("max_in_flight") {
        config.insert("max_in_flight".into(), n.clone());
    }
    for (k, v) in changes {
        if k == "name" || k == "kind" {
            continue;
        }
        if v.is_null() {
            config.remove(k);
        } else {
            config.insert(k.clone(), v.clone());
        }
    }
    let (sealed, public, shown_once) =
        build(engine, tenant, &row.kind, &Value::Object(config)).await?;
    // A secret the caller sent is theirs already; only a generated one is shown.
    let shown_once = shown_once.filter(|_| {
        row.kind == "webhook" && changes.get("signing_secret").is_some_and(Value::is_null)
    });
    let sealed = engine.key().seal(&seal_context(tenant, row.id), &sealed);
    let mut tx = engine.db().begin().await?;
    destination::update_config(&mut tx, tenant, row.id, &sealed, &public).await?;
    audit(engine, &mut tx, tenant, "destination.updated", &row, actor).await?;
    tx.commit().await?;
    let view = DestinationView {
        config: public,
        ..row.into()
    };
    Ok((view, shown_once))
}

/// What a delete did.
#[derive(Debug, Clone, Serialize)]
pub struct Deleted {
    /// The destination, as it was.
    pub destination: DestinationView,
    /// The directives cancelled with it (`force`).
    pub cancelled_directives: Vec<DirectiveId>,
}

/// Records a destination change in the tenant's audit log: which one, never
/// its secrets (only the public part of its configuration).
async fn audit(
    engine: &Engine,
    tx: &mut fleetprompt_store::Tx,
    tenant: TenantId,
    signal_type: &str,
    row: &DestinationRow,
    actor: &Origin,
) -> Result<(), EngineError> {
    crate::audit::record(
        engine,
        tx,
        tenant,
        signal_type,
        json!({ "destination_id": row.id, "name": row.name, "kind": row.kind }),
        format!("{signal_type}:{}:{}", row.id, crate::audit::once()),
        actor,
    )
    .await
}

/// Most unfinished directives a refusal names.
const NAMED_DIRECTIVES: i64 = 10;

/// Deletes a destination. Refused while an enabled rule of the tenant
/// names it or a pending or running directive delivers to it, unless
/// `force`: then those directives are cancelled, the reason (naming
/// `actor`) recorded as their last error, in the transaction that deletes.
pub async fn delete(
    engine: &Engine,
    tenant: TenantId,
    name_or_id: &str,
    force: bool,
    actor: &Origin,
) -> Result<Deleted, EngineError> {
    let row = lookup(engine, tenant, name_or_id).await?;
    let slug = engine.tenant_slug(tenant).await?;
    let rules = engine
        .rules()
        .current()
        .rules_naming_destination(&slug, &row.name);
    let mut tx = engine.db().begin().await?;
    let cancelled_directives = if force {
        let reason = format!(
            "cancelled: destination {:?} was deleted (force) by {}",
            row.name,
            actor.actor()
        );
        directive::cancel_for_destination(&mut tx, tenant, &row.name, &reason).await?
    } else {
        let unfinished =
            directive::unfinished_for_destination(&mut tx, tenant, &row.name, NAMED_DIRECTIVES)
                .await?;
        if !rules.is_empty() || !unfinished.is_empty() {
            return Err(EngineError::DestinationInUse(in_use(
                &row.name,
                &rules,
                &unfinished,
            )));
        }
        Vec::new()
    };
    destination::delete(&mut tx, tenant, row.id).await?;
    audit(engine, &mut tx, tenant, "destination.deleted", &row, actor).await?;
    tx.commit().await?;
    Ok(Deleted {
        destination: row.into(),
        cancelled_directives,
    })
}

fn in_use(name: &str, rules: &[String], unfinished: &[directive::Unfinished]) -> String {
    let mut parts = Vec::new();
    if !rules.is_empty() {
        parts.push(format!("rules name it: {}", rules.join(", ")));
    }
    if !unfinished.is_empty() {
        let named: Vec<String> = unfinished
            .iter()
            .map(|d| format!("{} ({} {})", d.id, d.status.as_str(), d.kind))
            .collect();
        let more = if unfinished.len() as i64 >= NAMED_DIRECTIVES {
            " and perhaps more"
        } else {
            ""
        };
        parts.push(format!(
            "unfinished directives deliver to it: {}{more}",
            named.join(", ")
        ));
    }
    format!(
        "destination {name:?} is in use; {}. Change those rules, or delete with ?force=true to cancel the directives",
        parts.join("; ")
    )
}
