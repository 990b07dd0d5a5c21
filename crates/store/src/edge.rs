//! Edge Connectors: registration, token authentication, heartbeats.
//!
//! A connector authenticates like an admin token (public id, then the secret
//! compared in constant time against its stored hash) but with its own
//! prefix and table, so an Edge Connector token can never call the admin API
//! and an admin token can never claim edge tasks.

use fleetprompt_core::secret::{IssuedEdgeToken, issue_edge_token, verify_secret};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{EdgeConnectorId, TenantId};
use serde::Serialize;
use sqlx::{FromRow, Row};

use crate::{Db, Result, StoreError, Tx, on_db, on_tx};

/// Longest connector name, in characters.
pub const NAME_MAX: usize = 100;

/// Longest version string a heartbeat may report, in characters.
pub const VERSION_MAX: usize = 64;

/// A registered Edge Connector, as listed to its tenant.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct EdgeConnector {
    /// Its id (the public half of its token).
    pub id: EdgeConnectorId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// What the tenant calls it (e.g. the host it runs on).
    pub name: String,
    /// When it was registered.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub created_at: Millis,
    /// Its last heartbeat or claim, if any.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub last_seen_at: Option<Millis>,
    /// The version its last heartbeat reported.
    pub version: Option<String>,
    /// When it was revoked; a revoked connector cannot authenticate.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub revoked_at: Option<Millis>,
    /// The last error it reported for a task (an SMTP refusal, a TLS
    /// failure), so a connector that is alive but failing shows.
    pub last_error: Option<String>,
    /// When it reported that error.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub last_error_at: Option<Millis>,
}

/// Checks a connector name: 1 to [`NAME_MAX`] printable characters.
pub fn check_name(name: &str) -> Result<(), String> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > NAME_MAX || n.chars().any(char::is_control) {
        return Err(format!(
            "edge connector name must be 1 to {NAME_MAX} printable characters"
        ));
    }
    Ok(())
}

/// Registers a connector; returns it and its token, which is shown once.
pub async fn create(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
) -> Result<(EdgeConnector, IssuedEdgeToken)> {
    check_name(name).map_err(StoreError::InvalidState)?;
    let token = issue_edge_token();
    let now = now_ms();
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO edge_connectors (tenant_id, id, name, secret_hash, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant)
        .bind(token.id)
        .bind(name.trim())
        .bind(&token.secret_hash)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    let connector = EdgeConnector {
        id: token.id,
        tenant_id: tenant,
        name: name.trim().to_owned(),
        created_at: now,
        last_seen_at: None,
        version: None,
        revoked_at: None,
        last_error: None,
        last_error_at: None,
    };
    Ok((connector, token))
}

const COLUMNS: &str =
    "id, tenant_id, name, created_at, last_seen_at, version, revoked_at, last_error, last_error_at";

/// A tenant's connectors, oldest first, revoked ones included.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<EdgeConnector>> {
    let sql = format!("SELECT {COLUMNS} FROM edge_connectors WHERE tenant_id = $1 ORDER BY id");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(c)
            .await?)
    })
}

/// One of a tenant's connectors.
pub async fn get(db: &Db, tenant: TenantId, id: EdgeConnectorId) -> Result<EdgeConnector> {
    let sql = format!("SELECT {COLUMNS} FROM edge_connectors WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("edge connector"))
    })
}

/// Revokes a connector: its token stops working at once. Revoking twice
/// keeps the first revocation time.
pub async fn revoke(tx: &mut Tx, tenant: TenantId, id: EdgeConnectorId) -> Result<()> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE edge_connectors SET revoked_at = COALESCE(revoked_at, $3)
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        return Err(StoreError::not_found("edge connector"));
    }
    Ok(())
}

/// Resolves a connector token's parts to its live connector, comparing the
/// secret in constant time. `None` for an unknown, revoked or wrong token
/// alike, so a caller cannot tell which.
pub async fn authenticate(
    db: &Db,
    id: EdgeConnectorId,
    secret: &str,
) -> Result<Option<EdgeConnector>> {
    let sql = format!(
        "SELECT {COLUMNS}, secret_hash FROM edge_connectors WHERE id = $1 AND revoked_at IS NULL"
    );
    let found = on_db!(db, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(c)
            .await?
            .map(|r| -> Result<(EdgeConnector, String)> {
                Ok((EdgeConnector::from_row(&r)?, r.try_get("secret_hash")?))
            })
            .transpose()?
    });
    let Some((connector, hash)) = found else {
        // Spend the same hashing work as a real check.
        let _ = verify_secret(secret, "");
        return Ok(None);
    };
    Ok(verify_secret(secret, &hash).then_some(connector))
}

/// Records that a connector was seen now, and the version it reported.
pub async fn touch(
    tx: &mut Tx,
    tenant: TenantId,
    id: EdgeConnectorId,
    version: Option<&str>,
    at: Millis,
) -> Result<()> {
    let version = version.map(|v| v.chars().take(VERSION_MAX).collect::<String>());
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE edge_connectors SET last_seen_at = $3, version = COALESCE($4, version)
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(at)
        .bind(version)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// One of a tenant's connectors by its id or, failing that, its name (the
/// newest live one of that name): how an email destination names it.
pub async fn find(db: &Db, tenant: TenantId, id_or_name: &str) -> Result<EdgeConnector> {
    if let Ok(id) = id_or_name.parse::<EdgeConnectorId>() {
        return get(db, tenant, id).await;
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM edge_connectors
         WHERE tenant_id = $1 AND name = $2 AND revoked_at IS NULL ORDER BY id DESC LIMIT 1"
    );
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id_or_name.trim())
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("edge connector"))
    })
}

/// Longest last-error text kept, in characters.
pub const LAST_ERROR_MAX: usize = 500;

/// Records the error a connector reported for a task.
pub async fn set_last_error(
    tx: &mut Tx,
    tenant: TenantId,
    id: EdgeConnectorId,
    error: &str,
    at: Millis,
) -> Result<()> {
    let error: String = error.chars().take(LAST_ERROR_MAX).collect();
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE edge_connectors SET last_error = $3, last_error_at = $4
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(error)
        .bind(at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Every live connector that has been seen, with when: what the last-seen
/// gauge reports. The number of connectors is an operator's decision (one
/// or two per mail server), so this stays small.
pub async fn last_seen_all(db: &Db) -> Result<Vec<(EdgeConnectorId, Millis)>> {
    on_db!(db, c => {
        Ok(sqlx::query_as(
            "SELECT id, last_seen_at FROM edge_connectors
             WHERE revoked_at IS NULL AND last_seen_at IS NOT NULL ORDER BY id",
        )
        .fetch_all(c)
        .await?)
    })
}
