//! The directive table as a queue: batched claims under a lease, batched
//! completions, and the reaper that frees the leases of vanished workers.
//!
//! The queue has two lanes (`runner`): `platform` directives are claimed by
//! the platform's workers ([`claim`]), `edge` ones only by an Edge Connector
//! of their tenant ([`claim_edge`]). Platform claims share each batch among
//! the tenants with due work and keep each destination within the room the
//! worker gives it ([`ClaimShape`]); completions of both lanes go through [`complete`],
//! fenced by `(locked_by, attempts)`, so a worker (or connector) whose lease
//! was reaped and handed to another cannot overwrite the newer attempt's
//! outcome.

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{
    AttemptOutcome, DirectiveId, DirectiveStatus, NewSignal, RetryPolicy, SignalId, TenantId,
};
use serde_json::Value;
use sqlx::Row;

use crate::db::TxInner;
use crate::{Db, Result, Tx, corrupt, on_db, on_tx};

/// A directive claimed for one attempt.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its id.
    pub id: DirectiveId,
    /// Its handler.
    pub kind: String,
    /// The handler's arguments.
    pub args: Value,
    /// Its dedupe key: a deterministic idempotency key for receivers.
    pub dedupe_key: String,
    /// What it is about.
    pub subject: Option<String>,
    /// This attempt's number, 1-based.
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// How it is retried.
    pub retry_policy: RetryPolicy,
    /// The signal that caused it.
    pub caused_by: Option<SignalId>,
    /// The destination it delivers to (`args.destination`), if any.
    pub destination: Option<String>,
}

const RETURNING: &str = "tenant_id, id, kind, args, dedupe_key, subject, attempts, max_attempts, retry_policy, caused_by, destination";

macro_rules! decode_claimed {
    ($r:expr) => {{
        let r = $r;
        Claimed {
            tenant: r.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
            id: r.try_get::<String, _>(1)?.parse().map_err(corrupt)?,
            kind: r.try_get(2)?,
            args: serde_json::from_str(&r.try_get::<String, _>(3)?).map_err(corrupt)?,
            dedupe_key: r.try_get(4)?,
            subject: r.try_get(5)?,
            attempt: r.try_get(6)?,
            max_attempts: r.try_get(7)?,
            retry_policy: serde_json::from_str(&r.try_get::<String, _>(8)?).map_err(corrupt)?,
            caused_by: r
                .try_get::<Option<String>, _>(9)?
                .map(|s| s.parse())
                .transpose()
                .map_err(corrupt)?,
            destination: r.try_get(10)?,
        }
    }};
}

// Every queue query repeats its lane's index predicate,
// `finished_at IS NULL AND runner = 'platform'` (or `'edge'`), word for word
// and with literals, not parameters: SQLite uses a partial index only when
// the query contains its WHERE terms, and PostgreSQL cannot prove a partial
// index's predicate from a bound parameter.
//
// A claim writes only columns that no index reads (status, attempts,
// locked_by, lease_until), so on PostgreSQL it is a heap-only update that
// adds no index entry; a running directive stays at its due time in the
// queue index, and claims step over the running rows at its head. Only a
// directive's end (finished_at) or a retry (next_attempt_at) moves it.

/// The platform lane's index predicate, as its queries must spell it.
const PLATFORM_LANE: &str = "finished_at IS NULL AND runner = 'platform'";
/// The edge lane's index predicate, as its queries must spell it.
const EDGE_LANE: &str = "finished_at IS NULL AND runner = 'edge'";

/// How many directives of one destination a claim may take now.
#[derive(Debug, Clone)]
pub struct DestinationRoom {
    /// The destination's tenant.
    pub tenant: TenantId,
    /// Its name (`args.destination`).
    pub destination: String,
    /// Directives it may be given: its cap less those in flight, or 0 while
    /// its circuit breaker is open (its directives are then stepped over).
    pub room: i64,
}

/// How a platform claim chooses among the due directives.
#[derive(Debug, Clone, Copy)]
pub struct ClaimShape<'a> {
    /// How many of the earliest due directives are looked at (at least the
    /// claim's limit): the batch is shared round-robin among their tenants,
    /// so a tenant with a deep backlog cannot fill it alone.
    pub window: i64,
    /// The room of a destination not listed in `rooms`.
    pub default_room: i64,
    /// Destinations with another room (in flight, their own cap, or a breaker).
    pub rooms: &'a [DestinationRoom],
}

impl ClaimShape<'static> {
    /// The earliest due, whatever their tenant or destination.
    pub const EARLIEST: Self = Self {
        window: 0,
        default_room: i64::MAX,
        rooms: &[],
    };
}

/// Claims up to `limit` due platform-lane directives for `worker`, leased
/// for `lease_ms`, shaped by `shape`: destinations with no room are stepped
/// over, no destination gets more than its room, and among the `window`
/// earliest due the batch goes round-robin by tenant (each tenant's first
/// directive, then each one's second …), oldest first within a round.
pub async fn claim(
    db: &Db,
    worker: &str,
    lease_ms: i64,
    limit: i64,
    shape: ClaimShape<'_>,
) -> Result<Vec<Claimed>> {
    claim_lane(db, Lane::Platform(shape), worker, lease_ms, limit).await
}

/// Claims up to `limit` due edge-lane directives of `tenant` whose kind is
/// one of `kinds`, for the connector `worker`, leased for `lease_ms`. A task
/// whose args name a `connector_id` (its email destination's) goes only to
/// that connector; one that names none, to any of the tenant's.
pub async fn claim_edge(
    db: &Db,
    tenant: TenantId,
    connector: &str,
    kinds: &[String],
    worker: &str,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>> {
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    claim_lane(
        db,
        Lane::Edge {
            tenant,
            connector,
            kinds,
        },
        worker,
        lease_ms,
        limit,
    )
    .await
}

/// Which rows a claim may take.
enum Lane<'a> {
    /// Due platform directives of every tenant.
    Platform(ClaimShape<'a>),
    /// Due edge directives of one tenant, of the given kinds.
    Edge {
        tenant: TenantId,
        /// The claiming connector: a task whose args name another
        /// (`connector_id`, from its email destination) is not its to take.
        connector: &'a str,
        kinds: &'a [String],
    },
}

async fn claim_lane(
    db: &Db,
    lane: Lane<'_>,
    worker: &str,
    lease_ms: i64,
    limit: i64,
) -> Result<Vec<Claimed>> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    let claimed = match tx.inner_mut() {
        TxInner::Postgres(t) => {
            // A plain index scan marks the index entries of finished rows as
            // dead when it meets them, so later claims skip them; a bitmap
            // scan (which the planner prefers on stale statistics) revisits
            // every one of them until autovacuum runs: 40 ms per claim after
            // a burst of 150,000 directives, against 0.2 ms.
            sqlx::query("SET LOCAL enable_bitmapscan = off")
                .execute(&mut **t)
                .await?;
            let returning = RETURNING
                .split(", ")
                .map(|c| format!("d.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rows = match lane {
                Lane::Platform(shape) => {
                    // Two steps in one statement: rank the window's rows
                    // without locking them, then lock only the chosen ones
                    // (SKIP LOCKED, re-checked as still pending). Locking
                    // the whole window would write a row lock to each of
                    // its rows for the few that are claimed.
                    // Without rooms (no destination at its cap, no open
                    // breaker: the usual case) the statement skips their
                    // joins altogether.
                    let shaped = !shape.rooms.is_empty();
                    let (rooms, blocked, join, room) = if shaped {
                        (
                            "rooms AS (SELECT * FROM UNNEST($7::text[], $8::text[], $9::int8[])
                                AS r(tenant_id, destination, room)), ",
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
                            SELECT w.tenant_id, w.id, w.next_attempt_at, w.destination,
                                row_number() OVER (PARTITION BY w.tenant_id, w.destination ORDER BY w.next_attempt_at) AS in_destination,
                                {room} AS room
                            FROM (SELECT tenant_id, id, destination, next_attempt_at FROM directives
                                  WHERE {PLATFORM_LANE} AND status = 'pending' AND next_attempt_at <= $3 {blocked}
                                  ORDER BY next_attempt_at LIMIT $5) w
                            {join}
                         ), chosen AS (
                            SELECT tenant_id, id FROM (
                                SELECT tenant_id, id, next_attempt_at,
                                    row_number() OVER (PARTITION BY tenant_id ORDER BY next_attempt_at) AS in_tenant
                                FROM ranked WHERE destination IS NULL OR in_destination <= room) f
                            ORDER BY in_tenant, next_attempt_at LIMIT $4
                         )
                         UPDATE directives d SET status = 'running', attempts = d.attempts + 1, locked_by = $1,
                            lease_until = $2, updated_at = $3
                         FROM (SELECT l.tenant_id, l.id FROM directives l JOIN chosen ch
                                 ON l.tenant_id = ch.tenant_id AND l.id = ch.id
                               WHERE l.status = 'pending' FOR UPDATE OF l SKIP LOCKED) c
                         WHERE d.tenant_id = c.tenant_id AND d.id = c.id
                         RETURNING {returning}"
                    );
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(worker)
                        .bind(now + lease_ms)
                        .bind(now)
                        .bind(limit)
                        .bind(shape.window.max(limit))
                        .bind(shape.default_room);
                    if shaped {
                        q = q
                            .bind(
                                shape
                                    .rooms
                                    .iter()
                                    .map(|r| r.tenant.to_string())
                                    .collect::<Vec<_>>(),
                            )
                            .bind(
                                shape
                                    .rooms
                                    .iter()
                                    .map(|r| r.destination.clone())
                                    .collect::<Vec<_>>(),
                            )
                            .bind(shape.rooms.iter().map(|r| r.room).collect::<Vec<_>>());
                    }
                    q.fetch_all(&mut **t).await?
                }
                Lane::Edge {
                    tenant,
                    connector,
                    kinds,
                } => {
                    let sql = format!(
                        "UPDATE directives d SET status = 'running', attempts = d.attempts + 1, locked_by = $1,
                            lease_until = $2, updated_at = $3
                         FROM (SELECT tenant_id, id FROM directives
                               WHERE {EDGE_LANE} AND tenant_id = $5 AND kind = ANY($6::text[])
                                 AND COALESCE(args::jsonb ->> 'connector_id', $7) = $7
                                 AND status = 'pending' AND next_attempt_at <= $3
                               ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) c
                         WHERE d.tenant_id = c.tenant_id AND d.id = c.id
                         RETURNING {returning}"
                    );
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(worker)
                        .bind(now + lease_ms)
                        .bind(now)
                        .bind(limit)
                        .bind(tenant.to_string())
                        .bind(kinds.to_vec())
                        .bind(connector)
                        .fetch_all(&mut **t)
                        .await?
                }
            };
            rows.iter()
                .map(|r| Ok(decode_claimed!(r)))
                .collect::<Result<Vec<_>>>()?
        }
        TxInner::Sqlite(t) => {
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
                    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
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
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .bind(worker)
                        .bind(now + lease_ms)
                        .bind(now)
                        .bind(limit)
                        .bind(tenant.to_string())
                        .bind(serde_json::to_string(kinds).map_err(corrupt)?)
                        .bind(connector)
                }
            };
            let rows = q.fetch_all(&mut **t).await?;
            rows.iter()
                .map(|r| Ok(decode_claimed!(r)))
                .collect::<Result<Vec<_>>>()?
        }
    };
    if claimed.is_empty() {
        // Nothing written: a rollback is cheaper than a commit on both backends.
        drop(tx);
    } else {
        tx.commit().await?;
    }
    Ok(claimed)
}

/// One claim held by a worker: the fence of its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// The directive's tenant.
    pub tenant: TenantId,
    /// The directive.
    pub id: DirectiveId,
    /// The attempt the lease is for.
    pub attempt: i32,
}

/// Extends the leases `worker` still holds on `held` (of either lane) to
/// `lease_ms` from now: the heartbeat of a live worker, so leases can be
/// short and a dead worker's work is taken over soon. Writes only
/// `lease_until` (no index reads it). Returns how many were renewed.
pub async fn renew(db: &Db, worker: &str, lease_ms: i64, held: &[Held]) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let rows = crate::json_array(
        held.iter()
            .map(|h| serde_json::json!([h.tenant, h.id, h.attempt])),
    );
    let sql = format!(
        "UPDATE directives SET lease_until = $2
         FROM {k}
         WHERE directives.tenant_id = k.value ->> 0 AND directives.id = k.value ->> 1
           AND directives.attempts = CAST(k.value ->> 2 AS INTEGER) AND directives.locked_by = $3
           AND directives.status = 'running'",
        k = crate::json_rows(db.backend(), 1)
    );
    let mut tx = db.begin().await?;
    let renewed = crate::on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rows)
            .bind(now_ms() + lease_ms)
            .bind(worker)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    tx.commit().await?;
    Ok(renewed)
}

/// Hands claims back unattempted (their attempt count undone), for claims
/// the worker took but must not run now (a destination over its cap, or
/// whose breaker opened meanwhile). Fenced like a completion.
pub async fn unclaim(db: &Db, worker: &str, held: &[Held]) -> Result<u64> {
    if held.is_empty() {
        return Ok(0);
    }
    let rows = crate::json_array(
        held.iter()
            .map(|h| serde_json::json!([h.tenant, h.id, h.attempt])),
    );
    let sql = format!(
        "UPDATE directives SET status = 'pending', attempts = attempts - 1, locked_by = NULL,
            lease_until = NULL, updated_at = $2
         FROM {k}
         WHERE directives.tenant_id = k.value ->> 0 AND directives.id = k.value ->> 1
           AND directives.attempts = CAST(k.value ->> 2 AS INTEGER) AND directives.locked_by = $3
           AND directives.status = 'running'",
        k = crate::json_rows(db.backend(), 1)
    );
    let mut tx = db.begin().await?;
    let n = crate::on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(rows)
            .bind(now_ms())
            .bind(worker)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    tx.mark_due_work();
    tx.commit().await?;
    Ok(n)
}

/// Makes the waiting retries of one destination due now (at most `limit`
/// of them, earliest first, or all): a probe for a half-open circuit
/// breaker, or the backlog of a destination that has recovered, which would
/// otherwise wait out each retry's backoff. Only retries (`attempts > 0`):
/// a directive delayed on purpose (a reminder cancelled by a reply) keeps
/// its time. Returns how many.
pub async fn pull_forward(
    db: &Db,
    tenant: TenantId,
    destination: &str,
    limit: Option<i64>,
) -> Result<u64> {
    let now = now_ms();
    // Scans the destination's unfinished directives by the queue index: a
    // rare call (a breaker's probe or close), so no index of its own.
    let sql = format!(
        "UPDATE directives SET next_attempt_at = $3, updated_at = $3
         WHERE tenant_id = $1 AND id IN (
            SELECT id FROM directives
            WHERE {PLATFORM_LANE} AND tenant_id = $1 AND destination = $2
              AND status = 'pending' AND attempts > 0 AND next_attempt_at > $3
            ORDER BY next_attempt_at LIMIT $4)
           AND {PLATFORM_LANE} AND status = 'pending'"
    );
    let mut tx = db.begin().await?;
    let n = crate::on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant.to_string())
            .bind(destination)
            .bind(now)
            .bind(limit.unwrap_or(i64::MAX))
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    if n > 0 {
        tx.mark_due_work();
    }
    tx.commit().await?;
    Ok(n)
}

/// The end of one attempt, to be written with its directive's new state.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The directive's tenant.
    pub tenant: TenantId,
    /// The directive.
    pub id: DirectiveId,
    /// The attempt's number (the fence, with `worker`).
    pub attempt: i32,
    /// The worker that held the lease.
    pub worker: String,
    /// When the attempt started.
    pub started_at: Millis,
    /// When it ended.
    pub finished_at: Millis,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The receiver's HTTP status.
    pub http_status: Option<i32>,
    /// A receiver-side reference.
    pub external_ref: Option<String>,
    /// When to try again ([`AttemptOutcome::Retrying`] only).
    pub next_attempt_at: Option<Millis>,
    /// What the handler returned on success.
    pub result: Option<Value>,
    /// The result signal to record with it, and the id it gets.
    pub signal: Option<(SignalId, NewSignal)>,
}

impl Completion {
    fn new_status(&self) -> DirectiveStatus {
        match self.outcome {
            AttemptOutcome::Succeeded => DirectiveStatus::Succeeded,
            AttemptOutcome::Retrying | AttemptOutcome::LeaseExpired => DirectiveStatus::Pending,
            AttemptOutcome::Failed => DirectiveStatus::Failed,
        }
    }

    fn finished(&self) -> Option<Millis> {
        self.new_status().is_terminal().then_some(self.finished_at)
    }
}

/// Writes a batch of completions in the caller's transaction: each attempt
/// row, its directive's new state and its result signal. Returns, per
/// completion, whether it still held its lease (and so was written).
pub async fn complete(tx: &mut Tx, batch: &[Completion]) -> Result<Vec<bool>> {
    let now = now_ms();
    let tenants: Vec<String> = batch.iter().map(|c| c.tenant.to_string()).collect();
    let ids: Vec<String> = batch.iter().map(|c| c.id.to_string()).collect();
    let applied: Vec<bool> = match tx.inner_mut() {
        TxInner::Sqlite(t) => {
            // Two hand-offs to the connection's thread, whatever the batch's
            // size (rows as in `json_rows`): the fenced status updates, then
            // the attempt rows and result signals of those that applied.
            // (A statement per row was three hand-offs per completion, and
            // the writer waited on them more than it worked.)
            let updates =
                crate::json_array(batch.iter().zip(&tenants).zip(&ids).map(|((c, t), id)| {
                    serde_json::json!([
                        t,
                        id,
                        c.new_status().as_str(),
                        c.next_attempt_at,
                        c.error,
                        c.result.as_ref().map(Value::to_string),
                        c.finished(),
                        c.worker,
                        c.attempt
                    ])
                }));
            let rows: Vec<(String, String)> = sqlx::query_as(
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
            .fetch_all(&mut **t)
            .await?;
            let applied = applied_of(&tenants, &ids, rows.into_iter().collect());
            let done: Vec<(&Completion, &String, &String)> = batch
                .iter()
                .zip(&tenants)
                .zip(&ids)
                .zip(&applied)
                .filter(|(_, a)| **a)
                .map(|(((c, t), id), _)| (c, t, id))
                .collect();
            if !done.is_empty() {
                let attempts = crate::json_array(done.iter().map(|(c, t, id)| {
                    serde_json::json!([
                        t,
                        id,
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
                let signals = crate::json_array(done.iter().filter_map(|(c, ..)| {
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
                    .execute(&mut **t)
                    .await?;
            }
            applied
        }
        TxInner::Postgres(t) => {
            // One statement: the fenced status updates, then the attempt
            // rows and result signals of the completions they applied to
            // (data-modifying CTEs see the update's RETURNING rows).
            let col =
                |f: &dyn Fn(&Completion) -> Option<String>| batch.iter().map(f).collect::<Vec<_>>();
            let signal = |f: &dyn Fn(&SignalId, &NewSignal) -> Option<String>| {
                col(&|c| c.signal.as_ref().and_then(|(id, s)| f(id, s)))
            };
            let rows = sqlx::query(
                "WITH u AS (
                    SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[],
                        $7::int8[], $8::text[], $9::int4[], $10::int8[], $11::int8[], $12::text[], $13::int4[],
                        $14::text[], $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                        $21::int8[])
                    AS u(tenant_id, id, status, next_at, error, result, finished, worker, attempt, started_at,
                        ended_at, outcome, http_status, external_ref, signal_id, signal_type, subject, payload,
                        dedupe_key, caused_by, occurred_at)
                 ), done AS (
                    UPDATE directives d SET status = u.status, next_attempt_at = COALESCE(u.next_at, d.next_attempt_at),
                        locked_by = NULL, lease_until = NULL, last_error = COALESCE(u.error, d.last_error),
                        result = u.result, finished_at = u.finished, updated_at = $22
                    FROM u
                    WHERE d.tenant_id = u.tenant_id AND d.id = u.id AND d.status = 'running'
                        AND d.locked_by = u.worker AND d.attempts = u.attempt
                    RETURNING d.tenant_id, d.id
                 ), attempts AS (
                    INSERT INTO directive_attempts (tenant_id, directive_id, number, worker, started_at, finished_at,
                        outcome, error, http_status, external_ref)
                    SELECT u.tenant_id, u.id, u.attempt, u.worker, u.started_at, u.ended_at, u.outcome, u.error,
                        u.http_status, u.external_ref
                    FROM u JOIN done ON done.tenant_id = u.tenant_id AND done.id = u.id
                    ON CONFLICT (tenant_id, directive_id, number) DO NOTHING
                 ), results AS (
                    INSERT INTO signals (tenant_id, id, type, subject, payload, dedupe_key, caused_by, occurred_at,
                        recorded_at)
                    SELECT u.tenant_id, u.signal_id, u.signal_type, u.subject, u.payload, u.dedupe_key, u.caused_by,
                        u.occurred_at, $22
                    FROM u JOIN done ON done.tenant_id = u.tenant_id AND done.id = u.id
                    WHERE u.signal_id IS NOT NULL
                    ON CONFLICT (tenant_id, dedupe_key) DO NOTHING
                 )
                 SELECT tenant_id, id FROM done",
            )
            .bind(&tenants)
            .bind(&ids)
            .bind(col(&|c| Some(c.new_status().as_str().to_owned())))
            .bind(batch.iter().map(|c| c.next_attempt_at).collect::<Vec<_>>())
            .bind(col(&|c| c.error.clone()))
            .bind(col(&|c| c.result.as_ref().map(Value::to_string)))
            .bind(batch.iter().map(Completion::finished).collect::<Vec<_>>())
            .bind(col(&|c| Some(c.worker.clone())))
            .bind(batch.iter().map(|c| c.attempt).collect::<Vec<_>>())
            .bind(batch.iter().map(|c| c.started_at).collect::<Vec<_>>())
            .bind(batch.iter().map(|c| c.finished_at).collect::<Vec<_>>())
            .bind(col(&|c| Some(c.outcome.as_str().to_owned())))
            .bind(batch.iter().map(|c| c.http_status).collect::<Vec<_>>())
            .bind(col(&|c| c.external_ref.clone()))
            .bind(signal(&|id, _| Some(id.to_string())))
            .bind(signal(&|_, s| Some(s.signal_type.to_string())))
            .bind(signal(&|_, s| Some(s.subject.to_string())))
            .bind(signal(&|_, s| Some(s.payload.to_string())))
            .bind(signal(&|_, s| Some(s.dedupe_key.clone())))
            .bind(signal(&|_, s| s.caused_by.map(|d| d.to_string())))
            .bind(
                batch
                    .iter()
                    .map(|c| c.signal.as_ref().map(|(_, s)| s.occurred_at))
                    .collect::<Vec<_>>(),
            )
            .bind(now)
            .fetch_all(&mut **t)
            .await?;
            let written = rows
                .iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
                .collect::<Result<_>>()?;
            applied_of(&tenants, &ids, written)
        }
    };
    if batch
        .iter()
        .zip(&applied)
        .any(|(c, a)| *a && c.next_attempt_at.is_some_and(|t| t <= now))
    {
        tx.mark_due_work();
    }
    Ok(applied)
}

/// Per completion (given by tenant and id), whether its update applied:
/// whether `written`, the updates' returned keys, holds it.
fn applied_of(
    tenants: &[String],
    ids: &[String],
    written: std::collections::HashSet<(String, String)>,
) -> Vec<bool> {
    tenants
        .iter()
        .zip(ids)
        .map(|(t, id)| written.contains(&(t.clone(), id.clone())))
        .collect()
}

/// A directive whose worker stopped renewing its lease.
#[derive(Debug, Clone)]
pub struct Expired {
    /// Its tenant.
    pub tenant: TenantId,
    /// The directive.
    pub id: DirectiveId,
    /// The attempt that was lost.
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// The worker that held it.
    pub worker: String,
    /// When that attempt was claimed.
    pub claimed_at: Millis,
    /// What it is about.
    pub subject: Option<String>,
    /// Its handler.
    pub kind: String,
}

/// Directives of either lane whose lease ran out before `now`.
pub async fn expired_leases(db: &Db, now: Millis, limit: i64) -> Result<Vec<Expired>> {
    let mut expired = expired_in(db, PLATFORM_LANE, now, limit).await?;
    expired.extend(expired_in(db, EDGE_LANE, now, limit).await?);
    Ok(expired)
}

async fn expired_in(db: &Db, lane: &str, now: Millis, limit: i64) -> Result<Vec<Expired>> {
    let sql = format!(
        "SELECT tenant_id, id, attempts, max_attempts, locked_by, updated_at, subject, kind FROM directives
         WHERE {lane} AND next_attempt_at < $1 AND status = 'running' AND lease_until < $1
         ORDER BY next_attempt_at LIMIT $2"
    );
    on_db!(db, c => {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(c)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Expired {
                    tenant: r.try_get::<String, _>(0)?.parse().map_err(corrupt)?,
                    id: r.try_get::<String, _>(1)?.parse().map_err(corrupt)?,
                    attempt: r.try_get(2)?,
                    max_attempts: r.try_get(3)?,
                    worker: r.try_get::<Option<String>, _>(4)?.unwrap_or_default(),
                    claimed_at: r.try_get(5)?,
                    subject: r.try_get(6)?,
                    kind: r.try_get(7)?,
                })
            })
            .collect()
    })
}

/// Ends now the leases `worker` holds on platform directives, so that the
/// next reaper pass (on any node) records those attempts as lost and runs
/// them again at once, instead of after the lease. A stopping node calls
/// this for the attempts its drain deadline cut short. Returns how many.
pub async fn release_leases(db: &Db, worker: &str, now: Millis) -> Result<u64> {
    let sql = format!(
        "UPDATE directives SET lease_until = $2
         WHERE {PLATFORM_LANE} AND status = 'running' AND locked_by = $1 AND lease_until >= $2"
    );
    // In a transaction: on SQLite only the writer connection may write.
    let mut tx = db.begin().await?;
    let n = on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(worker)
            .bind(now - 1)
            .execute(c)
            .await?
            .rows_affected()
    });
    tx.commit().await?;
    Ok(n)
}

/// Counts due-or-delayed pending platform directives and the age of the
/// oldest due one: the platform workers' backlog.
pub async fn backlog(db: &Db) -> Result<(i64, Option<Millis>)> {
    lane_backlog(db, PLATFORM_LANE).await
}

/// The same for edge tasks, which wait for their tenants' connectors.
pub async fn edge_backlog(db: &Db) -> Result<(i64, Option<Millis>)> {
    lane_backlog(db, EDGE_LANE).await
}

async fn lane_backlog(db: &Db, lane: &str) -> Result<(i64, Option<Millis>)> {
    let now = now_ms();
    let sql = format!(
        "SELECT COUNT(*), MIN(CASE WHEN next_attempt_at <= $1 THEN next_attempt_at END)
         FROM directives WHERE {lane} AND status = 'pending'"
    );
    on_db!(db, c => {
        let (count, oldest): (i64, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_one(c)
            .await?;
        Ok((count, oldest.map(|o| now - o)))
    })
}

/// Counts failed directives (the dead letters), across tenants.
pub async fn failed_count(db: &Db) -> Result<i64> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM directives WHERE status = 'failed'")
            .fetch_one(c)
            .await?)
    })
}
