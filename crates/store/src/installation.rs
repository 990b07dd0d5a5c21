//! Installations: which package a tenant has, at which version, configured
//! how, and whether it is installed now. Uninstalling keeps the row (status
//! `uninstalled`) and every row of the package's own tables, so installing
//! again restores the tenant's data.

use crate::{Db, JsonText, Result, Tx, on_db, on_tx};
use fleetprompt_core::TenantId;
use fleetprompt_core::time::{Millis, now_ms};
use serde_json::Value;

/// Whether a tenant has a package now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Installed: its rules run, its directive kinds and endpoints work.
    Installed,
    /// Uninstalled: kept with its data, but nothing of it runs.
    Uninstalled,
}

impl Status {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Installed => "installed",
            Self::Uninstalled => "uninstalled",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "installed" => Ok(Self::Installed),
            "uninstalled" => Ok(Self::Uninstalled),
            other => Err(format!("installation status {other:?}")),
        }
    }
}

// Stored by name, read back through `FromStr`: an unknown status is a
// decode error (and so `StoreError::Corrupt`).
impl<DB: sqlx::Database> sqlx::Type<DB> for Status
where
    str: sqlx::Type<DB>,
{
    fn type_info() -> DB::TypeInfo {
        <str as sqlx::Type<DB>>::type_info()
    }

    fn compatible(ty: &DB::TypeInfo) -> bool {
        <str as sqlx::Type<DB>>::compatible(ty)
    }
}

impl<'r, DB: sqlx::Database> sqlx::Decode<'r, DB> for Status
where
    &'r str: sqlx::Decode<'r, DB>,
{
    fn decode(value: DB::ValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        Ok(<&'r str as sqlx::Decode<'r, DB>>::decode(value)?.parse::<Self>()?)
    }
}

/// A tenant's installation of one package.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstallationRow {
    /// The package's slug.
    pub package: String,
    /// The package version installed.
    pub version: String,
    /// Its configuration (checked against the package's settings schema).
    #[sqlx(try_from = "JsonText<Value>")]
    pub config: Value,
    /// Installed or uninstalled.
    pub status: Status,
    /// When it was first installed.
    pub installed_at: Millis,
    /// When its configuration or status last changed.
    pub updated_at: Millis,
}

const COLUMNS: &str = "package, version, config, status, installed_at, updated_at";

/// What [`install`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The tenant never had the package.
    New,
    /// It was uninstalled and is installed again.
    Reinstalled,
    /// It was installed; its configuration (and version) were replaced.
    Reconfigured,
}

/// Installs `package` at `version` with `config`: a new row, an uninstalled
/// row installed again, or an installed one reconfigured. `config: None`
/// keeps a stored configuration (and stores `{}` for a new row).
pub async fn install(
    tx: &mut Tx,
    tenant: TenantId,
    package: &str,
    version: &str,
    config: Option<&Value>,
) -> Result<Installed> {
    let now = now_ms();
    let empty = Value::Object(Default::default());
    let inserted: Option<String> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO installations (tenant_id, package, version, config, status, installed_at, updated_at)
             VALUES ($1, $2, $3, $4, 'installed', $5, $5) ON CONFLICT (tenant_id, package) DO NOTHING RETURNING package",
        )
        .bind(tenant)
        .bind(package)
        .bind(version)
        .bind(config.unwrap_or(&empty).to_string())
        .bind(now)
        .fetch_optional(&mut *c)
        .await?
    });
    tx.mark_config_changed().await?;
    if inserted.is_some() {
        return Ok(Installed::New);
    }
    // The status before decides what this was (for the caller's 201/200).
    let before: Status = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT status FROM installations WHERE tenant_id = $1 AND package = $2")
            .bind(tenant)
            .bind(package)
            .fetch_one(&mut *c)
            .await?
    });
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE installations SET version = $3, config = COALESCE($4, config), status = 'installed', updated_at = $5
             WHERE tenant_id = $1 AND package = $2",
        )
        .bind(tenant)
        .bind(package)
        .bind(version)
        .bind(config.map(Value::to_string))
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(match before {
        Status::Uninstalled => Installed::Reinstalled,
        Status::Installed => Installed::Reconfigured,
    })
}

/// Marks a tenant's installation of `package` uninstalled, keeping its row
/// and data. Returns whether it was installed (false: already uninstalled,
/// or never installed).
pub async fn uninstall(tx: &mut Tx, tenant: TenantId, package: &str) -> Result<bool> {
    let changed = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE installations SET status = 'uninstalled', updated_at = $3
             WHERE tenant_id = $1 AND package = $2 AND status = 'installed'",
        )
        .bind(tenant)
        .bind(package)
        .bind(now_ms())
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if changed > 0 {
        tx.mark_config_changed().await?;
    }
    Ok(changed > 0)
}

/// A tenant's installation of `package`, read inside a transaction.
pub async fn get_tx(
    tx: &mut Tx,
    tenant: TenantId,
    package: &str,
) -> Result<Option<InstallationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM installations WHERE tenant_id = $1 AND package = $2");
    on_tx!(tx, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(package)
            .fetch_optional(&mut *c)
            .await?)
    })
}

/// A tenant's installation of `package`.
pub async fn get(db: &Db, tenant: TenantId, package: &str) -> Result<Option<InstallationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM installations WHERE tenant_id = $1 AND package = $2");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(package)
            .fetch_optional(c)
            .await?)
    })
}

/// Every installation of a tenant (installed or not), by package.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<InstallationRow>> {
    let sql = format!("SELECT {COLUMNS} FROM installations WHERE tenant_id = $1 ORDER BY package");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(c)
            .await?)
    })
}
