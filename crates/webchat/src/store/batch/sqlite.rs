//! The batch on SQLite: no LATERAL, and several statements go to the
//! connection's thread in one hand-off.

use fleetprompt_store::{Backend, Result, json_rows};
use sqlx::SqliteConnection;

use super::FoundRow;

/// Earlier sends and open conversations of a batch (SQLite has one writer:
/// no locks to take).
pub(super) async fn find(
    conn: &mut SqliteConnection,
    sends_json: &str,
    visitors_json: &str,
) -> Result<Vec<FoundRow>> {
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
        .bind(sends_json)
        .bind(visitors_json)
        .fetch_all(conn)
        .await
        .map_err(Into::into)
}

/// The batch's writes as statements run in one hand-off, whose rows are the
/// new signals.
pub(super) fn write_statement(
    signals: &str,
    conversations: &str,
    messages: &str,
    touch: &str,
) -> String {
    format!("{signals} RETURNING 1; {conversations}; {messages}; {touch}")
}
