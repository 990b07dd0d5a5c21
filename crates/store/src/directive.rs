//! Creating, reading, cancelling and re-driving directives.
//!
//! A directive row is also its job: creating one inside the caller's
//! transaction is all it takes to schedule work, so a state change and the
//! work that follows from it commit together.

use crate::{Db, JsonText, Result, StoreError, Tx, corrupt, on_db, on_tx};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{
    AttemptOutcome, DirectiveId, DirectiveKind, DirectiveStatus, Origin, RetryPolicy, SignalId,
    TenantId,
};
use serde::Serialize;
use serde_json::Value;

/// A directive about to be created.
#[derive(Debug, Clone)]
pub struct NewDirective {
    /// Its id, chosen by the caller.
    pub id: DirectiveId,
    /// Which handler runs it.
    pub kind: DirectiveKind,
    /// The handler's arguments.
    pub args: Value,
    /// Unique per tenant: a second directive with this key is not created.
    pub dedupe_key: String,
    /// What it is about, for the timeline.
    pub subject: Option<String>,
    /// How it is retried.
    pub retry: RetryPolicy,
    /// When it may first run (now, or later for a delayed directive).
    pub run_at: Millis,
    /// Who or what created it.
    pub origin: Origin,
    /// The signal that caused it.
    pub caused_by: Option<SignalId>,
}

/// What creating a directive did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// A new directive (and so a new job) was stored.
    New(DirectiveId),
    /// The tenant already had a directive with this dedupe key.
    Existing(DirectiveId),
}

impl Created {
    /// The directive's id either way.
    pub fn id(self) -> DirectiveId {
        match self {
            Self::New(id) | Self::Existing(id) => id,
        }
    }
}

/// The rule a directive came from, kept in its own column so cancel-on can
/// find a rule's pending directives.
fn rule_of(origin: &Origin) -> Option<String> {
    match origin {
        Origin::Rule { rule_id, .. } => Some(rule_id.clone()),
        _ => None,
    }
}

/// The destination a directive delivers to: by the platform's convention,
/// the name in its `args.destination`. Kept in a column of its own for the
/// claim's per-destination caps and circuit breakers ([`crate::queue`]).
pub fn destination_of(args: &Value) -> Option<&str> {
    args.get("destination").and_then(Value::as_str)
}

/// Creates a directive unless its dedupe key is taken.
pub async fn insert(tx: &mut Tx, tenant: TenantId, d: &NewDirective) -> Result<Created> {
    let mut created = insert_many(tx, &[(tenant, d.clone())]).await?;
    created
        .pop()
        .ok_or_else(|| corrupt("no directive inserted"))
}

/// Creates many directives, of any tenants, and says per directive whether
/// it is new or which directive already held its dedupe key (an earlier one
/// in `ds` included): one insert, plus one lookup when some were
/// deduplicated, whatever the count (rows as in [`crate::json_rows`]).
pub async fn insert_many(tx: &mut Tx, ds: &[(TenantId, NewDirective)]) -> Result<Vec<Created>> {
    if ds.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_ms();
    let mut rows = Vec::with_capacity(ds.len());
    for (tenant, d) in ds {
        rows.push(serde_json::json!([
            tenant,
            d.id,
            d.kind.as_str(),
            d.args.to_string(),
            d.dedupe_key,
            d.subject,
            d.retry.max_attempts,
            serde_json::to_string(&d.retry).map_err(corrupt)?,
            d.run_at,
            serde_json::to_string(&d.origin).map_err(corrupt)?,
            d.caused_by,
            rule_of(&d.origin),
            d.kind.runner().as_str(),
            destination_of(&d.args),
        ]));
    }
    let rows = crate::json_array(rows.into_iter());
    let k = crate::json_rows(tx.backend(), 1);
    // `WHERE true`: SQLite needs it to tell the upsert clause from a join.
    let insert = format!(
        "INSERT INTO directives (tenant_id, id, kind, args, dedupe_key, subject, status, attempts,
            max_attempts, retry_policy, next_attempt_at, origin, caused_by, created_at, updated_at, rule_id,
            runner, destination)
         SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
            'pending', 0, CAST(k.value ->> 6 AS INTEGER), k.value ->> 7, CAST(k.value ->> 8 AS BIGINT),
            k.value ->> 9, k.value ->> 10, $2, $2, k.value ->> 11, k.value ->> 12, k.value ->> 13
         FROM {k} WHERE true ORDER BY k.key
         ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id"
    );
    let new_ids: Vec<DirectiveId> = on_tx!(tx, c => {
        sqlx::query_scalar(sqlx::AssertSqlSafe(insert))
            .bind(&rows)
            .bind(now)
            .fetch_all(&mut *c)
            .await?
    });
    let new_ids: std::collections::HashSet<DirectiveId> = new_ids.into_iter().collect();
    let is_new = |d: &NewDirective| new_ids.contains(&d.id);
    let mut holders = std::collections::HashMap::new();
    if new_ids.len() < ds.len() {
        let taken = crate::json_array(
            ds.iter()
                .filter(|(_, d)| !is_new(d))
                .map(|(t, d)| serde_json::json!([t, d.dedupe_key])),
        );
        let lookup = format!(
            "SELECT d.tenant_id, d.dedupe_key, d.id FROM {k} JOIN directives d
               ON d.tenant_id = k.value ->> 0 AND d.dedupe_key = k.value ->> 1"
        );
        let found: Vec<(TenantId, String, DirectiveId)> = on_tx!(tx, c => {
            sqlx::query_as(sqlx::AssertSqlSafe(lookup))
                .bind(&taken)
                .fetch_all(&mut *c)
                .await?
        });
        for (tenant, key, id) in found {
            holders.insert((tenant, key), id);
        }
    }
    let mut out = Vec::with_capacity(ds.len());
    let mut wake = false;
    for (tenant, d) in ds {
        if is_new(d) {
            // Only the platform lane has workers to wake; edge tasks wait
            // for a connector's claim.
            wake |= d.run_at <= now && d.kind.runner() == fleetprompt_core::Runner::Platform;
            out.push(Created::New(d.id));
        } else {
            let holder = holders
                .get(&(*tenant, d.dedupe_key.clone()))
                .ok_or_else(|| corrupt(format!("dedupe key {} has no directive", d.dedupe_key)))?;
            out.push(Created::Existing(*holder));
        }
    }
    if wake {
        tx.mark_due_work();
    }
    Ok(out)
}

/// A stored directive.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DirectiveRow {
    /// Its id.
    pub id: DirectiveId,
    /// Its handler.
    pub kind: String,
    /// The handler's arguments.
    #[sqlx(try_from = "JsonText<Value>")]
    pub args: Value,
    /// Its dedupe key.
    pub dedupe_key: String,
    /// What it is about.
    pub subject: Option<String>,
    /// Where it is in its life.
    pub status: DirectiveStatus,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed in all.
    pub max_attempts: i32,
    /// Its retry policy.
    #[sqlx(try_from = "JsonText<RetryPolicy>")]
    pub retry_policy: RetryPolicy,
    /// When it may next run (pending only).
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub next_attempt_at: Millis,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// What the handler returned on success.
    #[sqlx(try_from = "JsonText<Option<Value>>")]
    pub result: Option<Value>,
    /// Who or what created it.
    #[sqlx(try_from = "JsonText<Origin>")]
    pub origin: Origin,
    /// The signal that caused it.
    pub caused_by: Option<SignalId>,
    /// When it was created.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub created_at: Millis,
    /// When it last changed.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub updated_at: Millis,
    /// When it reached a final status.
    #[serde(serialize_with = "crate::timeline::ser_opt_ms")]
    pub finished_at: Option<Millis>,
}

pub(crate) const COLUMNS: &str =
    "id, kind, args, dedupe_key, subject, status, attempts, max_attempts, retry_policy,
    next_attempt_at, last_error, result, origin, caused_by, created_at, updated_at, finished_at";

/// Reads one directive.
pub async fn get(db: &Db, tenant: TenantId, id: DirectiveId) -> Result<DirectiveRow> {
    let sql = format!("SELECT {COLUMNS} FROM directives WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("directive"))
    })
}

/// Lists a tenant's directives, newest first, optionally of one status.
pub async fn list(
    db: &Db,
    tenant: TenantId,
    status: Option<DirectiveStatus>,
    limit: i64,
) -> Result<Vec<DirectiveRow>> {
    let filter = ListFilter {
        status,
        ..ListFilter::default()
    };
    list_page(db, tenant, &filter, limit).await
}

/// What a page of [`list_page`] holds: at most one status and one kind,
/// and only directives older than `before` (the last id of the previous
/// page), so pages stay stable while new directives arrive.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only this status.
    pub status: Option<DirectiveStatus>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only ids below this one (ids grow with time).
    pub before: Option<DirectiveId>,
}

/// A page of a tenant's directives, newest first, read by keyset (the
/// primary key's order), so a deep page costs what the first one does.
pub async fn list_page(
    db: &Db,
    tenant: TenantId,
    filter: &ListFilter,
    limit: i64,
) -> Result<Vec<DirectiveRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM directives WHERE tenant_id = $1 AND ($2 IS NULL OR status = $2)
         AND ($3 IS NULL OR kind = $3) AND ($4 IS NULL OR id < $4)
         ORDER BY id DESC LIMIT $5"
    );
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(filter.status)
            .bind(filter.kind.as_deref())
            .bind(filter.before)
            .bind(limit)
            .fetch_all(c)
            .await?)
    })
}

/// Counts a tenant's directives by status.
pub async fn count_by_status(db: &Db, tenant: TenantId) -> Result<Vec<(String, i64)>> {
    on_db!(db, c => {
        Ok(sqlx::query_as(
            "SELECT status, COUNT(*) FROM directives WHERE tenant_id = $1 GROUP BY status ORDER BY status",
        )
        .bind(tenant)
        .fetch_all(c)
        .await?)
    })
}

/// Counts the directives a rule created for a tenant.
pub async fn count_of_rule(db: &Db, tenant: TenantId, rule_id: &str) -> Result<i64> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM directives WHERE tenant_id = $1 AND rule_id = $2")
            .bind(tenant)
            .bind(rule_id)
            .fetch_one(c)
            .await?)
    })
}

/// Counts a tenant's recorded attempts.
pub async fn count_attempts(db: &Db, tenant: TenantId) -> Result<i64> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM directive_attempts WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(c)
            .await?)
    })
}

/// Start latency of a tenant's first attempts: first attempt start minus
/// directive creation, in milliseconds.
pub async fn start_latencies_ms(db: &Db, tenant: TenantId) -> Result<Vec<i64>> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar(
            "SELECT a.started_at - d.created_at FROM directive_attempts a
             JOIN directives d ON d.tenant_id = a.tenant_id AND d.id = a.directive_id
             WHERE a.tenant_id = $1 AND a.number = 1 ORDER BY 1",
        )
        .bind(tenant)
        .fetch_all(c)
        .await?)
    })
}

/// One attempt of a directive.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AttemptRow {
    /// The directive it belongs to.
    pub directive_id: DirectiveId,
    /// 1-based attempt number.
    pub number: i32,
    /// The worker that ran it.
    pub worker: String,
    /// When it started.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub started_at: Millis,
    /// When it ended.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub finished_at: Millis,
    /// How it ended.
    pub outcome: AttemptOutcome,
    /// The error, if it failed.
    pub error: Option<String>,
    /// The receiver's HTTP status, if there was one.
    pub http_status: Option<i32>,
    /// A receiver-side reference (error id, message id …).
    pub external_ref: Option<String>,
}

pub(crate) const ATTEMPT_COLUMNS: &str = "directive_id, number, worker, started_at, finished_at, outcome, error, http_status, external_ref";

/// A directive's attempts in order.
pub async fn attempts(db: &Db, tenant: TenantId, id: DirectiveId) -> Result<Vec<AttemptRow>> {
    let sql = format!(
        "SELECT {ATTEMPT_COLUMNS} FROM directive_attempts WHERE tenant_id = $1 AND directive_id = $2 ORDER BY number"
    );
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_all(c)
            .await?)
    })
}

async fn status_of(tx: &mut Tx, tenant: TenantId, id: DirectiveId) -> Result<DirectiveStatus> {
    let s: Option<DirectiveStatus> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT status FROM directives WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    });
    s.ok_or(StoreError::not_found("directive"))
}

/// Cancels a pending directive. Running or finished ones cannot be cancelled.
pub async fn cancel(tx: &mut Tx, tenant: TenantId, id: DirectiveId) -> Result<()> {
    let now = now_ms();
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE directives SET status = 'cancelled', finished_at = $3, updated_at = $3
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending'",
        )
        .bind(tenant)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        let status = status_of(tx, tenant, id).await?;
        return Err(StoreError::InvalidState(format!(
            "directive is {}; only a pending directive can be cancelled",
            status.as_str()
        )));
    }
    Ok(())
}

/// Re-drives a failed or cancelled directive: pending now, with a fresh
/// budget of attempts from its retry policy.
pub async fn redrive(tx: &mut Tx, tenant: TenantId, id: DirectiveId) -> Result<()> {
    let now = now_ms();
    let policy: Option<JsonText<RetryPolicy>> = on_tx!(tx, c => {
        sqlx::query_scalar("SELECT retry_policy FROM directives WHERE tenant_id = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut *c)
            .await?
    });
    let policy = RetryPolicy::from(policy.ok_or(StoreError::not_found("directive"))?);
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE directives SET status = 'pending', next_attempt_at = $3, updated_at = $3, finished_at = NULL,
                max_attempts = attempts + $4
             WHERE tenant_id = $1 AND id = $2 AND status IN ('failed', 'cancelled')",
        )
        .bind(tenant)
        .bind(id)
        .bind(now)
        .bind(policy.max_attempts as i32)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n == 0 {
        let status = status_of(tx, tenant, id).await?;
        return Err(StoreError::InvalidState(format!(
            "directive is {}; only a failed or cancelled directive can be retried",
            status.as_str()
        )));
    }
    tx.mark_due_work();
    Ok(())
}

/// Cancels a subject's pending directives created by the given rules and
/// kinds (a rule's `cancel_on`): the signal that makes them moot arrived
/// first. Returns the cancelled ids.
pub async fn cancel_pending_of_rules(
    tx: &mut Tx,
    tenant: TenantId,
    subject: &str,
    targets: &[(String, String)],
    reason: &str,
) -> Result<Vec<DirectiveId>> {
    let now = now_ms();
    let mut cancelled = Vec::new();
    for (rule_id, kind) in targets {
        let ids: Vec<DirectiveId> = on_tx!(tx, c => {
            sqlx::query_scalar(
                "UPDATE directives SET status = 'cancelled', finished_at = $5, updated_at = $5, last_error = $6
                 WHERE tenant_id = $1 AND subject = $2 AND rule_id = $3 AND kind = $4 AND status = 'pending'
                 RETURNING id",
            )
            .bind(tenant)
            .bind(subject)
            .bind(rule_id)
            .bind(kind)
            .bind(now)
            .bind(reason)
            .fetch_all(&mut *c)
            .await?
        });
        cancelled.extend(ids);
    }
    Ok(cancelled)
}

/// Whether a tenant already has a directive with this dedupe key.
pub async fn dedupe_key_taken(db: &Db, tenant: TenantId, key: &str) -> Result<bool> {
    on_db!(db, c => {
        let found: Option<String> = sqlx::query_scalar("SELECT id FROM directives WHERE tenant_id = $1 AND dedupe_key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(c)
            .await?;
        Ok(found.is_some())
    })
}

/// A directive a rule created for a signal, as a backtest compares it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleDirective {
    /// The rule that created it.
    pub rule_id: String,
    /// Its kind.
    pub kind: String,
    /// Its arguments.
    #[sqlx(try_from = "JsonText<Value>")]
    pub args: Value,
    /// Its dedupe key.
    pub dedupe_key: String,
    /// The signal that caused it.
    pub caused_by: SignalId,
}

/// The directives rules created for a tenant's signals recorded in
/// `[since, until)`, in the order the signals were recorded.
pub async fn created_by_rules(
    db: &Db,
    tenant: TenantId,
    since: Millis,
    until: Millis,
) -> Result<Vec<RuleDirective>> {
    on_db!(db, c => {
        Ok(sqlx::query_as(
            "SELECT d.rule_id, d.kind, d.args, d.dedupe_key, d.caused_by FROM directives d
             JOIN signals s ON s.tenant_id = d.tenant_id AND s.id = d.caused_by
             WHERE d.tenant_id = $1 AND d.rule_id IS NOT NULL
               AND s.recorded_at >= $2 AND s.recorded_at < $3
             ORDER BY s.recorded_at, s.id, d.id",
        )
        .bind(tenant)
        .bind(since)
        .bind(until)
        .fetch_all(c)
        .await?)
    })
}

/// A directive not yet finished that delivers to a destination.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Unfinished {
    /// Its id.
    pub id: DirectiveId,
    /// Its kind.
    pub kind: String,
    /// `pending` or `running`.
    pub status: DirectiveStatus,
}

/// The pending and running directives that deliver to the destination
/// `name` (its column, [`destination_of`]), oldest first, at most `limit`.
pub async fn unfinished_for_destination(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
    limit: i64,
) -> Result<Vec<Unfinished>> {
    Ok(on_tx!(tx, c => {
        sqlx::query_as(
            "SELECT id, kind, status FROM directives
             WHERE tenant_id = $1 AND destination = $2 AND status IN ('pending', 'running')
             ORDER BY created_at, id LIMIT $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?
    }))
}

/// Cancels every pending and running directive that delivers to the
/// destination `name`, recording `reason` as its last error. A running
/// one's attempt may still finish outside, but its completion no longer
/// applies (completions are fenced on `running`). Returns the cancelled ids.
pub async fn cancel_for_destination(
    tx: &mut Tx,
    tenant: TenantId,
    name: &str,
    reason: &str,
) -> Result<Vec<DirectiveId>> {
    let now = now_ms();
    Ok(on_tx!(tx, c => {
        sqlx::query_scalar(
            "UPDATE directives SET status = 'cancelled', finished_at = $3, updated_at = $3, last_error = $4
             WHERE tenant_id = $1 AND destination = $2 AND status IN ('pending', 'running')
             RETURNING id",
        )
        .bind(tenant)
        .bind(name)
        .bind(now)
        .bind(reason)
        .fetch_all(&mut *c)
        .await?
    }))
}

/// Brings a pending directive's next attempt forward to now, if it was
/// waiting for later (a rule's delay): someone asked for it at once.
pub async fn run_now_if_waiting(tx: &mut Tx, tenant: TenantId, id: DirectiveId) -> Result<bool> {
    let now = now_ms();
    let n = on_tx!(tx, c => {
        sqlx::query(
            "UPDATE directives SET next_attempt_at = $3, updated_at = $3
             WHERE tenant_id = $1 AND id = $2 AND status = 'pending' AND next_attempt_at > $3",
        )
        .bind(tenant)
        .bind(id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    if n > 0 {
        tx.mark_due_work();
    }
    Ok(n > 0)
}
