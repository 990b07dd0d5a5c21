//! Packages installed for a tenant (`website_chat`).

use fleetprompt_core::TenantId;
use fleetprompt_core::time::{Millis, now_ms};
use serde_json::Value;
use sqlx::Row;

use crate::{Db, Result, Tx, corrupt, on_db, on_tx};

/// An installed package.
#[derive(Debug, Clone)]
pub struct InstallationRow {
    /// The package's name.
    pub package: String,
    /// Its configuration.
    pub config: Value,
    /// The tenant's key for hashing visitor IPs, sealed under the master key.
    pub sealed_ip_key: String,
    /// When it was first installed.
    pub installed_at: Millis,
    /// When its configuration last changed.
    pub updated_at: Millis,
}

const COLUMNS: &str = "package, config, sealed_ip_key, installed_at, updated_at";

macro_rules! decode {
    ($r:expr) => {{
        let r = $r;
        InstallationRow {
            package: r.try_get(0)?,
            config: serde_json::from_str(&r.try_get::<String, _>(1)?).map_err(corrupt)?,
            sealed_ip_key: r.try_get(2)?,
            installed_at: r.try_get(3)?,
            updated_at: r.try_get(4)?,
        }
    }};
}

/// Installs a package, or replaces the configuration of an installed one
/// (keeping its IP-hash key). Returns whether it was newly installed.
pub async fn upsert(
    tx: &mut Tx,
    tenant: TenantId,
    package: &str,
    config: &Value,
    sealed_ip_key: &str,
) -> Result<bool> {
    let now = now_ms();
    let inserted: Option<String> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO website_chat_installations (tenant_id, package, config, sealed_ip_key, installed_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (tenant_id, package) DO NOTHING RETURNING package",
        )
        .bind(tenant.to_string())
        .bind(package)
        .bind(config.to_string())
        .bind(sealed_ip_key)
        .bind(now)
        .fetch_optional(&mut *c)
        .await?
    });
    if inserted.is_some() {
        return Ok(true);
    }
    on_tx!(tx, c => {
        sqlx::query("UPDATE website_chat_installations SET config = $3, updated_at = $4 WHERE tenant_id = $1 AND package = $2")
            .bind(tenant.to_string())
            .bind(package)
            .bind(config.to_string())
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(false)
}

/// A tenant's installation of `package`, read inside a transaction.
pub async fn get_tx(
    tx: &mut Tx,
    tenant: TenantId,
    package: &str,
) -> Result<Option<InstallationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_installations WHERE tenant_id = $1 AND package = $2"
    );
    on_tx!(tx, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(package)
            .fetch_optional(&mut *c)
            .await?;
        row.map(|r| Ok(decode!(&r))).transpose()
    })
}

/// A tenant's installation of `package`.
pub async fn get(db: &Db, tenant: TenantId, package: &str) -> Result<Option<InstallationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_installations WHERE tenant_id = $1 AND package = $2"
    );
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(package)
            .fetch_optional(c)
            .await?;
        row.map(|r| Ok(decode!(&r))).transpose()
    })
}

/// A tenant's installed packages.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<InstallationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_installations WHERE tenant_id = $1 ORDER BY package"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}
