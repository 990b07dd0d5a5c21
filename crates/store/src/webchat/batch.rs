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
//! stay good as the tables grow: see [`crate::statistics`]).

use fleetprompt_core::id::{ConversationId, MessageId};
use fleetprompt_core::time::Millis;
use fleetprompt_core::{NewSignal, SignalId, TenantId};
use serde_json::json;

use super::conversation::{ConversationRow, VisitorKey};
use super::message::MessageRow;
use crate::db::TxInner;
use crate::{Backend, Result, Tx, corrupt, json_array, json_rows, on_tx};

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
        TxInner::Sqlite(t) => {
            // SQLite has no LATERAL; it joins by index probes anyway. Both
            // lookups go to the connection's thread in one hand-off.
            let sql = format!(
                "SELECT 'sent', k.key, m.id, m.conversation_id, NULL FROM {} JOIN website_chat_messages m
                   ON m.tenant_id = k.value ->> 0 AND m.site_id = k.value ->> 1
                  AND m.visitor_id = k.value ->> 2 AND m.client_message_id = k.value ->> 3;
                 SELECT 'open', key, id, NULL, last_message_at FROM (
                     SELECT k.key AS key, c.id AS id, c.last_message_at AS last_message_at,
                            row_number() OVER (PARTITION BY k.key ORDER BY c.started_at DESC, c.id DESC) AS rn
                     FROM {} JOIN website_chat_conversations c
                       ON c.tenant_id = k.value ->> 0 AND c.site_id = k.value ->> 1
                      AND c.visitor_id = k.value ->> 2 AND c.status = 'open'
                 ) AS latest WHERE rn = 1",
                json_rows(Backend::Sqlite, 1),
                json_rows(Backend::Sqlite, 2)
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&sends_json)
                .bind(&visitors_json)
                .fetch_all(&mut **t)
                .await?
        }
        TxInner::Postgres(t) => {
            let locks: Vec<String> = visitors.iter().map(VisitorKey::lock_name).collect();
            let (sends_k, visitors_k) = (
                json_rows(Backend::Postgres, 1),
                json_rows(Backend::Postgres, 2),
            );
            // The locks first, in a statement of their own: a statement
            // reads from the snapshot taken when it starts, so lookups in
            // the statement that waited for a lock would miss what the
            // holder committed meanwhile (a second open conversation).
            //
            // The same statement leaves this transaction only index probes
            // in nested loops. Its statements look up or touch a few rows
            // per message, and their plans are cached per connection: one
            // made while a table was small (a new database) or whose
            // statistics were stale scanned the whole table, and kept doing
            // so as it grew (the batch's lookups read 1,600 pages each in a
            // benchmark). The touch's join guesses a hundred rows and, with
            // hash joins allowed, scanned every conversation and every dead
            // row version of them.
            sqlx::query(
                "SELECT set_config('enable_seqscan', 'off', true),
                        set_config('enable_hashjoin', 'off', true),
                        set_config('enable_mergejoin', 'off', true),
                        (SELECT count(pg_advisory_xact_lock(hashtextextended(n, 0)))
                         FROM unnest($1::text[]) AS n)",
            )
            .bind(locks)
            .execute(&mut **t)
            .await?;
            // The conversation probe takes the visitor's latest conversation
            // and keeps it if open (a visitor has at most one open, the
            // latest): with `status = 'open'` inside, the planner may pick
            // the partial index of all open conversations and filter it for
            // every row.
            let sql = format!(
                "SELECT 'sent' AS kind, k.key, m.id, m.conversation_id, NULL::bigint AS at
                 FROM {sends_k} CROSS JOIN LATERAL (
                     SELECT id, conversation_id FROM website_chat_messages
                     WHERE tenant_id = k.value ->> 0 AND site_id = k.value ->> 1
                       AND visitor_id = k.value ->> 2 AND client_message_id = k.value ->> 3
                     LIMIT 1) AS m
                 UNION ALL
                 SELECT 'open', k.key, c.id, NULL, c.last_message_at
                 FROM {visitors_k} CROSS JOIN LATERAL (
                     SELECT id, last_message_at, status FROM website_chat_conversations
                     WHERE tenant_id = k.value ->> 0 AND site_id = k.value ->> 1
                       AND visitor_id = k.value ->> 2
                     ORDER BY started_at DESC, id DESC LIMIT 1) AS c
                 WHERE c.status = 'open'"
            );
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(&sends_json)
                .bind(&visitors_json)
                .fetch_all(&mut **t)
                .await?
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
            .map(|(t, id, s)| crate::signal::json_row(*t, *id, s, r.now)),
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
        crate::signal::insert_json_rows(&json_rows(b, 1)),
        insert_conversations(&json_rows(b, 2)),
        insert_messages(&json_rows(b, 3)),
        touch(&json_rows(b, 4)),
    );
    let sql = match b {
        Backend::Sqlite => format!("{s} RETURNING 1; {c}; {m}; {t}"),
        Backend::Postgres => format!(
            "WITH s AS ({s} RETURNING 1),
                  c AS ({c} RETURNING 1),
                  m AS ({m} RETURNING 1),
                  t AS ({t} RETURNING 1)
             SELECT 1 FROM s"
        ),
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
