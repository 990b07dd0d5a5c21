//! What installing the package sets up, and the life of a site: registered, secret
//! rotated, disabled. Each site change is a directive (run by the handlers
//! in [`crate::handlers`]) so that it appears in the audit timeline.

use std::time::{Duration, Instant};

use crate::store::installation;
use crate::store::site::{self as store_site, SiteRow};
use crate::types::id::SiteId;
use crate::types::origin::Origin as WebOrigin;
use fleetprompt_core::secret::{MasterKey, random_token};
use fleetprompt_core::time::{Millis, now_ms, to_rfc3339};
use fleetprompt_core::{DirectiveId, Origin, TenantId};
use fleetprompt_store::Tx;
use fleetprompt_store::directive::{self, Created, DirectiveRow};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{WebchatError, invalid};
use crate::settings::SiteSettings;
use crate::{PACKAGE, site_subject};
pub use fleetprompt_engine::installation::InstallationView;
use fleetprompt_engine::{BackoffOverride, DirectiveRequest, Engine};

/// Most origins one site may allow.
const MAX_ORIGINS: usize = 20;

/// The sealing context of a site's signing secret `key_id`: a sealed secret
/// copied into another tenant's or site's row, or under another key id,
/// does not open.
pub(crate) fn secret_context(tenant: TenantId, site: SiteId, key_id: i32) -> String {
    format!("webchat-site:{tenant}:{site}:{key_id}")
}

fn ip_key_context(tenant: TenantId) -> String {
    format!("webchat-ip-key:{tenant}")
}

/// A new signing secret, sealed for `key_id`.
pub(crate) fn new_sealed_secret(
    key: &MasterKey,
    tenant: TenantId,
    site: SiteId,
    key_id: i32,
) -> String {
    key.seal(
        &secret_context(tenant, site, key_id),
        random_token(32).as_bytes(),
    )
}

/// What installing the package sets up (in the install's transaction): the
/// tenant's key for hashing visitor IPs, unless it has one from before.
pub(crate) async fn on_install(
    engine: &Engine,
    tx: &mut Tx,
    tenant: TenantId,
) -> Result<(), fleetprompt_engine::EngineError> {
    let sealed = engine
        .key()
        .seal(&ip_key_context(tenant), random_token(32).as_bytes());
    installation::ensure_ip_key(tx, tenant, &sealed).await?;
    Ok(())
}

/// The tenant's key for hashing visitor IPs, opened from its sealed form.
pub(crate) fn open_ip_key(engine: &Engine, tenant: TenantId, sealed: &str) -> Option<Vec<u8>> {
    engine.key().open(&ip_key_context(tenant), sealed).ok()
}

/// What an admin asks for when registering a site.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// Hosts (`shop.example.com`, meaning https) or full origins.
    pub domains: Vec<String>,
    /// Only `native` for now.
    pub mode: String,
    /// Widget settings (defaults for anything left out).
    pub settings: Value,
}

/// A site as shown to admins: never its secrets.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// Its id.
    pub site_id: SiteId,
    /// The public widget key.
    pub public_key: String,
    /// `native`.
    pub mode: String,
    /// `pending`, `active` or `disabled`.
    pub status: String,
    /// Origins the widget may run on.
    pub allowed_origins: Vec<String>,
    /// Widget settings, defaults filled in.
    pub settings: SiteSettings,
    /// The current signing key's id.
    pub key_id: i32,
    /// Until when tokens of the previous key still work, after a rotation.
    pub previous_key_valid_until: Option<String>,
    /// When it was registered.
    pub created_at: String,
    /// When it last changed.
    pub updated_at: String,
    /// Bumped by every change; send it back (`If-Match` or `version`) to
    /// have an edit refused if another change came first.
    pub version: i64,
}

impl From<&SiteRow> for SiteView {
    fn from(r: &SiteRow) -> Self {
        Self {
            site_id: r.id,
            public_key: r.public_key.clone(),
            mode: r.mode.clone(),
            status: r.status.clone(),
            allowed_origins: r.allowed_origins.clone(),
            settings: SiteSettings::from_stored(&r.settings),
            key_id: r.key_id,
            previous_key_valid_until: r.prev_valid_until.map(to_rfc3339),
            created_at: to_rfc3339(r.created_at),
            updated_at: to_rfc3339(r.updated_at),
            version: r.version,
        }
    }
}

/// Turns admin-given domains into a checked, deduplicated origin list.
pub fn parse_origins(domains: &[String]) -> Result<Vec<String>, WebchatError> {
    if domains.is_empty() || domains.len() > MAX_ORIGINS {
        return Err(invalid(
            "domains",
            format!("must list 1 to {MAX_ORIGINS} domains or origins"),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for d in domains {
        let o = WebOrigin::from_domain(d).map_err(|e| invalid("domains", e.to_string()))?;
        if !out.iter().any(|x| x == o.as_str()) {
            out.push(o.as_str().to_owned());
        }
    }
    Ok(out)
}

fn site_directive(kind: &str, args: Value, dedupe_key: String, site: SiteId) -> DirectiveRequest {
    DirectiveRequest {
        kind: kind.into(),
        args,
        dedupe_key,
        max_attempts: Some(5),
        subject: Some(site_subject(site)),
        delay_ms: None,
        backoff: BackoffOverride {
            base_ms: Some(200),
            max_ms: Some(5_000),
            ..Default::default()
        },
    }
}

async fn insert_directive(
    engine: &Engine,
    tx: &mut Tx,
    tenant: TenantId,
    req: DirectiveRequest,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    let new = engine.prepare_directive(tenant, req, origin).await?;
    let created = directive::insert(tx, tenant, &new).await?;
    if let Created::New(_) = created {
        fleetprompt_engine::metrics::directive_created(new.kind.as_str());
    }
    Ok(created.id())
}

/// Creates one site directive in a transaction of its own.
async fn submit(
    engine: &Engine,
    tenant: TenantId,
    req: DirectiveRequest,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    let mut tx = engine.db().begin().await?;
    let d = insert_directive(engine, &mut tx, tenant, req, origin).await?;
    tx.commit().await?;
    Ok(d)
}

/// Registers a site: stores it `pending` with a fresh sealed signing secret
/// and creates the `webchat.site.register` directive that activates it, in
/// one transaction. Installs the package first if needed.
pub async fn register(
    engine: &Engine,
    tenant: TenantId,
    req: RegisterRequest,
    origin: Origin,
) -> Result<(SiteRow, DirectiveId), WebchatError> {
    if req.mode != "native" {
        return Err(invalid("mode", "only \"native\" is supported"));
    }
    let origins = parse_origins(&req.domains)?;
    let settings = SiteSettings::parse(&req.settings)?;
    let id = SiteId::new();
    let now = now_ms();
    let row = SiteRow {
        tenant,
        id,
        public_key: format!("pk_{}", random_token(18)),
        mode: req.mode,
        status: "pending".into(),
        allowed_origins: origins,
        settings: serde_json::to_value(&settings)
            .map_err(|e| invalid("settings", e.to_string()))?,
        key_id: 1,
        sealed_secret: new_sealed_secret(engine.key(), tenant, id, 1),
        prev_key_id: None,
        prev_sealed_secret: None,
        prev_valid_until: None,
        idle_timeout_ms: settings.idle_timeout_secs as i64 * 1000,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    let req = site_directive(
        "webchat.site.register",
        json!({ "site_id": id }),
        format!("webchat.site.register:{id}"),
        id,
    );
    let mut tx = engine.db().begin().await?;
    fleetprompt_engine::installation::ensure(engine, &mut tx, tenant, PACKAGE).await?;
    store_site::insert(&mut tx, tenant, &row).await?;
    let directive = insert_directive(engine, &mut tx, tenant, req, origin).await?;
    tx.commit().await?;
    Ok((row, directive))
}

/// Reads a tenant's site.
pub async fn get(engine: &Engine, tenant: TenantId, id: SiteId) -> Result<SiteRow, WebchatError> {
    store_site::get(engine.db(), tenant, id)
        .await
        .map_err(crate::error::or_not_found("site"))
}

/// Asks for a new signing secret. Tokens signed with the old one keep
/// working for `grace_secs` (0: none do, from the moment it runs).
pub async fn rotate_secret(
    engine: &Engine,
    tenant: TenantId,
    id: SiteId,
    grace_secs: u64,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    // The grace cap is the handler's (`RotateSecretArgs`), checked when
    // the directive is prepared below, before anything is written.
    let site = get(engine, tenant, id).await?;
    if site.status == "disabled" {
        return Err(WebchatError::Engine(
            fleetprompt_engine::EngineError::InvalidState("the site is disabled".into()),
        ));
    }
    let req = site_directive(
        "webchat.site.rotate_secret",
        json!({ "site_id": id, "from_key_id": site.key_id, "grace_secs": grace_secs }),
        format!("webchat.site.rotate_secret:{id}:{}", site.key_id),
        id,
    );
    submit(engine, tenant, req, origin).await
}

/// Asks for a site to be disabled: its tokens stop working at once.
pub async fn disable(
    engine: &Engine,
    tenant: TenantId,
    id: SiteId,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    let site = get(engine, tenant, id).await?;
    // The version makes each disable its own directive: after an enable, a
    // second disable must not find the first one's dedupe key.
    let req = site_directive(
        "webchat.site.disable",
        json!({ "site_id": id }),
        format!("webchat.site.disable:{id}:v{}", site.version),
        id,
    );
    submit(engine, tenant, req, origin).await
}

/// Asks for a disabled site to be enabled again: its widget works at once
/// on every node (tokens it issued before, still unexpired, work again too).
pub async fn enable(
    engine: &Engine,
    tenant: TenantId,
    id: SiteId,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    let site = get(engine, tenant, id).await?;
    if site.status == "pending" {
        return Err(WebchatError::Engine(
            fleetprompt_engine::EngineError::InvalidState(
                "the site's registration has not run yet".into(),
            ),
        ));
    }
    let req = site_directive(
        "webchat.site.enable",
        json!({ "site_id": id }),
        format!("webchat.site.enable:{id}:v{}", site.version),
        id,
    );
    submit(engine, tenant, req, origin).await
}

/// What an admin changes on a site; what is left out stays.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    /// New hosts or origins, replacing the old list.
    pub domains: Option<Vec<String>>,
    /// Settings to change: each key given replaces the stored one; the
    /// result is checked as at registration.
    pub settings: Option<Value>,
    /// The version the caller read; a stale one is refused.
    pub version: Option<i64>,
}

/// The arguments of `webchat.site.update`: the whole new configuration,
/// checked as at registration (here, and again when it runs).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(try_from = "Value")]
pub struct UpdateArgs {
    /// The site.
    pub site_id: SiteId,
    /// Its new allowed origins.
    pub allowed_origins: Vec<String>,
    /// Its new settings.
    pub settings: SiteSettings,
    /// The version the edit was made against, if the caller named one.
    pub expected_version: Option<i64>,
}

impl TryFrom<Value> for UpdateArgs {
    type Error = WebchatError;

    fn try_from(args: Value) -> Result<Self, Self::Error> {
        Self::parse(&args)
    }
}

impl UpdateArgs {
    /// Reads and checks the arguments.
    pub fn parse(args: &Value) -> Result<Self, WebchatError> {
        let site_id = args
            .get("site_id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("args", "`site_id` (a site id) is required"))?;
        let domains: Vec<String> = args
            .get("allowed_origins")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("args", "`allowed_origins` (a list) is required"))?
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| invalid("domains", "must be a list of strings"))
            })
            .collect::<Result<_, _>>()?;
        let allowed_origins = parse_origins(&domains)?;
        let settings = SiteSettings::parse(args.get("settings").unwrap_or(&Value::Null))?;
        let expected_version = match args.get("expected_version") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_i64()
                    .filter(|v| *v >= 1)
                    .ok_or_else(|| invalid("version", "must be a positive integer"))?,
            ),
        };
        Ok(Self {
            site_id,
            allowed_origins,
            settings,
            expected_version,
        })
    }
}

/// Asks for a site's domains and settings to change: checked now as at
/// registration, refused at once when `version` is given and stale, then
/// applied by the `webchat.site.update` directive (on the site's timeline),
/// which refuses too if another change came first meanwhile.
pub async fn update(
    engine: &Engine,
    tenant: TenantId,
    id: SiteId,
    req: UpdateRequest,
    origin: Origin,
) -> Result<DirectiveId, WebchatError> {
    let site = get(engine, tenant, id).await?;
    if let Some(given) = req.version
        && given != site.version
    {
        return Err(WebchatError::VersionConflict {
            current: site.version,
            given,
        });
    }
    let origins = match &req.domains {
        Some(d) => parse_origins(d)?,
        None => site.allowed_origins.clone(),
    };
    let settings = match req.settings {
        None | Some(Value::Null) => SiteSettings::from_stored(&site.settings),
        Some(Value::Object(changes)) => {
            let mut merged = match serde_json::to_value(SiteSettings::from_stored(&site.settings)) {
                Ok(Value::Object(m)) => m,
                _ => Default::default(),
            };
            merged.extend(changes);
            SiteSettings::parse(&Value::Object(merged))?
        }
        Some(_) => return Err(invalid("settings", "must be a JSON object")),
    };
    let args = json!({
        "site_id": id,
        "allowed_origins": origins,
        "settings": settings,
        "expected_version": req.version,
    });
    // A fresh key per edit: two edits may well ask for the same thing.
    let req = site_directive(
        "webchat.site.update",
        args,
        format!("webchat.site.update:{id}:{}", DirectiveId::new()),
        id,
    );
    submit(engine, tenant, req, origin).await
}

/// Waits until a directive has finished (or `timeout` passes) and returns it.
pub async fn wait_for(
    engine: &Engine,
    tenant: TenantId,
    id: DirectiveId,
    timeout: Duration,
) -> Result<DirectiveRow, WebchatError> {
    let deadline = Instant::now() + timeout;
    loop {
        let row = directive::get(engine.db(), tenant, id).await?;
        if row.status.is_terminal() || Instant::now() >= deadline {
            return Ok(row);
        }
        // Waking is cheap: the worker runs the directive within milliseconds.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The secret that signed tokens with `key_id`, if that key is still valid
/// at `now`: the current key, or the previous one within its grace period.
pub(crate) fn signing_secret(
    engine: &Engine,
    site: &SiteRow,
    key_id: i32,
    now: Millis,
) -> Option<Vec<u8>> {
    let sealed = if key_id == site.key_id {
        &site.sealed_secret
    } else if site.prev_key_id == Some(key_id) && site.prev_valid_until.is_some_and(|t| now < t) {
        site.prev_sealed_secret.as_ref()?
    } else {
        return None;
    };
    engine
        .key()
        .open(&secret_context(site.tenant, site.id, key_id), sealed)
        .ok()
}
