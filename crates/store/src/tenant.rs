//! Tenants and their admin tokens: the tenant's own (acting as admin) and
//! its members' personal ones (acting with the member's role).

use fleetprompt_core::secret::{IssuedToken, issue_admin_token, verify_secret};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{MemberId, TenantId, TokenId};
use serde::Serialize;
use sqlx::{FromRow, Row};

use crate::member::MemberRow;
use crate::{Db, Result, StoreError, Tx, is_unique_violation, on_db, on_tx};

/// A tenant.
#[derive(Debug, Clone, Serialize, FromRow)]
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
            .bind(tenant.id)
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
        .bind(tenant)
        .bind(token.id)
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
    let row: Option<Tenant> = on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(c)
            .await?
    });
    row.ok_or(StoreError::not_found("tenant"))
}

/// Finds a tenant by id.
pub async fn find_by_id(db: &Db, id: TenantId) -> Result<Tenant> {
    let row: Option<Tenant> = on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await?
    });
    row.ok_or(StoreError::not_found("tenant"))
}

/// Lists every tenant.
pub async fn list(db: &Db) -> Result<Vec<Tenant>> {
    Ok(on_db!(db, c => {
        sqlx::query_as("SELECT id, slug FROM tenants ORDER BY slug")
            .fetch_all(c)
            .await?
    }))
}

/// Who an admin token speaks for: its tenant and, for a member's personal
/// token, that member.
#[derive(Debug, Clone)]
pub struct TokenOwner {
    /// The tenant.
    pub tenant: Tenant,
    /// The member, for a personal token; `None` for the tenant's own.
    pub member: Option<MemberRow>,
    /// When the token was last used (refreshed at most once a minute).
    pub last_used_at: Option<Millis>,
}

/// Resolves an admin token to its tenant (and member), comparing the secret
/// in constant time. `None` for an unknown, revoked or wrong token alike,
/// and for a personal token whose member is disabled.
pub async fn authenticate(db: &Db, token_id: TokenId, secret: &str) -> Result<Option<TokenOwner>> {
    // The member's columns keep their names (for `MemberRow`); the
    // token's and tenant's are named apart from them.
    let sql = format!(
        "SELECT t.id AS token_tenant_id, t.slug, k.secret_hash, k.last_used_at,
            k.member_id AS token_member_id, {}
         FROM admin_tokens k JOIN tenants t ON t.id = k.tenant_id
         LEFT JOIN members m ON m.tenant_id = k.tenant_id AND m.id = k.member_id
         WHERE k.id = $1 AND k.revoked_at IS NULL",
        crate::member::prefixed("m")
    );
    let row = on_db!(db, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(token_id)
        .fetch_optional(c)
        .await?
        .map(|r| -> Result<_> {
            let member_id: Option<MemberId> = r.try_get("token_member_id")?;
            let member = match member_id {
                Some(_) => Some(MemberRow::from_row(&r)?),
                None => None,
            };
            Ok((r.try_get::<TenantId, _>("token_tenant_id")?, r.try_get::<String, _>("slug")?,
                r.try_get::<String, _>("secret_hash")?, r.try_get::<Option<Millis>, _>("last_used_at")?,
                member))
        })
        .transpose()?
    });
    let Some((id, slug, hash, last_used_at, member)) = row else {
        // Spend the same hashing work as a real check.
        let _ = verify_secret(secret, "");
        return Ok(None);
    };
    if !verify_secret(secret, &hash) {
        return Ok(None);
    }
    if member.as_ref().is_some_and(|m| m.disabled_at.is_some()) {
        return Ok(None);
    }
    Ok(Some(TokenOwner {
        tenant: Tenant { id, slug },
        member,
        last_used_at,
    }))
}

/// Records that a token was used.
pub async fn touch_token(tx: &mut Tx, token_id: TokenId, now: Millis) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query("UPDATE admin_tokens SET last_used_at = $2 WHERE id = $1")
            .bind(token_id)
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// An admin token as listed (never its secret or hash).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRow {
    /// Its id.
    pub id: TokenId,
    /// The token's public start, `fpa_<id>`, to recognise it by.
    pub prefix: String,
    /// What its owner called it.
    pub name: String,
    /// Its member; `None` for the tenant's own tokens.
    pub member_id: Option<MemberId>,
    /// When it was issued.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub created_at: Millis,
    /// When it was last used, to the minute.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub last_used_at: Option<Millis>,
    /// When it was revoked.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub revoked_at: Option<Millis>,
}

/// Issues a personal token for a member.
pub async fn add_member_token(
    tx: &mut Tx,
    tenant: TenantId,
    member: MemberId,
    name: &str,
) -> Result<IssuedToken> {
    let token = issue_admin_token();
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO admin_tokens (tenant_id, id, secret_hash, label, created_at, member_id)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(token.id)
        .bind(&token.secret_hash)
        .bind(name)
        .bind(now_ms())
        .bind(member)
        .execute(&mut *c)
        .await?;
    });
    Ok(token)
}

/// A member's tokens (`Some`), or the tenant's own (`None`), newest first,
/// revoked ones included.
pub async fn list_tokens(
    db: &Db,
    tenant: TenantId,
    member: Option<MemberId>,
) -> Result<Vec<TokenRow>> {
    let member = member.map(|m| m.to_string());
    on_db!(db, c => {
        Ok(sqlx::query_as::<_, (TokenId, String, Option<MemberId>, Millis, Option<Millis>, Option<Millis>)>(
            "SELECT id, label, member_id, created_at, last_used_at, revoked_at FROM admin_tokens
             WHERE tenant_id = $1 AND (($2 = '' AND member_id IS NULL) OR member_id = $2)
             ORDER BY created_at DESC, id DESC",
        )
        .bind(tenant)
        .bind(member.unwrap_or_default())
        .fetch_all(c)
        .await?
        .into_iter()
        .map(|(id, name, member_id, created_at, last_used_at, revoked_at)| TokenRow {
            prefix: format!("{}{id}", fleetprompt_core::secret::ADMIN_TOKEN_PREFIX),
            id,
            name,
            member_id,
            created_at,
            last_used_at,
            revoked_at,
        })
        .collect())
    })
}

/// Revokes a token of the tenant; with `owner`, only if it is that
/// member's. `false` if there was no such active token.
pub async fn revoke_token(
    tx: &mut Tx,
    tenant: TenantId,
    id: TokenId,
    owner: Option<MemberId>,
    now: Millis,
) -> Result<bool> {
    let owner = owner.map(|m| m.to_string());
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $4
             WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL AND ($3 = '' OR member_id = $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(owner.unwrap_or_default())
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n > 0)
}

/// Replaces the tenant's own admin tokens with one new one: every active
/// token without a member is revoked. Members' tokens are left alone.
pub async fn rotate_token(
    tx: &mut Tx,
    tenant: TenantId,
    now: Millis,
) -> Result<(IssuedToken, u64)> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE admin_tokens SET revoked_at = $2
             WHERE tenant_id = $1 AND member_id IS NULL AND revoked_at IS NULL",
        )
        .bind(tenant)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    let token = add_token(tx, tenant, "rotated").await?;
    Ok((token, n))
}
