//! The queue's statements on SQLite: rows by `rowid`, batches as one JSON
//! parameter read with `jsonb_each` (see [`crate::json_rows`]), and no row
//! locks (its one writer connection serializes every write transaction).

use fleetprompt_core::time::Millis;
use fleetprompt_core::{DirectiveId, TenantId};
use serde_json::Value;
use sqlx::SqliteConnection;

use super::{Claimed, Completion, Dialect, EDGE_LANE, Lane, PLATFORM_LANE, RETURNING, applied_of};
use crate::{Result, corrupt};

/// SQLite's [`Dialect`].
pub(super) struct Sqlite;

impl Dialect for Sqlite {
    type Conn = SqliteConnection;

    async fn claim(
        conn: &mut SqliteConnection,
        lane: Lane<'_>,
        worker: &str,
        lease_ms: i64,
        limit: i64,
        now: Millis,
    ) -> Result<Vec<Claimed>> {
        let q = match lane {
            Lane::Platform(shape) => {
                let shaped = !shape.rooms.is_empty();
                let (rooms, blocked, join, room) = if shaped {
                    (
                        "rooms AS (SELECT value ->> 0 AS tenant_id, value ->> 1 AS destination,
                            value ->> 2 AS room FROM json_each($7)), ",
                        "AND NOT EXISTS (SELECT 1 FROM rooms b WHERE b.room <= 0
                            AND b.tenant_id = directives.tenant_id AND b.destination = directives.destination)",
                        "LEFT JOIN rooms r ON r.tenant_id = w.tenant_id AND r.destination = w.destination",
                        "COALESCE(r.room, $6)",
                    )
                } else {
                    ("", "", "", "$6")
                };
                let sql = format!(
                    "WITH {rooms}ranked AS (
                        SELECT w.rid, w.tenant_id, w.next_attempt_at, w.destination,
                            row_number() OVER (PARTITION BY w.tenant_id, w.destination ORDER BY w.next_attempt_at) AS in_destination,
                            {room} AS room
                        FROM (SELECT rowid AS rid, tenant_id, destination, next_attempt_at FROM directives
                              WHERE {PLATFORM_LANE} AND status = 'pending' AND next_attempt_at <= $3 {blocked}
                              ORDER BY next_attempt_at LIMIT $5) w
                        {join}
                     )
                     UPDATE directives SET status = 'running', attempts = attempts + 1, locked_by = $1,
                        lease_until = $2, updated_at = $3
                     WHERE rowid IN (SELECT rid FROM (
                                        SELECT rid, next_attempt_at,
                                            row_number() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at) AS in_tenant
                                        FROM ranked WHERE destination IS NULL OR in_destination <= room) f
                                     ORDER BY in_tenant, next_attempt_at LIMIT $4)
                     RETURNING {RETURNING}"
                );
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .bind(shape.window.max(limit))
                    .bind(shape.default_room);
                if shaped {
                    q = q.bind(crate::json_array(
                        shape
                            .rooms
                            .iter()
                            .map(|r| serde_json::json!([r.tenant, r.destination, r.room])),
                    ));
                }
                q
            }
            Lane::Edge {
                tenant,
                connector,
                kinds,
            } => {
                let sql = format!(
                    "UPDATE directives SET status = 'running', attempts = attempts + 1, locked_by = $1,
                        lease_until = $2, updated_at = $3
                     WHERE rowid IN (SELECT rowid FROM directives
                                     WHERE {EDGE_LANE} AND tenant_id = $5
                                       AND kind IN (SELECT value FROM json_each($6))
                                       AND COALESCE(json_extract(args, '$.connector_id'), $7) = $7
                                       AND status = 'pending' AND next_attempt_at <= $3
                                     ORDER BY next_attempt_at LIMIT $4)
                     RETURNING {RETURNING}"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(worker)
                    .bind(now + lease_ms)
                    .bind(now)
                    .bind(limit)
                    .bind(tenant)
                    .bind(serde_json::to_string(kinds).map_err(corrupt)?)
                    .bind(connector)
            }
        };
        Ok(q.fetch_all(&mut *conn).await?)
    }

    async fn complete(
        conn: &mut SqliteConnection,
        batch: &[Completion],
        now: Millis,
    ) -> Result<Vec<bool>> {
        // Two hand-offs to the connection's thread, whatever the batch's
        // size (rows as in `json_rows`): the fenced status updates, then
        // the attempt rows and result signals of those that applied.
        // (A statement per row was three hand-offs per completion, and
        // the writer waited on them more than it worked.)
        let updates = crate::json_array(batch.iter().map(|c| {
            serde_json::json!([
                c.tenant,
                c.id,
                c.new_status().as_str(),
                c.next_attempt_at,
                c.error,
                c.result.as_ref().map(Value::to_string),
                c.finished(),
                c.worker,
                c.attempt
            ])
        }));
        let rows: Vec<(TenantId, DirectiveId)> = sqlx::query_as(
            "UPDATE directives SET status = k.value ->> 2,
                next_attempt_at = COALESCE(k.value ->> 3, next_attempt_at), locked_by = NULL,
                lease_until = NULL, last_error = COALESCE(k.value ->> 4, last_error),
                result = k.value ->> 5, finished_at = k.value ->> 6, updated_at = $2
             FROM jsonb_each($1) AS k
             WHERE directives.tenant_id = k.value ->> 0 AND directives.id = k.value ->> 1
               AND directives.status = 'running' AND directives.locked_by = k.value ->> 7
               AND directives.attempts = k.value ->> 8
             RETURNING directives.tenant_id, directives.id",
        )
        .bind(updates)
        .bind(now)
        .fetch_all(&mut *conn)
        .await?;
        let applied = applied_of(batch, rows.into_iter().collect());
        let done: Vec<&Completion> = batch
            .iter()
            .zip(&applied)
            .filter(|(_, a)| **a)
            .map(|(c, _)| c)
            .collect();
        if !done.is_empty() {
            let attempts = crate::json_array(done.iter().map(|c| {
                serde_json::json!([
                    c.tenant,
                    c.id,
                    c.attempt,
                    c.worker,
                    c.started_at,
                    c.finished_at,
                    c.outcome.as_str(),
                    c.error,
                    c.http_status,
                    c.external_ref
                ])
            }));
            let signals = crate::json_array(done.iter().filter_map(|c| {
                let (id, s) = c.signal.as_ref()?;
                Some(crate::signal::json_row(c.tenant, *id, s, now))
            }));
            // `WHERE true`: SQLite needs it to tell the upsert clause from a join.
            let sql = format!(
                "INSERT INTO directive_attempts (tenant_id, directive_id, number, worker, started_at,
                    finished_at, outcome, error, http_status, external_ref)
                 SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4,
                    k.value ->> 5, k.value ->> 6, k.value ->> 7, k.value ->> 8, k.value ->> 9
                 FROM {attempts_k} WHERE true ORDER BY k.key
                 ON CONFLICT (tenant_id, directive_id, number) DO NOTHING;
                 {insert_signals}",
                attempts_k = crate::json_rows(crate::Backend::Sqlite, 1),
                insert_signals =
                    crate::signal::insert_json_rows(&crate::json_rows(crate::Backend::Sqlite, 2)),
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(attempts)
                .bind(signals)
                .execute(&mut *conn)
                .await?;
        }
        Ok(applied)
    }
}
