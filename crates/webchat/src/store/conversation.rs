//! Conversations: opened by a visitor's first message, ended by the visitor
//! or by the idle sweep.

use crate::types::id::{ConversationId, SiteId, VisitorId};
use fleetprompt_core::TenantId;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::time::Millis;
use serde::Serialize;
use sqlx::Row;

use fleetprompt_store::{Db, Result, StoreError, Tx, corrupt, on_db, on_tx};

/// A conversation as stored.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationRow {
    /// Its id.
    pub id: ConversationId,
    /// The site it happens on.
    pub site_id: SiteId,
    /// The visitor.
    pub visitor_id: VisitorId,
    /// `open` or `ended`.
    pub status: String,
    /// The page it started on, if the widget said.
    pub page_url: Option<String>,
    /// When its first message arrived.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub started_at: Millis,
    /// When its last message arrived.
    #[serde(serialize_with = "fleetprompt_store::package::ser_ms")]
    pub last_message_at: Millis,
    /// When it ended.
    #[serde(serialize_with = "fleetprompt_store::package::ser_opt_ms")]
    pub ended_at: Option<Millis>,
    /// `idle`, `visitor_closed`, `operator` …
    pub ended_reason: Option<String>,
    /// The member it is assigned to, if any.
    pub assignee: Option<MemberId>,
}

const COLUMNS: &str = "id, site_id, visitor_id, status, page_url, started_at, last_message_at, ended_at, ended_reason, assignee";

macro_rules! decode {
    ($r:expr, $o:expr) => {{
        let r = $r;
        let o: usize = $o;
        ConversationRow {
            id: r.try_get::<String, _>(o)?.parse().map_err(corrupt)?,
            site_id: r.try_get::<String, _>(o + 1)?.parse().map_err(corrupt)?,
            visitor_id: r.try_get::<String, _>(o + 2)?.parse().map_err(corrupt)?,
            status: r.try_get(o + 3)?,
            page_url: r.try_get(o + 4)?,
            started_at: r.try_get(o + 5)?,
            last_message_at: r.try_get(o + 6)?,
            ended_at: r.try_get(o + 7)?,
            ended_reason: r.try_get(o + 8)?,
            assignee: r
                .try_get::<Option<String>, _>(o + 9)?
                .map(|m| m.parse())
                .transpose()
                .map_err(corrupt)?,
        }
    }};
}

/// Serialises a visitor's writes until `tx` ends, so that two first
/// messages sent at once open one conversation, not two. SQLite has a
/// single writer already; PostgreSQL takes a transaction-scoped advisory
/// lock on the visitor.
pub async fn lock_visitor(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
) -> Result<()> {
    if let fleetprompt_store::package::TxInner::Postgres(t) = tx.inner_mut() {
        let key = VisitorKey {
            tenant,
            site,
            visitor,
        };
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(key.lock_name())
            .execute(&mut **t)
            .await?;
    }
    Ok(())
}

/// The visitor's open conversation on a site, if any.
pub async fn open_for_visitor(
    tx: &mut Tx,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
) -> Result<Option<ConversationId>> {
    let id: Option<String> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "SELECT id FROM website_chat_conversations
             WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3 AND status = 'open'
             ORDER BY started_at DESC, id DESC LIMIT 1",
        )
        .bind(tenant.to_string())
        .bind(site.to_string())
        .bind(visitor.to_string())
        .fetch_optional(&mut *c)
        .await?
    });
    id.map(|s| s.parse().map_err(corrupt)).transpose()
}

/// Marks activity on a conversation at `now`, unless it already has later
/// activity: an operator's reply does not take the visitor's lock, so it
/// and a visitor's message may commit in either order, and the later time
/// must win whichever commits last.
pub async fn touch(tx: &mut Tx, tenant: TenantId, id: ConversationId, now: Millis) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_conversations SET last_message_at = $3
             WHERE tenant_id = $1 AND id = $2 AND last_message_at < $3",
        )
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(now)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// A visitor of a site, as the batch functions take it (a batch may span
/// tenants; each key carries the tenant its site record gave).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VisitorKey {
    /// The site's tenant.
    pub tenant: TenantId,
    /// The site.
    pub site: SiteId,
    /// The visitor.
    pub visitor: VisitorId,
}

impl VisitorKey {
    /// The name of the visitor's PostgreSQL advisory lock.
    pub(crate) fn lock_name(&self) -> String {
        format!(
            "webchat-visitor:{}:{}:{}",
            self.tenant, self.site, self.visitor
        )
    }
}

/// Ends an open conversation; false when it had already ended.
pub async fn end(
    tx: &mut Tx,
    tenant: TenantId,
    id: ConversationId,
    reason: &str,
    now: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_conversations SET status = 'ended', ended_at = $3, ended_reason = $4
             WHERE tenant_id = $1 AND id = $2 AND status = 'open'",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(now)
        .bind(reason)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Reads one conversation.
pub async fn get(db: &Db, tenant: TenantId, id: ConversationId) -> Result<ConversationRow> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_conversations WHERE tenant_id = $1 AND id = $2"
    );
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("conversation"))?;
        Ok(decode!(&row, 0))
    })
}

/// The visitor's most recent conversation on a site, open or ended.
pub async fn latest_for_visitor(
    db: &Db,
    tenant: TenantId,
    site: SiteId,
    visitor: VisitorId,
) -> Result<Option<ConversationRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_conversations
         WHERE tenant_id = $1 AND site_id = $2 AND visitor_id = $3 ORDER BY started_at DESC, id DESC LIMIT 1"
    );
    on_db!(db, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(site.to_string())
            .bind(visitor.to_string())
            .fetch_optional(c)
            .await?;
        row.map(|r| Ok(decode!(&r, 0))).transpose()
    })
}

/// Whose conversations an inbox shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Assignee {
    /// Everyone's and nobody's.
    #[default]
    Any,
    /// Only those assigned to nobody.
    Nobody,
    /// Only those assigned to this member.
    Member(MemberId),
}

/// A tenant's conversations, most recently active first. (The indexes hold
/// the minute of the last message, not its exact time: see migration 0007.)
pub async fn list(
    db: &Db,
    tenant: TenantId,
    site: Option<SiteId>,
    status: Option<&str>,
    assignee: Assignee,
    limit: i64,
) -> Result<Vec<ConversationRow>> {
    // $5: 0 any, 1 nobody, 2 the member in $6.
    let (which, member) = match assignee {
        Assignee::Any => (0_i32, None),
        Assignee::Nobody => (1, None),
        Assignee::Member(m) => (2, Some(m.to_string())),
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_conversations
         WHERE tenant_id = $1 AND ($2 IS NULL OR site_id = $2) AND ($3 IS NULL OR status = $3)
           AND ($5 = 0 OR ($5 = 1 AND assignee IS NULL) OR ($5 = 2 AND assignee = $6))
         ORDER BY last_message_minute DESC, last_message_at DESC, id DESC LIMIT $4"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(site.map(|s| s.to_string()))
            .bind(status)
            .bind(limit)
            .bind(which)
            .bind(member)
            .fetch_all(c)
            .await?;
        rows.iter().map(|r| Ok(decode!(r, 0))).collect()
    })
}

/// One row of the console's inbox: a conversation, who the visitor said
/// they are, and its last message (role and the start of its text).
#[derive(Debug, Clone, Serialize)]
pub struct InboxRow {
    /// The conversation.
    pub conversation: ConversationRow,
    /// The visitor's name, if given.
    pub visitor_name: Option<String>,
    /// The visitor's email, if given.
    pub visitor_email: Option<String>,
    /// Who wrote the last message: `visitor`, `agent` or `assistant`.
    pub last_role: Option<String>,
    /// The start of the last message (at most 160 characters).
    pub last_text: Option<String>,
    /// When the member reading the inbox last opened the conversation.
    pub read_at: Option<Millis>,
}

impl InboxRow {
    /// Unread for the member reading the inbox: an open conversation whose
    /// last message is the visitor's, written after they last opened it.
    pub fn unread(&self) -> bool {
        let c = &self.conversation;
        c.status == "open"
            && self.last_role.as_deref() == Some("visitor")
            && self.read_at.is_none_or(|r| r < c.last_message_at)
    }
}

/// What an inbox page shows.
#[derive(Debug, Clone, Default)]
pub struct InboxQuery<'a> {
    /// One site only.
    pub site: Option<SiteId>,
    /// `open` or `ended` only.
    pub status: Option<&'a str>,
    /// Whose.
    pub assignee: Assignee,
    /// Conversations whose visitor's email or name, or any message,
    /// contains this text (case-insensitive).
    pub search: Option<&'a str>,
    /// Sites that hide their visitors' name and email from members: the
    /// search does not look at those there, or a match would confirm what
    /// the page masks. Message text is still searched.
    pub details_hidden: &'a [SiteId],
    /// The member reading the inbox, whose unread marks it shows.
    pub reader: Option<MemberId>,
    /// Only conversations after this one in the inbox's order (older):
    /// the last row of the page before, by its last message's time and id.
    pub after: Option<(Millis, ConversationId)>,
    /// Most rows.
    pub limit: i64,
}

/// The pattern of a case-insensitive "contains" match, `\` escaping.
fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for ch in text.to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// A tenant's inbox, most recently active first: the same order and
/// indexes as [`list`] (newest activity first, with a LIMIT), each row
/// with its visitor's contact and its last message, read by the primary
/// key and the messages' `(tenant_id, conversation_id, id)` index.
pub async fn inbox(db: &Db, tenant: TenantId, q: &InboxQuery<'_>) -> Result<Vec<InboxRow>> {
    let (which, member) = match q.assignee {
        Assignee::Any => (0_i32, None),
        Assignee::Nobody => (1, None),
        Assignee::Member(m) => (2, Some(m.to_string())),
    };
    let cols: Vec<String> = COLUMNS.split(", ").map(|c| format!("c.{c}")).collect();
    // The page's rows are chosen first and only then decorated with their
    // visitor and last message: a LIMIT after a sort would otherwise look
    // both up for every row sorted (all of a busy minute's conversations).
    let sql = format!(
        "WITH page AS (
           SELECT {cols} FROM website_chat_conversations c
           WHERE c.tenant_id = $1 AND ($2 IS NULL OR c.site_id = $2) AND ($3 IS NULL OR c.status = $3)
             AND ($5 = 0 OR ($5 = 1 AND c.assignee IS NULL) OR ($5 = 2 AND c.assignee = $6))
             AND ($7 IS NULL
               OR (c.site_id NOT IN ({hidden}) AND EXISTS (SELECT 1 FROM website_chat_identities v
                   WHERE v.tenant_id = c.tenant_id AND v.site_id = c.site_id AND v.visitor_id = c.visitor_id
                     AND (lower(v.email) LIKE $7 ESCAPE '\\' OR lower(v.name) LIKE $7 ESCAPE '\\')))
               OR EXISTS (SELECT 1 FROM website_chat_messages s
                   WHERE s.tenant_id = c.tenant_id AND s.conversation_id = c.id
                     AND lower(s.content) LIKE $7 ESCAPE '\\'))
             AND ($8 IS NULL OR c.last_message_minute < $8
               OR (c.last_message_minute = $8 AND (c.last_message_at < $9
                 OR (c.last_message_at = $9 AND c.id < $10))))
           ORDER BY c.last_message_minute DESC, c.last_message_at DESC, c.id DESC LIMIT $4
         )
         SELECT {cols}, i.name, i.email,
           (SELECT m.role || ':' || substr(m.content, 1, 160) FROM website_chat_messages m
             WHERE m.tenant_id = $1 AND m.conversation_id = c.id ORDER BY m.id DESC LIMIT 1)
         , r.read_at
         FROM page c
         LEFT JOIN website_chat_identities i
           ON i.tenant_id = $1 AND i.site_id = c.site_id AND i.visitor_id = c.visitor_id
         LEFT JOIN website_chat_reads r
           ON r.tenant_id = $1 AND r.conversation_id = c.id AND r.member_id = $12
         ORDER BY c.last_message_at DESC, c.id DESC",
        cols = cols.join(", "),
        // SQLite and PostgreSQL share no array syntax: the list is JSON text.
        hidden = match db.backend() {
            fleetprompt_store::Backend::Sqlite => "SELECT value FROM json_each($11)",
            fleetprompt_store::Backend::Postgres => "SELECT jsonb_array_elements_text($11::jsonb)",
        }
    );
    let hidden: Vec<String> = q.details_hidden.iter().map(SiteId::to_string).collect();
    let hidden = serde_json::to_string(&hidden).map_err(corrupt)?;
    let pattern = q
        .search
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(contains_pattern);
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(q.site.map(|s| s.to_string()))
            .bind(q.status)
            .bind(q.limit.clamp(1, 500))
            .bind(which)
            .bind(member)
            .bind(pattern)
            .bind(q.after.map(|(at, _)| at - at % 60_000))
            .bind(q.after.map(|(at, _)| at))
            .bind(q.after.map(|(_, id)| id.to_string()))
            .bind(hidden)
            .bind(q.reader.map(|m| m.to_string()))
            .fetch_all(c)
            .await?;
        rows.iter()
            .map(|r| {
                let last: Option<String> = r.try_get(12)?;
                let (last_role, last_text) = match last.as_deref().and_then(|l| l.split_once(':')) {
                    Some((role, text)) => (Some(role.to_owned()), Some(text.to_owned())),
                    None => (None, None),
                };
                Ok(InboxRow {
                    conversation: decode!(r, 0),
                    visitor_name: r.try_get(10)?,
                    visitor_email: r.try_get(11)?,
                    last_role,
                    last_text,
                    read_at: r.try_get(13)?,
                })
            })
            .collect()
    })
}

/// Reads one conversation inside a transaction.
pub async fn get_tx(tx: &mut Tx, tenant: TenantId, id: ConversationId) -> Result<ConversationRow> {
    let sql = format!(
        "SELECT {COLUMNS} FROM website_chat_conversations WHERE tenant_id = $1 AND id = $2"
    );
    on_tx!(tx, c => {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(id.to_string())
            .fetch_optional(&mut *c)
            .await?
            .ok_or(StoreError::not_found("conversation"))?;
        Ok(decode!(&row, 0))
    })
}

/// Opens an ended conversation again; false when it was not ended.
pub async fn reopen(
    tx: &mut Tx,
    tenant: TenantId,
    id: ConversationId,
    now: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE website_chat_conversations SET status = 'open', ended_at = NULL, ended_reason = NULL,
                last_message_at = CASE WHEN last_message_at < $3 THEN $3 ELSE last_message_at END
             WHERE tenant_id = $1 AND id = $2 AND status = 'ended'",
        )
        .bind(tenant.to_string())
        .bind(id.to_string())
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}

/// Assigns a conversation to a member, or to nobody; false when there is
/// no such conversation.
pub async fn set_assignee(
    tx: &mut Tx,
    tenant: TenantId,
    id: ConversationId,
    member: Option<MemberId>,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query("UPDATE website_chat_conversations SET assignee = $3 WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.to_string())
            .bind(id.to_string())
            .bind(member.map(|m| m.to_string()))
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}

/// Open conversations, of any tenant, idle for longer than their site's
/// timeout at `now`. The sweep is a platform job, so it spans tenants; each
/// row carries its tenant and every write after it is tenant-scoped. The
/// minute of the last message is what the index holds; a message before a
/// time is in a minute before it too.
pub async fn idle(db: &Db, now: Millis, limit: i64) -> Result<Vec<(TenantId, ConversationRow)>> {
    let cols: String = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT c.tenant_id, {cols} FROM website_chat_conversations c
         JOIN website_chat_sites s ON s.tenant_id = c.tenant_id AND s.id = c.site_id
         WHERE c.status = 'open' AND c.last_message_minute < $1 - s.idle_timeout_ms
           AND c.last_message_at < $1 - s.idle_timeout_ms
         ORDER BY c.last_message_minute, c.last_message_at LIMIT $2"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(c)
            .await?;
        rows.iter()
            .map(|r| {
                let tenant: TenantId = r.try_get::<String, _>(0)?.parse().map_err(corrupt)?;
                Ok((tenant, decode!(r, 1)))
            })
            .collect()
    })
}
