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
//!
//! The claim and the completion are a statement (or two) of each backend's
//! own, tuned to it: they live in `postgres.rs` and `sqlite.rs`, behind
//! [`Dialect`]; everything else here is shared SQL.

mod postgres;
mod sqlite;

use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{
    AttemptOutcome, DirectiveId, DirectiveStatus, NewSignal, RetryPolicy, SignalId, TenantId,
};
use serde_json::Value;

use self::postgres::Postgres;
use self::sqlite::Sqlite;
use crate::db::TxInner;
use crate::{Db, JsonText, Result, Tx, on_db, on_tx};

/// The queue's statements that differ per backend, on a connection inside
/// the caller's transaction.
trait Dialect {
    /// The backend's connection.
    type Conn;

    /// Claims up to `limit` due directives of `lane` for `worker`, leased
    /// until `now + lease_ms` ([`claim`], [`claim_edge`]).
    async fn claim(
        conn: &mut Self::Conn,
        lane: Lane<'_>,
        worker: &str,
        lease_ms: i64,
        limit: i64,
        now: Millis,
    ) -> Result<Vec<Claimed>>;

    /// Writes `batch` ([`complete`]); per completion, whether it applied.
    async fn complete(
        conn: &mut Self::Conn,
        batch: &[Completion],
        now: Millis,
    ) -> Result<Vec<bool>>;
}

/// A directive claimed for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    /// Its tenant.
    #[sqlx(rename = "tenant_id")]
    pub tenant: TenantId,
    /// Its id.
    pub id: DirectiveId,
    /// Its handler.
    pub kind: String,
    /// The handler's arguments.
    #[sqlx(try_from = "JsonText<Value>")]
    pub args: Value,
    /// Its dedupe key: a deterministic idempotency key for receivers.
    pub dedupe_key: String,
    /// What it is about.
    pub subject: Option<String>,
    /// This attempt's number, 1-based.
    #[sqlx(rename = "attempts")]
    pub attempt: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// How it is retried.
    #[sqlx(try_from = "JsonText<RetryPolicy>")]
    pub retry_policy: RetryPolicy,
    /// The signal that caused it.
    pub caused_by: Option<SignalId>,
    /// The destination it delivers to (`args.destination`), if any.
    pub destination: Option<String>,
}

const RETURNING: &str = "tenant_id, id, kind, args, dedupe_key, subject, attempts, max_attempts, retry_policy, caused_by, destination";

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
        TxInner::Postgres(t) => Postgres::claim(t, lane, worker, lease_ms, limit, now).await?,
        TxInner::Sqlite(t) => Sqlite::claim(t, lane, worker, lease_ms, limit, now).await?,
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
            .bind(tenant)
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
    let applied = match tx.inner_mut() {
        TxInner::Sqlite(t) => Sqlite::complete(t, batch, now).await?,
        TxInner::Postgres(t) => Postgres::complete(t, batch, now).await?,
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

/// Per completion, whether its update applied: whether `written`, the
/// updates' returned keys, holds it.
fn applied_of(
    batch: &[Completion],
    written: std::collections::HashSet<(TenantId, DirectiveId)>,
) -> Vec<bool> {
    batch
        .iter()
        .map(|c| written.contains(&(c.tenant, c.id)))
        .collect()
}

/// A directive whose worker stopped renewing its lease.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Expired {
    /// Its tenant.
    #[sqlx(rename = "tenant_id")]
    pub tenant: TenantId,
    /// The directive.
    pub id: DirectiveId,
    /// The attempt that was lost.
    #[sqlx(rename = "attempts")]
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
        "SELECT tenant_id, id, attempts, max_attempts, COALESCE(locked_by, '') AS worker,
            updated_at AS claimed_at, subject, kind FROM directives
         WHERE {lane} AND next_attempt_at < $1 AND status = 'running' AND lease_until < $1
         ORDER BY next_attempt_at LIMIT $2"
    );
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .bind(limit)
            .fetch_all(c)
            .await?)
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
