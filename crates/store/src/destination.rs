//! Outbound destinations. Their configuration is stored sealed; only a
//! redacted summary is readable without the master key.

use crate::{Db, JsonText, Result, StoreError, Tx, is_unique_violation, on_db, on_tx};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{DestinationId, TenantId};
use serde_json::Value;

/// A destination as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    #[sqlx(try_from = "JsonText<Value>")]
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
        .bind(tenant)
        .bind(d.id)
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

/// Finds a tenant's destination by name.
pub async fn find_by_name(db: &Db, tenant: TenantId, name: &str) -> Result<DestinationRow> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 AND name = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(name)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("destination"))
    })
}

/// Lists a tenant's destinations.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<DestinationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 ORDER BY name");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(c)
            .await?)
    })
}

/// Finds a tenant's destination by id.
pub async fn find_by_id(db: &Db, tenant: TenantId, id: DestinationId) -> Result<DestinationRow> {
    let sql = format!("SELECT {COLUMNS} FROM destinations WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("destination"))
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
        .bind(tenant)
        .bind(id)
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
            .bind(tenant)
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("destination"));
    }
    Ok(())
}
