//! Tenants and their admin tokens.

use fleetprompt_core::secret::{IssuedToken, issue_admin_token, verify_secret};
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{TenantId, TokenId};
use serde::Serialize;
use sqlx::Row;

use crate::{Db, Result, StoreError, Tx, corrupt, is_unique_violation, on_db, on_tx};

/// A tenant.
#[derive(Debug, Clone, Serialize)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Its unique, human-chosen name.
    pub slug: String,
}

/// Checks a tenant slug: 2 to 64 of `[a-z0-9-]`, starting with a letter.
pub fn check_slug(slug: &str) -> Result<(), String> {
    let ok = (2..=64).contains(&slug.len())
        && slug.starts_with(|c: char| c.is_ascii_lowercase())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant slug {slug:?} must be 2 to 64 characters of a-z, 0-9 and '-', starting with a letter"
        ))
    }
}

/// Creates a tenant and its first admin token; returns the token, shown once.
pub async fn create(tx: &mut Tx, slug: &str) -> Result<(Tenant, IssuedToken)> {
    check_slug(slug).map_err(StoreError::Conflict)?;
    let tenant = Tenant {
        id: TenantId::new(),
        slug: slug.to_owned(),
    };
    let now = now_ms();
    on_tx!(tx, c => {
        sqlx::query("INSERT INTO tenants (id, slug, created_at) VALUES ($1, $2, $3)")
            .bind(tenant.id.to_string())
            .bind(slug)
            .bind(now)
            .execute(&mut *c)
            .await
            .map_err(|e| if is_unique_violation(&e) {
                StoreError::Conflict(format!("tenant {slug:?} already exists"))
            } else {
                e.into()
            })?;
    });
    let token = add_token(tx, tenant.id, "initial").await?;
    Ok((tenant, token))
}

/// Issues another admin token for a tenant.
pub async fn add_token(tx: &mut Tx, tenant: TenantId, label: &str) -> Result<IssuedToken> {
    let token = issue_admin_token();
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO admin_tokens (tenant_id, id, secret_hash, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant.to_string())
        .bind(token.id.to_string())
        .bind(&token.secret_hash)
        .bind(label)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    });
    Ok(token)
}

/// Finds a tenant by slug.
pub async fn find_by_slug(db: &Db, slug: &str) -> Result<Tenant> {
    let row: Option<(String, String)> = on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(c)
            .await?
    });
    let (id, slug) = row.ok_or(StoreError::not_found("tenant"))?;
    Ok(Tenant {
        id: id.parse().map_err(corrupt)?,
        slug,
    })
}

/// Finds a tenant by id.
pub async fn find_by_id(db: &Db, id: TenantId) -> Result<Tenant> {
    let row: Option<(String, String)> = on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(c)
            .await?
    });
    let (id, slug) = row.ok_or(StoreError::not_found("tenant"))?;
    Ok(Tenant {
        id: id.parse().map_err(corrupt)?,
        slug,
    })
}

/// Lists every tenant.
pub async fn list(db: &Db) -> Result<Vec<Tenant>> {
    let rows: Vec<(String, String)> = on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants ORDER BY slug")
            .fetch_all(c)
            .await?
    });
    rows.into_iter()
        .map(|(id, slug)| {
            Ok(Tenant {
                id: id.parse().map_err(corrupt)?,
                slug,
            })
        })
        .collect()
}

/// Resolves an admin token to its tenant, comparing the secret in constant
/// time. `None` for an unknown, revoked or wrong token alike.
pub async fn authenticate(db: &Db, token_id: TokenId, secret: &str) -> Result<Option<Tenant>> {
    let row = on_db!(db, c => {
        sqlx::query(
            "SELECT t.id, t.slug, k.secret_hash FROM admin_tokens k JOIN tenants t ON t.id = k.tenant_id
             WHERE k.id = $1 AND k.revoked_at IS NULL",
        )
        .bind(token_id.to_string())
        .fetch_optional(c)
        .await?
        .map(|r| -> Result<(String, String, String)> {
            Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
        })
        .transpose()?
    });
    let Some((id, slug, hash)) = row else {
        // Spend the same hashing work as a real check.
        let _ = verify_secret(secret, "");
        return Ok(None);
    };
    if !verify_secret(secret, &hash) {
        return Ok(None);
    }
    Ok(Some(Tenant {
        id: id.parse().map_err(corrupt)?,
        slug,
    }))
}
