//! Outbound destinations. Their configuration is stored sealed; only a
//! redacted summary is readable without the master key.

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{DestinationId, TenantId};
use serde_json::Value;
use sqlx::Row;

use crate::{Db, Result, StoreError, Tx, corrupt, is_unique_violation, on_db, on_tx};

/// A destination as stored.
#[derive(Debug, Clone)]
pub struct DestinationRow {
    /// Its id.
    pub id: DestinationId,
    /// Unique per tenant; rules and directives refer to it by name.
    pub name: String,
    /// `webhook`, `mattermost`, `llm` …
    pub kind: String,
    /// The whole configuration, sealed under the master key.
    pub sealed_config: String,
    /// A redacted summary safe to show (e.g. the URL's host).
    pub public_config: Value,
    /// When it was created.
    pub created_at: Millis,
}

/// Stores a new destination; a taken name is a conflict.
pub async fn insert(tx: &mut Tx, tenant: TenantId, d: &DestinationRow) -> Result<()> {
    tx.mark_config_changed().await?;
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO destinations (tenant_id, id, name, kind, sealed_config, public_config, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(tenant.to_string())
        .bind(d.id.to_string())
        .bind(&d.name)
        .bind(&d.kind)
        .bind(&d.sealed_config)
        .bind(d.public_config.to_string())
        .bind(now_ms())
        .execute(&mut *c)
        .await
        .map_err(|e| if is_unique_violation(&e) {
            StoreError::Conflict(format!("a destination named {:?} already exists", d.name))
        } else {
            e.into()
        })?;
    });
    Ok(())
}

const COLUMNS: &str = "id, name, kind, sealed_config, public_config, created_at";

macro_rules! decode {
    ($r:expr) => {{
        let r = $r;
        DestinationRow {
            id: r.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
            name: r.try_get(1)?,
            kind: r.try_get(2)?,
            sealed_config: r.try_get(3)?,
            public_config: serde_json::from_str(&r.try_get::<String, _>(4)?).map_err(corrupt)?,
            created_at: r.try_get(5)?,
        }
    }};
}

/// Finds a tenant's destination by name.
pub async fn find_by_name(db: &Db, tenant: TenantId, name: &str) -> Result<DestinationRow> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 AND name = $2");
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(name)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("destination"))?;
        Ok(decode!(&row))
    })
}

/// Lists a tenant's destinations.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<DestinationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 ORDER BY name");
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}

/// Finds a tenant's destination by id.
pub async fn find_by_id(db: &Db, tenant: TenantId, id: DestinationId) -> Result<DestinationRow> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("destination"))?;
        Ok(decode!(&row))
    })
}

/// Replaces a destination's configuration (name and kind never change);
/// every node's cached copy goes stale at commit.
pub async fn update_config(
    tx: &mut Tx,
    tenant: TenantId,
    id: DestinationId,
    sealed_config: &str,
    public_config: &Value,
) -> Result<()> {
    tx.mark_config_changed().await?;
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE destinations SET sealed_config = $3, public_config = $4, updated_at = $5
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(sealed_config)
        .bind(public_config.to_string())
        .bind(now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("destination"));
    }
    Ok(())
}

/// Deletes a destination; every node's cached copy goes stale at commit.
pub async fn delete(tx: &mut Tx, tenant: TenantId, id: DestinationId) -> Result<()> {
    tx.mark_config_changed().await?;
    let n = on_tx!(tx, c => {
        sqlx::query("DELETE FROM destinations WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("destination"));
    }
    Ok(())
}
