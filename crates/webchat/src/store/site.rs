//! Sites: where a widget may run, its settings, and its signing secrets.

use crate::types::id::SiteId;
use fleetprompt_core::TenantId;
use fleetprompt_core::time::{Millis, now_ms};
use serde_json::Value;
use sqlx::Row;

use fleetprompt_store::{Db, Result, StoreError, Tx, corrupt, is_unique_violation, on_db, on_tx};

/// A site as stored.
#[derive(Debug, Clone)]
pub struct SiteRow {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its id.
    pub id: SiteId,
    /// The public widget key (`pk_…`), pasted into the embed snippet.
    pub public_key: String,
    /// `native`.
    pub mode: String,
    /// `pending` (registration directive not yet run), `active`, `disabled`.
    pub status: String,
    /// Exact origins the widget may run on.
    pub allowed_origins: Vec<String>,
    /// Widget settings (consent, contact capture, limits …).
    pub settings: Value,
    /// Id of the current signing secret; tokens name the key they were signed with.
    pub key_id: i32,
    /// The current signing secret, sealed.
    pub sealed_secret: String,
    /// The previous secret's id, valid until `prev_valid_until` after a rotation.
    pub prev_key_id: Option<i32>,
    /// The previous signing secret, sealed.
    pub prev_sealed_secret: Option<String>,
    /// When tokens signed with the previous secret stop working.
    pub prev_valid_until: Option<Millis>,
    /// How long a conversation may be idle before it is ended.
    pub idle_timeout_ms: i64,
    /// When it was registered.
    pub created_at: Millis,
    /// When it last changed.
    pub updated_at: Millis,
    /// Bumped by every change; an edit that names the version it read is
    /// refused when another change came first.
    pub version: i64,
}

const COLUMNS: &str = "tenant_id, id, public_key, mode, status, allowed_origins, settings, key_id,
    sealed_secret, prev_key_id, prev_sealed_secret, prev_valid_until, idle_timeout_ms, created_at, updated_at, version";

macro_rules! decode {
    ($r:expr) => {{
        let r = $r;
        SiteRow {
            tenant: r.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
            id: r.try_get::<String, _>(1)?.parse().map_err(corrupt)?,
            public_key: r.try_get(2)?,
            mode: r.try_get(3)?,
            status: r.try_get(4)?,
            allowed_origins: serde_json::from_str(&r.try_get::<String, _>(5)?).map_err(corrupt)?,
            settings: serde_json::from_str(&r.try_get::<String, _>(6)?).map_err(corrupt)?,
            key_id: r.try_get(7)?,
            sealed_secret: r.try_get(8)?,
            prev_key_id: r.try_get(9)?,
            prev_sealed_secret: r.try_get(10)?,
            prev_valid_until: r.try_get(11)?,
            idle_timeout_ms: r.try_get(12)?,
            created_at: r.try_get(13)?,
            updated_at: r.try_get(14)?,
            version: r.try_get(15)?,
        }
    }};
}

/// Stores a new site.
pub async fn insert(tx: &mut Tx, tenant: TenantId, s: &SiteRow) -> Result<()> {
    let origins = serde_json::to_string(&s.allowed_origins).map_err(corrupt)?;
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_sites (tenant_id, id, public_key, mode, status, allowed_origins, settings,
                key_id, sealed_secret, idle_timeout_ms, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11)",
        )
        .bind(tenant.to_string())
        .bind(s.id.to_string())
        .bind(&s.public_key)
        .bind(&s.mode)
        .bind(&s.status)
        .bind(&origins)
        .bind(s.settings.to_string())
        .bind(s.key_id)
        .bind(&s.sealed_secret)
        .bind(s.idle_timeout_ms)
        .bind(s.created_at)
        .execute(&mut *c)
        .await
        .map_err(|e| if is_unique_violation(&e) {
            StoreError::Conflict("site key already taken".into())
        } else {
            e.into()
        })?;
    });
    Ok(())
}

/// Finds a site by its public widget key. The one site lookup without a
/// tenant: it is how a widget request finds its tenant.
pub async fn find_by_public_key(db: &Db, public_key: &str) -> Result<SiteRow> {
    let sql = format!("SELECT {COLUMNS} FROM website_chat_sites WHERE public_key = $1");
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(public_key)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("site"))?;
        Ok(decode!(&row))
    })
}

/// Reads one site. Widget requests read sites through the engine's cache,
/// which [`Db::config_generation`](fleetprompt_store::Db::config_generation) keeps honest.
pub async fn get(db: &Db, tenant: TenantId, id: SiteId) -> Result<SiteRow> {
    let sql = format!("SELECT {COLUMNS} FROM website_chat_sites WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("site"))?;
        Ok(decode!(&row))
    })
}

/// Reads one site inside a transaction.
pub async fn get_tx(tx: &mut Tx, tenant: TenantId, id: SiteId) -> Result<SiteRow> {
    let sql = format!("SELECT {COLUMNS} FROM website_chat_sites WHERE tenant_id = $1 AND id = $2");
    on_tx!(tx, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::not_found("site"))?;
        Ok(decode!(&row))
    })
}

/// A tenant's sites, oldest first.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<SiteRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_sites WHERE tenant_id = $1 ORDER BY created_at, id"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}

/// Moves a site to status `to` from one of (at most two) `from` statuses;
/// false when it was in neither.
pub async fn set_status(
    tx: &mut Tx,
    tenant: TenantId,
    id: SiteId,
    from: &[&str],
    to: &str,
) -> Result<bool> {
    let a = from.first().copied().unwrap_or(to);
    let b = from.get(1).copied().unwrap_or(a);
    tx.mark_config_changed().await?;
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_sites SET status = $3, updated_at = $4, version = version + 1
             WHERE tenant_id = $1 AND id = $2 AND (status = $5 OR status = $6)",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(to)
        .bind(now_ms())
        .bind(a)
        .bind(b)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Replaces the signing secret, if the current key is still `expected_key_id`
/// (so a re-run of the same rotation changes nothing). The old secret keeps
/// working until `prev_valid_until`.
pub async fn rotate_secret(
    tx: &mut Tx,
    tenant: TenantId,
    id: SiteId,
    expected_key_id: i32,
    new_sealed_secret: &str,
    prev_valid_until: Millis,
) -> Result<bool> {
    tx.mark_config_changed().await?;
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_sites SET prev_key_id = key_id, prev_sealed_secret = sealed_secret,
                prev_valid_until = $4, key_id = key_id + 1, sealed_secret = $5, updated_at = $6,
                version = version + 1
             WHERE tenant_id = $1 AND id = $2 AND key_id = $3",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(expected_key_id)
        .bind(prev_valid_until)
        .bind(new_sealed_secret)
        .bind(now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Replaces a site's allowed origins.
pub async fn set_origins(
    tx: &mut Tx,
    tenant: TenantId,
    id: SiteId,
    origins: &[String],
) -> Result<()> {
    let origins = serde_json::to_string(origins).map_err(corrupt)?;
    tx.mark_config_changed().await?;
    on_tx!(tx, c => {
        sqlx::query("UPDATE website_chat_sites SET allowed_origins = $3, updated_at = $4, version = version + 1 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(&origins)
            .bind(now_ms())
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// A site's editable configuration, as an update replaces it.
#[derive(Debug, Clone)]
pub struct SiteConfig<'a> {
    /// Exact origins the widget may run on.
    pub allowed_origins: &'a [String],
    /// Widget settings, checked and with defaults filled in.
    pub settings: &'a Value,
    /// How long a conversation may be idle (from the settings).
    pub idle_timeout_ms: i64,
}

/// Replaces a site's origins and settings and bumps its version, if its
/// version is still `expected` (any version when `None`); false when it was
/// not (another change came first).
pub async fn update_config(
    tx: &mut Tx,
    tenant: TenantId,
    id: SiteId,
    expected: Option<i64>,
    cfg: &SiteConfig<'_>,
) -> Result<bool> {
    let origins = serde_json::to_string(cfg.allowed_origins).map_err(corrupt)?;
    tx.mark_config_changed().await?;
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_sites SET allowed_origins = $3, settings = $4, idle_timeout_ms = $5,
                updated_at = $6, version = version + 1
             WHERE tenant_id = $1 AND id = $2 AND ($7 IS NULL OR version = $7)",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(&origins)
        .bind(cfg.settings.to_string())
        .bind(cfg.idle_timeout_ms)
        .bind(now_ms())
        .bind(expected)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
