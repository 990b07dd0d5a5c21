//! Chat messages: from the visitor, an assistant, or an agent (operator).

use std::fmt;
use std::str::FromStr;

use crate::types::id::{ConversationId, MessageId, SiteId, VisitorId};
use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;
use serde::Serialize;
use sqlx::Row;

use fleetprompt_store::{Db, Result, Tx, corrupt, on_db, on_tx};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The website visitor.
    Visitor,
    /// An automated assistant.
    Assistant,
    /// A human operator.
    Agent,
}

impl Role {
    /// The role as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Visitor => "visitor",
            Self::Assistant => "assistant",
            Self::Agent => "agent",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "visitor" => Ok(Self::Visitor),
            "assistant" => Ok(Self::Assistant),
            "agent" => Ok(Self::Agent),
            _ => Err(format!("unknown role {s:?}")),
        }
    }
}

/// A message as stored.
#[derive(Debug, Clone, Serialize)]
pub struct MessageRow {
    /// Its id (time-ordered).
    pub id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// The site.
    #[serde(skip)]
    pub site_id: SiteId,
    /// The conversation's visitor.
    #[serde(skip)]
    pub visitor_id: VisitorId,
    /// Who wrote it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// The widget's id for it, which makes sending idempotent.
    pub client_message_id: Option<String>,
    /// When it was stored.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub created_at: Millis,
}

const COLUMNS: &str =
    "id, conversation_id, site_id, visitor_id, role, content, client_message_id, created_at";

macro_rules! decode {
    ($r:expr) => {{
        let r = $r;
        MessageRow {
            id: r.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
            conversation_id: r.try_get::<String, _>(1)?.parse().map_err(corrupt)?,
            site_id: r.try_get::<String, _>(2)?.parse().map_err(corrupt)?,
            visitor_id: r.try_get::<String, _>(3)?.parse().map_err(corrupt)?,
            role: r.try_get::<String, _>(4)?.parse().map_err(corrupt)?,
            content: r.try_get(5)?,
            client_message_id: r.try_get(6)?,
            created_at: r.try_get(7)?,
        }
    }};
}

/// Stores a message, with the signal it was recorded as (if any).
pub async fn insert(
    tx: &mut Tx,
    tenant: TenantId,
    m: &MessageRow,
    signal_id: Option<&str>,
) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_messages (tenant_id, id, conversation_id, site_id, visitor_id, role, content,
                client_message_id, signal_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(tenant.to_string())
        .bind(m.id.to_string())
        .bind(m.conversation_id.to_string())
        .bind(m.site_id.to_string())
        .bind(m.visitor_id.to_string())
        .bind(m.role.as_str())
        .bind(&m.content)
        .bind(m.client_message_id.as_deref())
        .bind(signal_id)
        .bind(m.created_at)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// A conversation's messages after `after` (exclusive), oldest first.
pub async fn list(
    db: &Db,
    tenant: TenantId,
    conversation: ConversationId,
    after: Option<MessageId>,
    limit: i64,
) -> Result<Vec<MessageRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND ($3 IS NULL OR id > $3)
         ORDER BY id LIMIT $4"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(conversation.to_string())
            .bind(after.map(|a| a.to_string()))
            .bind(limit)
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect()
    })
}

/// The newest `limit` messages of a conversation before the message
/// `before` (all of them when `None`), oldest first, and whether older ones
/// exist. Message ids sort by time, so this is one range of the index.
pub async fn newest(
    db: &Db,
    tenant: TenantId,
    conversation: ConversationId,
    before: Option<MessageId>,
    limit: i64,
) -> Result<(Vec<MessageRow>, bool)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND ($3 IS NULL OR id < $3)
         ORDER BY id DESC LIMIT $4"
    );
    let mut rows: Vec<MessageRow> = on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(conversation.to_string())
            .bind(before.map(|b| b.to_string()))
            .bind(limit + 1)
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r))).collect::<Result<Vec<_>>>()?
    });
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    rows.reverse();
    Ok((rows, more))
}

/// Counts a tenant's visitor messages and `webchat.message.received` signals
/// (the bench checks they match what was accepted).
pub async fn count_with_signals(db: &Db, tenant: TenantId) -> Result<(i64, i64)> {
    fleetprompt_store::on_db!(db, c => {
        let messages: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM website_chat_messages WHERE tenant_id = $1 AND role = 'visitor'",
        )
        .bind(tenant.to_string())
        .fetch_one(c)
        .await?;
        let signals: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM signals WHERE tenant_id = $1 AND type = 'webchat.message.received'",
        )
        .bind(tenant.to_string())
        .fetch_one(c)
        .await?;
        Ok((messages, signals))
    })
}
