//! Workflow rule files a tenant published over the admin API, and the
//! history of every publish and delete.
//!
//! A publish or delete marks configuration changed, so other PostgreSQL
//! nodes hear of it at once (the config notice); every node also compares
//! [`revision`] now and then, which is how SQLite nodes (and a node whose
//! notice was lost) notice a change.

use fleetprompt_core::time::Millis;
use fleetprompt_core::{Origin, TenantId};
use sqlx::{FromRow, Row};

use crate::{Db, JsonText, Result, Tx, corrupt, on_db, on_tx};

/// The live version of one published file.
#[derive(Debug, Clone, FromRow)]
pub struct WorkflowFileRow {
    /// Its name (`escalation.toml`), unique per tenant.
    pub name: String,
    /// The TOML text.
    pub body: String,
    /// SHA-256 of the text, hex.
    pub sha256: String,
    /// 1 for the first publish, one more for each publish or delete since.
    pub version: i64,
    /// Who published this version.
    #[sqlx(try_from = "JsonText<Origin>")]
    pub actor: Origin,
    /// When.
    pub published_at: Millis,
}

/// A published file with the slug of its tenant, as a node loads them all.
#[derive(Debug, Clone)]
pub struct PublishedFile {
    /// The tenant's slug: rules are scoped by slug.
    pub tenant_slug: String,
    /// The file.
    pub file: WorkflowFileRow,
}

/// One entry of a file's history.
#[derive(Debug, Clone, FromRow)]
pub struct WorkflowVersionRow {
    /// Its number, counting publishes and deletes.
    pub version: i64,
    /// `published` or `deleted`.
    pub action: String,
    /// SHA-256 of the text published; `None` for a delete.
    pub sha256: Option<String>,
    /// Who.
    #[sqlx(try_from = "JsonText<Origin>")]
    pub actor: Origin,
    /// When.
    pub at: Millis,
}

/// What [`publish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// A new version, numbered so.
    New(i64),
    /// The live version already had this text: nothing written.
    Unchanged(i64),
}

/// A number that changes with every publish and delete of any tenant.
pub async fn revision(db: &Db) -> Result<i64> {
    on_db!(db, c => {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workflow_file_versions")
            .fetch_one(c)
            .await?;
        Ok(n)
    })
}

const COLUMNS: &str = "f.name, f.body, f.sha256, f.version, f.actor, f.published_at";

/// Every tenant's published files, by tenant slug and then name.
pub async fn all_published(db: &Db) -> Result<Vec<PublishedFile>> {
    let sql = format!(
        "SELECT {COLUMNS}, t.slug FROM workflow_files f JOIN tenants t ON t.id = f.tenant_id
         ORDER BY t.slug, f.name"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(c).await?;
        rows.iter()
            .map(|r| {
                Ok(PublishedFile {
                    file: WorkflowFileRow::from_row(r)?,
                    tenant_slug: r.try_get("slug")?,
                })
            })
            .collect()
    })
}

/// A tenant's published files, by name.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<WorkflowFileRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workflow_files f WHERE f.tenant_id = $1 ORDER BY f.name");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(c)
            .await?)
    })
}

/// Holds, until `tx` ends, the right to change a tenant's published files,
/// so that two publishes checked at once cannot both commit a rule id
/// each thought free. (SQLite: every write transaction is exclusive.)
pub async fn lock(tx: &mut Tx, tenant: TenantId) -> Result<()> {
    if let crate::db::TxInner::Postgres(t) = tx.inner_mut() {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('workflow_files:' || $1))")
            .bind(tenant)
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// A tenant's published files, read in `tx` (after [`lock`]).
pub async fn list_in(tx: &mut Tx, tenant: TenantId) -> Result<Vec<WorkflowFileRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workflow_files f WHERE f.tenant_id = $1 ORDER BY f.name");
    on_tx!(tx, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(&mut *c)
            .await?)
    })
}

/// One published file of a tenant.
pub async fn get(db: &Db, tenant: TenantId, name: &str) -> Result<Option<WorkflowFileRow>> {
    let sql =
        format!("SELECT {COLUMNS} FROM workflow_files f WHERE f.tenant_id = $1 AND f.name = $2");
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(name)
            .fetch_optional(c)
            .await?)
    })
}

/// A file's history, oldest first; empty when it was never published.
pub async fn history(db: &Db, tenant: TenantId, name: &str) -> Result<Vec<WorkflowVersionRow>> {
    on_db!(db, c => {
        Ok(sqlx::query_as(
            "SELECT version, action, sha256, actor, at FROM workflow_file_versions
             WHERE tenant_id = $1 AND name = $2 ORDER BY version",
        )
        .bind(tenant)
        .bind(name)
        .fetch_all(c)
        .await?)
    })
}

/// The number the next entry of a file's history gets.
async fn next_version(tx: &mut Tx, tenant: TenantId, name: &str) -> Result<i64> {
    on_tx!(tx, c => {
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT MAX(version) FROM workflow_file_versions WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut *c)
        .await?;
        Ok(n.unwrap_or(0) + 1)
    })
}

async fn record_version(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
    version: i64,
    // The text and hash published; `None` records a delete.
    file: Option<(&str, &str)>,
    actor: &str,
    at: Millis,
) -> Result<()> {
    let action = if file.is_some() {
        "published"
    } else {
        "deleted"
    };
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO workflow_file_versions (tenant_id, name, version, action, body, sha256, actor, at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(tenant)
        .bind(name)
        .bind(version)
        .bind(action)
        .bind(file.map(|f| f.0))
        .bind(file.map(|f| f.1))
        .bind(actor)
        .bind(at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Makes `body` the live version of a tenant's file `name`, and records it
/// in the history; the same text as the live version writes nothing.
pub async fn publish(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
    body: &str,
    sha256: &str,
    actor: &Origin,
    at: Millis,
) -> Result<Published> {
    let live: Option<(String, i64)> = on_tx!(tx, c => {
        sqlx::query_as("SELECT sha256, version FROM workflow_files WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut *c)
            .await?
    });
    if let Some((sha, version)) = live
        && sha == sha256
    {
        return Ok(Published::Unchanged(version));
    }
    tx.mark_config_changed().await?;
    let version = next_version(tx, tenant, name).await?;
    let actor = serde_json::to_string(actor).map_err(corrupt)?;
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO workflow_files (tenant_id, name, body, sha256, version, actor, published_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (tenant_id, name) DO UPDATE SET body = excluded.body, sha256 = excluded.sha256,
                 version = excluded.version, actor = excluded.actor, published_at = excluded.published_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(body)
        .bind(sha256)
        .bind(version)
        .bind(&actor)
        .bind(at)
        .execute(&mut *c)
        .await?;
    });
    record_version(tx, tenant, name, version, Some((body, sha256)), &actor, at).await?;
    Ok(Published::New(version))
}

/// Removes a tenant's published file, recording who did; `None` when
/// there was no such file (nothing written), else the deleted version's
/// SHA-256 and the number of the history entry recording the delete.
pub async fn delete(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
    actor: &Origin,
    at: Millis,
) -> Result<Option<(String, i64)>> {
    let sha: Option<String> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "DELETE FROM workflow_files WHERE tenant_id = $1 AND name = $2 RETURNING sha256",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut *c)
        .await?
    });
    let Some(sha) = sha else { return Ok(None) };
    tx.mark_config_changed().await?;
    let version = next_version(tx, tenant, name).await?;
    let actor = serde_json::to_string(actor).map_err(corrupt)?;
    record_version(tx, tenant, name, version, None, &actor, at).await?;
    Ok(Some((sha, version)))
}
