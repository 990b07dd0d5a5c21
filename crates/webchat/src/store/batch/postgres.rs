//! The batch on PostgreSQL: advisory locks per visitor, lookups as lateral
//! index probes, writes as data-modifying CTEs.

use fleetprompt_store::{Backend, Result, json_rows};
use sqlx::PgConnection;

use super::FoundRow;

/// Locks the batch's visitors (`locks`, in the order given) and finds their
/// earlier sends and open conversations.
pub(super) async fn find(
    conn: &mut PgConnection,
    locks: &[String],
    sends_json: &str,
    visitors_json: &str,
) -> Result<Vec<FoundRow>> {
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
    .execute(&mut *conn)
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
        .bind(sends_json)
        .bind(visitors_json)
        .fetch_all(&mut *conn)
        .await
        .map_err(Into::into)
}

/// The batch's writes as one statement of data-modifying CTEs (each runs
/// once, whether or not it is read), whose rows are the new signals.
pub(super) fn write_statement(
    signals: &str,
    conversations: &str,
    messages: &str,
    touch: &str,
) -> String {
    format!(
        "WITH s AS ({signals} RETURNING 1),
              c AS ({conversations} RETURNING 1),
              m AS ({messages} RETURNING 1),
              t AS ({touch} RETURNING 1)
         SELECT 1 FROM s"
    )
}
