//! Bootstrap (public site key + allowed origin -> short-lived token) and
//! the check every later widget request starts with.

use fleetprompt_core::id::VisitorId;
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::webchat::origin::{Origin as WebOrigin, is_allowed};
use fleetprompt_core::webchat::token::{self, Claims, Unverified};
use fleetprompt_core::webchat::visitor::{hash_ip, reduce_user_agent};
use fleetprompt_store::StoreError;
use fleetprompt_store::webchat::site::SiteRow;
use fleetprompt_store::webchat::{identity, installation};

use super::PACKAGE;
use super::error::WebchatError;
use super::settings::SiteSettings;
use super::site::{open_ip_key, signing_secret};
use crate::Engine;

/// What a bootstrap hands the widget.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The site (for CORS and settings).
    pub site: SiteRow,
    /// The signed token.
    pub token: String,
    /// The visitor it was issued to.
    pub visitor: VisitorId,
    /// When the token expires.
    pub expires_at: Millis,
    /// The site's settings.
    pub settings: SiteSettings,
}

/// Where a widget request came from, reduced to what may be stored.
#[derive(Debug, Default, Clone)]
pub struct Client<'a> {
    /// The request's `Origin` header.
    pub origin: Option<&'a str>,
    /// The peer's IP address (stored only as a keyed hash).
    pub ip: Option<String>,
    /// The `User-Agent` header (stored only as browser family and OS).
    pub user_agent: Option<&'a str>,
}

fn allowed_origins(site: &SiteRow) -> Vec<WebOrigin> {
    site.allowed_origins
        .iter()
        .filter_map(|o| WebOrigin::parse(o).ok())
        .collect()
}

/// Whether `origin` may use `site`'s widget.
pub fn origin_allowed(site: &SiteRow, origin: &str) -> bool {
    is_allowed(&allowed_origins(site), origin)
}

/// Finds an active site by its public key, for CORS preflights.
pub async fn site_by_key(engine: &Engine, public_key: &str) -> Result<SiteRow, WebchatError> {
    if !public_key.starts_with("pk_") || public_key.len() > 64 {
        return Err(WebchatError::NotFound("site".into()));
    }
    engine
        .site_cache()
        .by_public_key(engine.db(), public_key)
        .await
        .map_err(super::error::or_not_found("site"))
}

/// Issues a token for `site_key` to a visitor on an allowed origin.
pub async fn bootstrap(
    engine: &Engine,
    site_key: &str,
    visitor: Option<&str>,
    client: &Client<'_>,
) -> Result<Bootstrapped, WebchatError> {
    let site = site_by_key(engine, site_key).await?;
    if site.status != "active" {
        return Err(WebchatError::Forbidden(
            "this site's widget is not active".into(),
        ));
    }
    let origin = client
        .origin
        .ok_or_else(|| WebchatError::Forbidden("an Origin header is required".into()))?;
    if !origin_allowed(&site, origin) {
        return Err(WebchatError::Forbidden(
            "this origin may not use this site's widget".into(),
        ));
    }
    // A visitor id the widget remembered is kept; anything else gets a new one.
    let visitor = visitor
        .and_then(|v| v.parse::<VisitorId>().ok())
        .unwrap_or_default();
    let settings = SiteSettings::from_stored(&site.settings);
    let now = now_ms();
    let claims = Claims {
        tenant: site.tenant,
        site: site.id,
        visitor,
        issued_at: now,
        expires_at: now + settings.token_ttl_secs as i64 * 1000,
        key_id: site.key_id,
    };
    let secret =
        signing_secret(engine, &site, site.key_id, now).ok_or(crate::EngineError::Secret)?;
    let token = token::sign(&secret, &claims);

    let agent = reduce_user_agent(client.user_agent.unwrap_or(""));
    let mut tx = engine.db().begin().await?;
    let ip_hash = match (
        &client.ip,
        installation::get_tx(&mut tx, site.tenant, PACKAGE).await?,
    ) {
        (Some(ip), Some(inst)) => open_ip_key(engine, site.tenant, &inst).map(|k| hash_ip(&k, ip)),
        _ => None,
    };
    identity::touch(
        &mut tx,
        site.tenant,
        identity::Seen {
            site: site.id,
            visitor,
            ip_hash: ip_hash.as_deref(),
            browser: agent.browser,
            os: agent.os,
            at: now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Bootstrapped {
        token,
        visitor,
        expires_at: claims.expires_at,
        settings,
        site,
    })
}

/// Checks a widget token against its site's current record: active, key
/// still valid, MAC, expiry; and, when the request names an origin, that
/// the origin is allowed. Returns the site and the token's claims.
pub async fn authenticate(
    engine: &Engine,
    token: &str,
    origin: Option<&str>,
) -> Result<(SiteRow, Claims), WebchatError> {
    const BAD: &str = "a valid widget token is required (Authorization: Bearer fpw_…)";
    let unverified = Unverified::parse(token).map_err(|_| WebchatError::Unauthorized(BAD))?;
    let site = match engine
        .site_cache()
        .get(engine.db(), unverified.tenant(), unverified.site())
        .await
    {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(WebchatError::Unauthorized(BAD)),
        Err(e) => return Err(e.into()),
    };
    if site.status != "active" {
        return Err(WebchatError::Unauthorized(BAD));
    }
    let now = now_ms();
    let secret = signing_secret(engine, &site, unverified.key_id(), now)
        .ok_or(WebchatError::Unauthorized(BAD))?;
    let claims = unverified
        .verify(&secret, now)
        .map_err(|_| WebchatError::Unauthorized(BAD))?;
    if let Some(o) = origin
        && !origin_allowed(&site, o)
    {
        return Err(WebchatError::Forbidden(
            "this origin may not use this site's widget".into(),
        ));
    }
    Ok((site, claims))
}
