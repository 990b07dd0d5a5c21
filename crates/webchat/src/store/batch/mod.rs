//! A batch of visitor messages written in one transaction (group commit)
//! with a fixed number of statements, whatever its size: the visitors are
//! locked and looked up, then every signal, conversation and message is
//! inserted and every conversation touched.
//!
//! Rows travel as one JSON parameter per table (an array of arrays), read
//! as the table `k`: `k.key` is a row's 0-based position and `k.value ->> n`
//! its n-th column, as text. On SQLite each step is one hand-off to the
//! connection's thread, of a few statements; on PostgreSQL it is three
//! statements (round trips): the visitor locks, the lookups as lateral index
//! probes, and the writes as data-modifying CTEs (their cached plans
//! stay good as the tables grow: see [`fleetprompt_store::statistics`]).
//!
//! What differs per backend (the lookups, and how the writes are put
//! together into one statement) is in `sqlite.rs` and `postgres.rs`, one
//! function pair each: `find` and `write_statement`.

use crate::types::id::{ConversationId, MessageId};
use fleetprompt_core::time::Millis;
use fleetprompt_core::{NewSignal, SignalId, TenantId};
use serde_json::json;

use fleetprompt_store::package::{TxInner, insert_signal_rows, signal_row};
use fleetprompt_store::{Backend, Result, Tx, corrupt, json_array, json_rows, on_tx};

use super::conversation::{ConversationRow, VisitorKey};
use super::message::MessageRow;

mod postgres;
mod sqlite;

/// A send to look up: the visitor and the widget's client message id.
pub type SendKey<'a> = (VisitorKey, &'a str);

/// What a batch finds before it writes.
#[derive(Debug, Default)]
pub struct Found {
    /// Per send: the message already stored under its client id, if any.
    pub sent: Vec<Option<(MessageId, ConversationId)>>,
    /// Per visitor: the open conversation and when it last saw a message.
    pub open: Vec<Option<(ConversationId, Millis)>>,
}

/// Everything a batch writes.
#[derive(Debug, Default)]
pub struct Rows {
    /// New signals, with the ids the caller chose, in the order they happened.
    pub signals: Vec<(TenantId, SignalId, NewSignal)>,
    /// New conversations.
    pub conversations: Vec<(TenantId, ConversationRow)>,
    /// New messages, each with its signal.
    pub messages: Vec<(TenantId, MessageRow, SignalId)>,
    /// Stored conversations that saw a message at `now` (a touch never
    /// moves a conversation's last activity back: see
    /// [`super::conversation::touch`]).
    pub touched: Vec<(TenantId, ConversationId)>,
    /// When the batch was written.
    pub now: Millis,
}

/// A lookup's answer row: kind (`sent` or `open`), position in the batch,
/// id, the conversation of a send, the last message time of a conversation.
type FoundRow = (String, i64, String, Option<String>, Option<i64>);

/// Locks the batch's visitors (PostgreSQL advisory locks, in the order
/// given: callers sort, so concurrent batches cannot deadlock; SQLite has
/// one writer) and finds their earlier sends and open conversations.
pub async fn lock_and_find(
    tx: &mut Tx,
    visitors: &[VisitorKey],
    sends: &[SendKey<'_>],
) -> Result<Found> {
    let visitors_json = json_array(
        visitors
            .iter()
            .map(|v| json!([v.tenant, v.site, v.visitor])),
    );
    let sends_json = json_array(
        sends
            .iter()
            .map(|(v, c)| json!([v.tenant, v.site, v.visitor, c])),
    );
    let found: Vec<FoundRow> = match tx.inner_mut() {
        TxInner::Sqlite(t) => sqlite::find(t, &sends_json, &visitors_json).await?,
        TxInner::Postgres(t) => {
            let locks: Vec<String> = visitors.iter().map(VisitorKey::lock_name).collect();
            postgres::find(t, &locks, &sends_json, &visitors_json).await?
        }
    };
    let mut out = Found {
        sent: vec![None; sends.len()],
        open: vec![None; visitors.len()],
    };
    for (kind, key, id, conversation, at) in found {
        let i = usize::try_from(key).map_err(corrupt)?;
        let out_of_range = || corrupt(format!("batch row {key} out of range"));
        match (kind.as_str(), conversation, at) {
            ("sent", Some(c), _) => {
                *out.sent.get_mut(i).ok_or_else(out_of_range)? =
                    Some((id.parse().map_err(corrupt)?, c.parse().map_err(corrupt)?));
            }
            ("open", _, Some(at)) => {
                *out.open.get_mut(i).ok_or_else(out_of_range)? =
                    Some((id.parse().map_err(corrupt)?, at));
            }
            _ => return Err(corrupt(format!("unexpected batch lookup row {kind}"))),
        }
    }
    Ok(out)
}

/// Writes a batch's rows. Returns how many signals were new: one whose
/// dedupe key the tenant already has is not written, and a caller that
/// expects none treats a shortfall as a conflict.
pub async fn write(tx: &mut Tx, r: &Rows) -> Result<usize> {
    let signals = json_array(
        r.signals
            .iter()
            .map(|(t, id, s)| signal_row(*t, *id, s, r.now)),
    );
    let conversations = json_array(r.conversations.iter().map(|(t, c)| {
        json!([
            t,
            c.id,
            c.site_id,
            c.visitor_id,
            c.status,
            c.page_url,
            c.started_at,
            c.last_message_at
        ])
    }));
    let messages = json_array(r.messages.iter().map(|(t, m, sig)| {
        json!([
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
    }));
    let touched = json_array(r.touched.iter().map(|(t, c)| json!([t, c, r.now])));
    let insert_conversations = |k: &str| {
        format!(
            "INSERT INTO website_chat_conversations (tenant_id, id, site_id, visitor_id, status, page_url, started_at, last_message_at)
             SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
                    CAST(k.value ->> 6 AS BIGINT), CAST(k.value ->> 7 AS BIGINT)
             FROM {k} ORDER BY k.key"
        )
    };
    let insert_messages = |k: &str| {
        format!(
            "INSERT INTO website_chat_messages (tenant_id, id, conversation_id, site_id, visitor_id, role, content,
                client_message_id, signal_id, created_at)
             SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
                    k.value ->> 6, k.value ->> 7, k.value ->> 8, CAST(k.value ->> 9 AS BIGINT)
             FROM {k} ORDER BY k.key"
        )
    };
    let touch = |k: &str| {
        format!(
            "UPDATE website_chat_conversations SET last_message_at = CAST(k.value ->> 2 AS BIGINT)
             FROM {k} WHERE website_chat_conversations.tenant_id = k.value ->> 0
               AND website_chat_conversations.id = k.value ->> 1
               AND website_chat_conversations.last_message_at < CAST(k.value ->> 2 AS BIGINT)"
        )
    };
    // One statement text per backend, whose rows are the new signals: on
    // SQLite four statements in one hand-off to the connection's thread, on
    // PostgreSQL one statement of data-modifying CTEs (each runs once,
    // whether or not it is read).
    let b = tx.backend();
    let (s, c, m, t) = (
        insert_signal_rows(&json_rows(b, 1)),
        insert_conversations(&json_rows(b, 2)),
        insert_messages(&json_rows(b, 3)),
        touch(&json_rows(b, 4)),
    );
    let sql = match b {
        Backend::Sqlite => sqlite::write_statement(&s, &c, &m, &t),
        Backend::Postgres => postgres::write_statement(&s, &c, &m, &t),
    };
    let new_signals = on_tx!(tx, conn => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&signals)
            .bind(&conversations)
            .bind(&messages)
            .bind(&touched)
            .fetch_all(conn)
            .await?
            .len()
    });
    Ok(new_signals)
}
