//! What is kept about a visitor: reduced agent, keyed IP hash, and the
//! contact details they chose to give.

use crate::types::id::{SiteId, VisitorId};
use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;
use serde::Serialize;
use sqlx::Row;

use fleetprompt_store::{Db, Result, Tx, on_db, on_tx};

/// A visitor's stored identity.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityRow {
    /// The visitor.
    pub visitor_id: VisitorId,
    /// Email, if given.
    pub email: Option<String>,
    /// Name, if given.
    pub name: Option<String>,
    /// HMAC of the last IP address under the tenant's key.
    pub ip_hash: Option<String>,
    /// Browser family.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// First seen.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub first_seen_at: Millis,
    /// Last seen.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub last_seen_at: Millis,
}

/// A sighting of a visitor, reduced to what may be stored.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The site.
    pub site: SiteId,
    /// The visitor.
    pub visitor: VisitorId,
    /// HMAC of their IP address under the tenant's key.
    pub ip_hash: Option<&'a str>,
    /// Browser family.
    pub browser: &'a str,
    /// Operating system.
    pub os: &'a str,
    /// SHA-256 of the visitor secret issued now, for a new visitor; an
    /// identity that already has one keeps it.
    pub secret_hash: Option<&'a str>,
    /// When.
    pub at: Millis,
}

/// Records that a visitor was seen (at bootstrap).
pub async fn touch(tx: &mut Tx, tenant: TenantId, seen: Seen<'_>) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_identities (tenant_id, site_id, visitor_id, ip_hash, browser, os, first_seen_at, last_seen_at, secret_hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)
             ON CONFLICT (tenant_id, site_id, visitor_id) DO UPDATE SET
                ip_hash = excluded.ip_hash, browser = excluded.browser, os = excluded.os, last_seen_at = excluded.last_seen_at,
                secret_hash = COALESCE(website_chat_identities.secret_hash, excluded.secret_hash)",
        )
        .bind(tenant.to_string())
        .bind(seen.site.to_string())
        .bind(seen.visitor.to_string())
        .bind(seen.ip_hash)
        .bind(seen.browser)
        .bind(seen.os)
        .bind(seen.at)
        .bind(seen.secret_hash)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// What is stored of a visitor's secret: `None` when the visitor is
/// unknown, `Some(None)` for a visitor from before secrets were issued.
pub async fn secret_hash(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
) -> Result<Option<Option<String>>> {
    Ok(on_tx!(tx, c => {
        sqlx::query_scalar(
            "SELECT secret_hash FROM website_chat_identities
             WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .fetch_optional(&mut *c)
        .await?
    }))
}

/// Gives a visitor from before secrets were issued their first secret.
/// `false` when another bootstrap set one first: only one widget adopts
/// the id.
pub async fn adopt_secret(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
    secret_hash: &str,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_identities SET secret_hash = $4
             WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3 AND secret_hash IS NULL",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .bind(secret_hash)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Stores the contact details a visitor gave.
pub async fn set_contact(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
    email: &str,
    name: Option<&str>,
    now: Millis,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_identities (tenant_id, site_id, visitor_id, email, name, first_seen_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)
             ON CONFLICT (tenant_id, site_id, visitor_id) DO UPDATE SET
                email = excluded.email, name = COALESCE(excluded.name, website_chat_identities.name),
                last_seen_at = excluded.last_seen_at",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .bind(email)
        .bind(name)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// A visitor's identity, if one was stored.
pub async fn get(
    db: &Db,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
) -> Result<Option<IdentityRow>> {
    on_db!(db, c => {
        let row = sqlx::query(
            "SELECT visitor_id, email, name, ip_hash, browser, os, first_seen_at, last_seen_at
             FROM website_chat_identities WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .fetch_optional(c)
        .await?;
        row.map(|r| -> Result<IdentityRow> {
            Ok(IdentityRow {
                visitor_id: r.try_get::<String, _>(0)?.parse().map_err(fleetprompt_store::corrupt)?,
                email: r.try_get(1)?,
                name: r.try_get(2)?,
                ip_hash: r.try_get(3)?,
                browser: r.try_get(4)?,
                os: r.try_get(5)?,
                first_seen_at: r.try_get(6)?,
                last_seen_at: r.try_get(7)?,
            })
        })
        .transpose()
    })
}
