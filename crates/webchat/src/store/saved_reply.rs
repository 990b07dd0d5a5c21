//! A tenant's saved replies: snippets members insert into the reply box.

use crate::types::id::SavedReplyId;
use fleetprompt_core::TenantId;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::time::Millis;
use serde::Serialize;
use sqlx::Row;

use fleetprompt_store::package::is_unique_violation;
use fleetprompt_store::{Db, Result, StoreError, Tx, on_db, on_tx};

/// One saved reply.
#[derive(Debug, Clone, Serialize)]
pub struct SavedReplyRow {
    /// Its id.
    pub id: SavedReplyId,
    /// How members pick it (unique within the tenant).
    pub title: String,
    /// The text it puts in the reply box.
    pub content: String,
    /// The member who made it, if a member did.
    pub created_by: Option<MemberId>,
    /// When it was made.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub created_at: Millis,
    /// When it last changed.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub updated_at: Millis,
}

/// Most saved replies a tenant has (the picker lists them all).
pub const MAX_PER_TENANT: i64 = 500;

const COLUMNS: &str = "id, title, content, created_by, created_at, updated_at";

macro_rules! decode {
    ($r:expr) => {{
        let created_by: Option<String> = $r.try_get("created_by")?;
        SavedReplyRow {
            id: $r.try_get("id")?,
            title: $r.try_get("title")?,
            content: $r.try_get("content")?,
            created_by: created_by
                .map(|m| m.parse())
                .transpose()
                .map_err(fleetprompt_store::corrupt)?,
            created_at: $r.try_get("created_at")?,
            updated_at: $r.try_get("updated_at")?,
        }
    }};
}

fn title_taken(title: &str) -> impl FnOnce(sqlx::Error) -> StoreError {
    let message = format!("a saved reply titled {title:?} already exists");
    move |e| {
        if is_unique_violation(&e) {
            StoreError::Conflict(message)
        } else {
            e.into()
        }
    }
}

/// The tenant's saved replies, by title.
pub async fn list(db: &Db, tenant: TenantId) -> Result<Vec<SavedReplyRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_saved_replies WHERE tenant_id = $1
         ORDER BY lower(title), id LIMIT {MAX_PER_TENANT}"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}

/// How many saved replies the tenant has, inside the transaction that adds
/// one (so the cap holds).
pub async fn count_tx(tx: &mut Tx, tenant: TenantId) -> Result<i64> {
    on_tx!(tx, c => {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM website_chat_saved_replies WHERE tenant_id = $1",
        )
        .bind(tenant.to_string())
        .fetch_one(&mut *c)
        .await?)
    })
}

/// Stores a new saved reply; a title the tenant already uses is a conflict.
pub async fn insert(tx: &mut Tx, tenant: TenantId, r: &SavedReplyRow) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_saved_replies (tenant_id, id, title, content, created_by, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant.to_string())
        .bind(r.id)
        .bind(&r.title)
        .bind(&r.content)
        .bind(r.created_by.map(|m| m.to_string()))
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *c)
        .await
        .map_err(title_taken(&r.title))?;
    });
    Ok(())
}

/// Changes a saved reply's title and text; false when the tenant has no
/// such saved reply.
pub async fn update(
    tx: &mut Tx,
    tenant: TenantId,
    id: SavedReplyId,
    title: &str,
    content: &str,
    now: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_saved_replies SET title = $3, content = $4, updated_at = $5
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(title)
        .bind(content)
        .bind(now)
        .execute(&mut *c)
        .await
        .map_err(title_taken(title))?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Deletes a saved reply; false when the tenant has no such saved reply.
pub async fn delete(tx: &mut Tx, tenant: TenantId, id: SavedReplyId) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query("DELETE FROM website_chat_saved_replies WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}
