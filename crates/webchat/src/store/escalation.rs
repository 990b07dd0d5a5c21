//! Escalation state: the Mattermost thread of a conversation (REST mode)
//! and reply drafts waiting for an operator.

use crate::types::id::ConversationId;
use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use fleetprompt_store::{Db, Result, StoreError, Tx, on_db, on_tx};

/// The root post of a conversation's thread in a destination, if any.
pub async fn thread_root(
    db: &Db,
    tenant: TenantId,
    conversation: ConversationId,
    destination: &str,
) -> Result<Option<String>> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar(
            "SELECT root_id FROM website_chat_threads
             WHERE tenant_id = $1 AND conversation_id = $2 AND destination = $3",
        )
        .bind(tenant.to_string())
        .bind(conversation.to_string())
        .bind(destination)
        .fetch_optional(c)
        .await?)
    })
}

/// Remembers the first post of a thread; an existing root is kept.
pub async fn set_thread_root(
    tx: &mut Tx,
    tenant: TenantId,
    conversation: ConversationId,
    destination: &str,
    root_id: &str,
    now: Millis,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_threads (tenant_id, conversation_id, destination, root_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(conversation.to_string())
        .bind(destination)
        .bind(root_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// A drafted reply.
#[derive(Debug, Clone, Serialize)]
pub struct DraftRow {
    /// Its id (`draft_…`-free UUIDv7 string).
    pub id: String,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The proposed answer.
    pub content: String,
    /// `llm` or `faq`.
    pub source: String,
    /// The model (LLM) or the FAQ question matched.
    pub model: Option<String>,
    /// Token usage as the model reported it.
    pub usage: Option<Value>,
    /// How long the model took, in milliseconds.
    pub latency_ms: Option<i64>,
    /// `pending` or `approved`.
    pub status: String,
    /// The `webchat.reply_generate` directive that drafted it.
    pub generated_by: String,
    /// The `webchat.reply_send` directive created on approval.
    pub reply_directive: Option<String>,
    /// When it was drafted.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub created_at: Millis,
}

const COLUMNS: &str = "id, conversation_id, content, source, model, usage, latency_ms, status, generated_by, reply_directive, created_at";

macro_rules! decode {
    ($r:expr) => {{
        let r = $r;
        DraftRow {
            id: r.try_get(0)?,
            conversation_id: r
                .try_get::<String, _>(1)?
                .parse()
                .map_err(fleetprompt_store::corrupt)?,
            content: r.try_get(2)?,
            source: r.try_get(3)?,
            model: r.try_get(4)?,
            usage: r
                .try_get::<Option<String>, _>(5)?
                .map(|u| serde_json::from_str(&u))
                .transpose()
                .map_err(fleetprompt_store::corrupt)?,
            latency_ms: r.try_get(6)?,
            status: r.try_get(7)?,
            generated_by: r.try_get(8)?,
            reply_directive: r.try_get(9)?,
            created_at: r.try_get(10)?,
        }
    }};
}

/// Stores a draft; a second one from the same directive (a retried
/// attempt) is ignored. True when it was stored.
pub async fn insert_draft(tx: &mut Tx, tenant: TenantId, d: &DraftRow) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_drafts (tenant_id, id, conversation_id, content, source, model, usage, latency_ms, status, generated_by, reply_directive, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(&d.id)
        .bind(d.conversation_id.to_string())
        .bind(&d.content)
        .bind(&d.source)
        .bind(&d.model)
        .bind(d.usage.as_ref().map(Value::to_string))
        .bind(d.latency_ms)
        .bind(&d.status)
        .bind(&d.generated_by)
        .bind(&d.reply_directive)
        .bind(d.created_at)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// A conversation's drafts, oldest first.
pub async fn drafts(
    db: &Db,
    tenant: TenantId,
    conversation: ConversationId,
) -> Result<Vec<DraftRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_drafts WHERE tenant_id = $1 AND conversation_id = $2 ORDER BY id"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(conversation.to_string())
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}

/// One draft of a conversation.
pub async fn draft(
    db: &Db,
    tenant: TenantId,
    conversation: ConversationId,
    id: &str,
) -> Result<DraftRow> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_drafts WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3"
    );
    on_db!(db, c => {
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(conversation.to_string())
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("draft"))?;
        Ok(decode!(&r))
    })
}

/// Marks a pending draft approved, naming the reply directive; false when
/// it was not pending any more.
pub async fn approve_draft(
    tx: &mut Tx,
    tenant: TenantId,
    id: &str,
    reply_directive: &str,
    now: Millis,
) -> Result<bool> {
    decide_draft(tx, tenant, id, "approved", Some(reply_directive), now).await
}

/// Marks a pending draft discarded: it will not be sent. False when it was
/// not pending any more.
pub async fn discard_draft(tx: &mut Tx, tenant: TenantId, id: &str, now: Millis) -> Result<bool> {
    decide_draft(tx, tenant, id, "discarded", None, now).await
}

async fn decide_draft(
    tx: &mut Tx,
    tenant: TenantId,
    id: &str,
    status: &str,
    reply_directive: Option<&str>,
    now: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_drafts SET status = $3, reply_directive = $4, decided_at = $5
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(status)
        .bind(reply_directive)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
