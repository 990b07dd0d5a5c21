//! Bootstrap (public site key + allowed origin -> short-lived token), the
//! visitor secret that makes a visitor id worth something only to its
//! widget, the optional proof of work for new visitors, and the check every
//! later widget request starts with.

use crate::store::site::SiteRow;
use crate::store::{challenge, identity, installation};
use crate::types::id::VisitorId;
use crate::types::origin::{Origin as WebOrigin, is_allowed};
use crate::types::pow;
use crate::types::token::{self, Claims, Unverified};
use crate::types::visitor::{hash_ip, reduce_user_agent};
use fleetprompt_core::secret::verify_secret;

use crate::types::visitor::issue_visitor_secret;
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_store::StoreError;

use crate::PACKAGE;
use crate::error::WebchatError;
use crate::settings::{Challenge, SiteSettings};
use crate::site::{open_ip_key, signing_secret};
use fleetprompt_engine::Engine;

/// What a bootstrap hands the widget.
#[derive(Debug)]
pub struct Bootstrapped {
    /// The site (for CORS and settings).
    pub site: SiteRow,
    /// The signed token.
    pub token: String,
    /// The visitor it was issued to.
    pub visitor: VisitorId,
    /// The visitor's secret, when this bootstrap issued it (a new or an
    /// adopted visitor); the widget keeps it to return as this visitor.
    pub visitor_secret: Option<String>,
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
    crate::Webchat::of(engine)
        .site_cache()
        .by_public_key(engine.db(), public_key)
        .await
        .map_err(crate::error::or_not_found("site"))
}

/// What a widget presents at bootstrap.
#[derive(Debug, Default, Clone, Copy)]
pub struct Presented<'a> {
    /// The visitor id it remembered.
    pub visitor: Option<&'a str>,
    /// The visitor secret issued with that id.
    pub visitor_secret: Option<&'a str>,
    /// A solved challenge, for a site that asks for a proof of work.
    pub proof_of_work: Option<&'a pow::Solution>,
}

/// How long a proof-of-work challenge may be solved and used.
pub const CHALLENGE_TTL_MS: Millis = 120_000;

/// The key that signs proof-of-work challenges, the same on every node.
fn pow_key(engine: &Engine) -> [u8; 32] {
    engine.key().derive("webchat.pow.v1")
}

/// The active site behind `site_key`, if `origin` may use its widget.
async fn site_for(
    engine: &Engine,
    site_key: &str,
    origin: Option<&str>,
) -> Result<SiteRow, WebchatError> {
    let site = site_by_key(engine, site_key).await?;
    engine.require_package(site.tenant, PACKAGE).await?;
    if site.status != "active" {
        return Err(WebchatError::Forbidden(
            "this site's widget is not active".into(),
        ));
    }
    let origin =
        origin.ok_or_else(|| WebchatError::Forbidden("an Origin header is required".into()))?;
    if !origin_allowed(&site, origin) {
        return Err(WebchatError::Forbidden(
            "this origin may not use this site's widget".into(),
        ));
    }
    Ok(site)
}

/// A proof-of-work challenge for a new visitor of `site_key`. `recent` is
/// how many challenges the caller's address took in the current minute:
/// the work doubles for every ten.
pub async fn challenge(
    engine: &Engine,
    site_key: &str,
    origin: Option<&str>,
    recent: u32,
) -> Result<pow::Challenge, WebchatError> {
    let site = site_for(engine, site_key, origin).await?;
    let settings = SiteSettings::from_stored(&site.settings);
    Ok(pow::issue(
        &pow_key(engine),
        &site.id.to_string(),
        pow::scaled(settings.challenge_max_number, recent),
        now_ms() + CHALLENGE_TTL_MS,
    ))
}

/// Who a bootstrap is for.
enum Visitor {
    /// A known visitor who showed their secret.
    Returning(VisitorId),
    /// A visitor from before secrets were issued, given one now.
    Adopted(VisitorId, String),
    /// Someone new, with their new secret and its hash.
    New(VisitorId, String, String),
}

/// Issues a token for `site_key` to a visitor on an allowed origin.
///
/// A visitor id is honoured only with its secret; an unknown id, or a known
/// one with a wrong or missing secret, starts a new visitor (who sees none
/// of the old one's history). A visitor recorded before secrets existed is
/// adopted: this bootstrap issues their secret, so no conversation is lost.
/// A new visitor must first pass `admit_new` (the caller's per-address
/// limit) and, when the site asks for one, a proof of work.
pub async fn bootstrap(
    engine: &Engine,
    site_key: &str,
    presented: Presented<'_>,
    client: &Client<'_>,
    admit_new: impl FnOnce(&SiteRow, &SiteSettings) -> Result<(), WebchatError>,
) -> Result<Bootstrapped, WebchatError> {
    let site = site_for(engine, site_key, client.origin).await?;
    let settings = SiteSettings::from_stored(&site.settings);
    let now = now_ms();
    let mut tx = engine.db().begin().await?;

    let mut who = None;
    if let Some(v) = presented.visitor.and_then(|v| v.parse::<VisitorId>().ok()) {
        match identity::secret_hash(&mut tx, site.tenant, site.id, v).await? {
            Some(Some(hash))
                if presented
                    .visitor_secret
                    .is_some_and(|s| verify_secret(s, &hash)) =>
            {
                who = Some(Visitor::Returning(v));
            }
            Some(None) => {
                let (secret, hash) = issue_visitor_secret();
                if identity::adopt_secret(&mut tx, site.tenant, site.id, v, &hash).await? {
                    who = Some(Visitor::Adopted(v, secret));
                }
            }
            _ => {}
        }
    }
    let who = match who {
        Some(w) => w,
        None => {
            admit_new(&site, &settings)?;
            if settings.challenge == Challenge::ProofOfWork {
                let solution = presented
                    .proof_of_work
                    .ok_or(WebchatError::ChallengeRequired)?;
                let ok = pow::verify(&pow_key(engine), &site.id.to_string(), solution, now)
                    .map_err(|e| {
                        WebchatError::ChallengeFailed(match e {
                            pow::PowError::Forged => "not issued by this server for this site",
                            pow::PowError::Expired => "expired",
                            pow::PowError::Wrong => "wrong answer",
                        })
                    })?;
                if !challenge::spend(&mut tx, site.tenant, &ok.id, ok.expires_at, now).await? {
                    return Err(WebchatError::ChallengeFailed("already used"));
                }
            }
            let (secret, hash) = issue_visitor_secret();
            Visitor::New(VisitorId::default(), secret, hash)
        }
    };
    let (visitor, visitor_secret, new_hash) = match who {
        Visitor::Returning(v) => (v, None, None),
        Visitor::Adopted(v, secret) => (v, Some(secret), None),
        Visitor::New(v, secret, hash) => (v, Some(secret), Some(hash)),
    };

    let claims = Claims {
        tenant: site.tenant,
        site: site.id,
        visitor,
        issued_at: now,
        expires_at: now + settings.token_ttl_secs as i64 * 1000,
        key_id: site.key_id,
    };
    let signing = signing_secret(engine, &site, site.key_id, now)
        .ok_or(fleetprompt_engine::EngineError::Secret)?;
    let token = token::sign(&signing, &claims);

    let agent = reduce_user_agent(client.user_agent.unwrap_or(""));
    let ip_hash = match (
        &client.ip,
        installation::ip_key_tx(&mut tx, site.tenant).await?,
    ) {
        (Some(ip), Some(sealed)) => {
            open_ip_key(engine, site.tenant, &sealed).map(|k| hash_ip(&k, ip))
        }
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
            secret_hash: new_hash.as_deref(),
            at: now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Bootstrapped {
        token,
        visitor,
        visitor_secret,
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
    let site = match crate::Webchat::of(engine)
        .site_cache()
        .get(engine.db(), unverified.tenant(), unverified.site())
        .await
    {
        Ok(s) => s,
        Err(StoreError::NotFound { .. }) => return Err(WebchatError::Unauthorized(BAD)),
        Err(e) => return Err(e.into()),
    };
    if site.status != "active" {
        return Err(WebchatError::Unauthorized(BAD));
    }
    engine.require_package(site.tenant, PACKAGE).await?;
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
