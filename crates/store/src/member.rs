//! Members of a tenant and their browser sessions.
//!
//! A member's password is stored only as an argon2id PHC string, a
//! session's secret and an invite's only as SHA-256 hashes. Every check
//! reads the rows again (no cache), so disabling a member or revoking a
//! session holds on every node at once.

use fleetprompt_core::member::Role;
use fleetprompt_core::time::Millis;
use fleetprompt_core::{MemberId, TenantId};
use serde::Serialize;
use sqlx::{FromRow, Row};

use crate::tenant::Tenant;
use crate::{Db, Result, StoreError, Tx, is_unique_violation, on_db, on_tx};

/// A member as listed to the tenant's admins (never with a hash).
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct MemberRow {
    /// Its id.
    pub id: MemberId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The address it signs in with (lower case).
    pub email: String,
    /// The name shown on the timeline.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Whether a password is set (an invited member has none until the
    /// invite is redeemed).
    pub has_password: bool,
    /// When it was disabled; a disabled member cannot sign in, and its
    /// sessions and tokens stop working.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub disabled_at: Option<Millis>,
    /// When it was added.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub created_at: Millis,
}

/// What a new member starts with.
pub struct NewMember<'a> {
    /// Lower-case email.
    pub email: &'a str,
    /// Display name.
    pub name: &'a str,
    /// Role.
    pub role: Role,
    /// PHC string of the first password, if given one.
    pub password_hash: Option<&'a str>,
    /// Invite `(id, secret hash, expires at)`, if invited instead.
    pub invite: Option<(&'a str, &'a str, Millis)>,
}

/// A [`MemberRow`]'s columns. A query that joins other tables names its
/// own columns so that none of these names repeats.
const COLUMNS: &str = "id, tenant_id, email, name, role, password_hash IS NOT NULL AS has_password, disabled_at, created_at";

/// [`COLUMNS`] of the table aliased `alias`, for joins.
pub(crate) fn prefixed(alias: &str) -> String {
    COLUMNS
        .split(", ")
        .map(|c| format!("{alias}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Adds a member; an email already in the tenant is a conflict.
pub async fn create(tx: &mut Tx, tenant: TenantId, m: &NewMember<'_>) -> Result<MemberRow> {
    let id = MemberId::new();
    let now = fleetprompt_core::time::now_ms();
    let (invite_hash, invite_expires) = match m.invite {
        Some((id, hash, exp)) => (Some(format!("{id}.{hash}")), Some(exp)),
        None => (None, None),
    };
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO members (tenant_id, id, email, name, role, password_hash, invite_hash,
                invite_expires_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(id)
        .bind(m.email)
        .bind(m.name)
        .bind(m.role)
        .bind(m.password_hash)
        .bind(invite_hash)
        .bind(invite_expires)
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(|e| if is_unique_violation(&e) {
            StoreError::Conflict(format!("a member with email {:?} already exists", m.email))
        } else {
            e.into()
        })?;
    });
    Ok(MemberRow {
        id,
        tenant_id: tenant,
        email: m.email.to_owned(),
        name: m.name.to_owned(),
        role: m.role,
        has_password: m.password_hash.is_some(),
        disabled_at: None,
        created_at: now,
    })
}

/// A tenant's members, oldest first.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<MemberRow>> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE tenant_id = $1 ORDER BY id");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(c)
            .await?)
    })
}

/// One member of a tenant.
pub async fn get(db: &Db, tenant: TenantId, id: MemberId) -> Result<MemberRow> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("member"))
    })
}

/// One member of a tenant by email.
pub async fn get_by_email(db: &Db, tenant: TenantId, email: &str) -> Result<MemberRow> {
    let sql = format!("SELECT {COLUMNS} FROM members WHERE tenant_id = $1 AND email = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(email)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("member"))
    })
}

/// A member who may sign in, with what is needed to check the password.
pub struct Credentials {
    /// The member.
    pub member: MemberRow,
    /// Its tenant.
    pub tenant: Tenant,
    /// Its PHC string, if a password is set.
    pub password_hash: Option<String>,
}

/// The members with `email`, in the tenant `slug` if given, else in every
/// tenant (a sign-in without a tenant works when the email is in one).
pub async fn credentials(db: &Db, slug: Option<&str>, email: &str) -> Result<Vec<Credentials>> {
    let cols = prefixed("m");
    let sql = format!(
        "SELECT {cols}, t.slug, m.password_hash FROM members m JOIN tenants t ON t.id = m.tenant_id
         WHERE m.email = $1 AND ($2 = '' OR t.slug = $2) ORDER BY m.id LIMIT 10"
    );
    on_db!(db, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(email)
            .bind(slug.unwrap_or(""))
            .fetch_all(c)
            .await?
            .iter()
            .map(|r| {
                let member = MemberRow::from_row(r)?;
                Ok(Credentials {
                    tenant: Tenant { id: member.tenant_id, slug: r.try_get("slug")? },
                    password_hash: r.try_get("password_hash")?,
                    member,
                })
            })
            .collect()
    })
}

/// What an admin may change of a member.
#[derive(Debug, Default)]
pub struct MemberPatch {
    /// A new name.
    pub name: Option<String>,
    /// A new role.
    pub role: Option<Role>,
    /// `Some(true)` disables, `Some(false)` enables again.
    pub disabled: Option<bool>,
}

/// Applies a patch; disabling also revokes the member's sessions.
pub async fn update(
    tx: &mut Tx,
    tenant: TenantId,
    id: MemberId,
    patch: &MemberPatch,
    now: Millis,
) -> Result<()> {
    let disabled_at = patch.disabled.map(|d| d.then_some(now));
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE members SET name = COALESCE($3, name), role = COALESCE($4, role),
                disabled_at = CASE WHEN $5 THEN $6 ELSE disabled_at END
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(patch.name.as_deref())
        .bind(patch.role)
        .bind(disabled_at.is_some())
        .bind(disabled_at.flatten())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("member"));
    }
    if patch.disabled == Some(true) {
        revoke_sessions(tx, tenant, id, now).await?;
    }
    Ok(())
}

/// Sets a new password (clearing any invite) and revokes every session.
pub async fn set_password(
    tx: &mut Tx,
    tenant: TenantId,
    id: MemberId,
    password_hash: &str,
    now: Millis,
) -> Result<()> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE members SET password_hash = $3, invite_hash = NULL, invite_expires_at = NULL
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(password_hash)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("member"));
    }
    revoke_sessions(tx, tenant, id, now).await
}

/// Sets a new invite `(id, secret hash, expires at)`.
pub async fn set_invite(
    tx: &mut Tx,
    tenant: TenantId,
    id: MemberId,
    invite: (&str, &str, Millis),
) -> Result<()> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE members SET invite_hash = $3, invite_expires_at = $4
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(format!("{}.{}", invite.0, invite.1))
        .bind(invite.2)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("member"));
    }
    Ok(())
}

/// The member whose invite has the public id `invite_id`, with the stored
/// secret hash and expiry, if any.
pub async fn find_invite(db: &Db, invite_id: &str) -> Result<Option<(MemberRow, String, Millis)>> {
    let sql = format!(
        "SELECT {COLUMNS}, invite_hash, invite_expires_at FROM members
         WHERE invite_hash LIKE $1 AND disabled_at IS NULL"
    );
    // The id is 32 hex digits (checked by the caller), so LIKE sees no
    // wildcard in it.
    on_db!(db, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(format!("{invite_id}.%"))
            .fetch_optional(c)
            .await?
            .map(|r| -> Result<_> {
                let stored: String = r.try_get("invite_hash")?;
                let hash = stored.split_once('.').map(|(_, h)| h.to_owned()).unwrap_or_default();
                Ok((
                    MemberRow::from_row(&r)?,
                    hash,
                    r.try_get::<Option<Millis>, _>("invite_expires_at")?.unwrap_or(0),
                ))
            })
            .transpose()
    })
}

/// A stored session with its member and tenant.
pub struct SessionRow {
    /// The session's public id.
    pub id: String,
    /// The SHA-256 of its secret.
    pub secret_hash: String,
    /// When it was created (the absolute expiry counts from here).
    pub created_at: Millis,
    /// Its last use (the idle expiry counts from here).
    pub last_seen_at: Millis,
    /// Its member (whose `disabled_at` the caller checks).
    pub member: MemberRow,
    /// The member's tenant.
    pub tenant: Tenant,
}

/// Stores a new session.
pub async fn create_session(
    tx: &mut Tx,
    tenant: TenantId,
    member: MemberId,
    id: &str,
    secret_hash: &str,
    now: Millis,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO member_sessions (id, tenant_id, member_id, secret_hash, created_at, last_seen_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id)
        .bind(tenant)
        .bind(member)
        .bind(secret_hash)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// A session that is not revoked, with its member and tenant.
pub async fn session(db: &Db, id: &str) -> Result<Option<SessionRow>> {
    let cols = prefixed("m");
    let sql = format!(
        "SELECT {cols}, t.slug, s.secret_hash, s.created_at AS session_created_at,
            s.last_seen_at AS session_last_seen_at
         FROM member_sessions s
         JOIN members m ON m.tenant_id = s.tenant_id AND m.id = s.member_id
         JOIN tenants t ON t.id = s.tenant_id
         WHERE s.id = $1 AND s.revoked_at IS NULL"
    );
    on_db!(db, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(c)
            .await?
            .map(|r| -> Result<_> {
                let member = MemberRow::from_row(&r)?;
                Ok(SessionRow {
                    id: id.to_owned(),
                    tenant: Tenant { id: member.tenant_id, slug: r.try_get("slug")? },
                    secret_hash: r.try_get("secret_hash")?,
                    created_at: r.try_get("session_created_at")?,
                    last_seen_at: r.try_get("session_last_seen_at")?,
                    member,
                })
            })
            .transpose()
    })
}

/// Records a session's use.
pub async fn touch_session(tx: &mut Tx, id: &str, now: Millis) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query("UPDATE member_sessions SET last_seen_at = $2 WHERE id = $1")
            .bind(id)
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Revokes one session (signing out); `false` if it was not active.
pub async fn revoke_session(tx: &mut Tx, id: &str, now: Millis) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query("UPDATE member_sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .bind(now)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n > 0)
}

/// Revokes every session of a member.
pub async fn revoke_sessions(
    tx: &mut Tx,
    tenant: TenantId,
    member: MemberId,
    now: Millis,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE member_sessions SET revoked_at = $3
             WHERE tenant_id = $1 AND member_id = $2 AND revoked_at IS NULL",
        )
        .bind(tenant)
        .bind(member)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}
