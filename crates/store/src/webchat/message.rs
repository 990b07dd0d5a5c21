//! Chat messages: from the visitor, an assistant, or an agent (operator).

use std::fmt;
use std::str::FromStr;

use fleetprompt_core::TenantId;
use fleetprompt_core::id::{ConversationId, MessageId, SignalId, SiteId, VisitorId};
use fleetprompt_core::time::Millis;
use serde::Serialize;
use sqlx::Row;

use crate::{Backend, Db, Result, Tx, corrupt, on_db, on_tx};

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
    #[serde(serialize_with = "crate::timeline::ser_ms")]
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

/// The message a visitor already sent with `client_message_id`, if any.
pub async fn find_by_client_id(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
    client_message_id: &str,
) -> Result<Option<(MessageId, ConversationId)>> {
    let row: Option<(String, String)> = on_tx!(tx, c => {
        sqlx::query_as(
            "SELECT id, conversation_id FROM website_chat_messages
             WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3 AND client_message_id = $4",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .bind(client_message_id)
        .fetch_optional(&mut *c)
        .await?
    });
    row.map(|(m, c)| Ok((m.parse().map_err(corrupt)?, c.parse().map_err(corrupt)?)))
        .transpose()
}

/// [`find_by_client_id`] for several messages in one query: the answer at
/// position `i` is for `keys[i]` (tenant, site, visitor, client message id).
pub async fn find_by_client_ids(
    tx: &mut Tx,
    keys: &[(TenantId, SiteId, VisitorId, &str)],
) -> Result<Vec<Option<(MessageId, ConversationId)>>> {
    let values = serde_json::Value::from(
        keys.iter()
            .map(|(t, s, v, c)| serde_json::json!([t, s, v, c]))
            .collect::<Vec<_>>(),
    );
    let rows = crate::json_rows(tx.backend());
    // A lateral lookup on PostgreSQL: as a plain join, a plan made while the
    // table was small (a hash join over a sequential scan) stays cached as
    // it grows. SQLite only joins by nested loops, and probes the unique index.
    let sql = match tx.backend() {
        Backend::Sqlite => format!(
            "SELECT k.key, m.id, m.conversation_id FROM {rows} JOIN website_chat_messages m
               ON m.tenant_id = k.value ->> 0 AND m.site_id = k.value ->> 1
              AND m.visitor_id = k.value ->> 2 AND m.client_message_id = k.value ->> 3"
        ),
        Backend::Postgres => format!(
            "SELECT k.key, m.id, m.conversation_id FROM {rows} CROSS JOIN LATERAL (
                 SELECT id, conversation_id FROM website_chat_messages
                 WHERE tenant_id = k.value ->> 0 AND site_id = k.value ->> 1
                   AND visitor_id = k.value ->> 2 AND client_message_id = k.value ->> 3
                 LIMIT 1) AS m"
        ),
    };
    let rows: Vec<(i64, String, String)> = on_tx!(tx, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(values.to_string())
            .fetch_all(&mut *c)
            .await?
    });
    let mut found = vec![None; keys.len()];
    for (key, m, conv) in rows {
        let slot = usize::try_from(key)
            .ok()
            .and_then(|k| found.get_mut(k))
            .ok_or_else(|| corrupt(format!("batch row {key} out of range")))?;
        *slot = Some((m.parse().map_err(corrupt)?, conv.parse().map_err(corrupt)?));
    }
    Ok(found)
}

/// Stores several messages in one statement, each with the signal it was
/// recorded as.
pub async fn insert_many(
    tx: &mut Tx,
    rows: &[(TenantId, &MessageRow, Option<SignalId>)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = serde_json::Value::from(
        rows.iter()
            .map(|(t, m, sig)| {
                serde_json::json!([
                    t,
                    m.id,
                    m.conversation_id,
                    m.site_id,
                    m.visitor_id,
                    m.role.as_str(),
                    m.content,
                    m.client_message_id,
                    sig,
                    m.created_at
                ])
            })
            .collect::<Vec<_>>(),
    );
    let sql = format!(
        "INSERT INTO website_chat_messages (tenant_id, id, conversation_id, site_id, visitor_id, role, content,
            client_message_id, signal_id, created_at)
         SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
                k.value ->> 6, k.value ->> 7, k.value ->> 8, CAST(k.value ->> 9 AS BIGINT)
         FROM {} ORDER BY k.key",
        crate::json_rows(tx.backend())
    );
    on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(values.to_string())
            .execute(&mut *c)
            .await?;
    });
    Ok(())
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

/// Counts a tenant's visitor messages and `webchat.message.received` signals
/// (the bench checks they match what was accepted).
pub async fn count_with_signals(db: &Db, tenant: TenantId) -> Result<(i64, i64)> {
    crate::on_db!(db, c => {
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
