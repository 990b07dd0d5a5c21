//! Recording and reading signals.

use crate::timeline::Span;
use crate::{Db, JsonText, Result, StoreError, Tx, on_db, on_tx};
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{DirectiveId, NewSignal, SignalId, TenantId};
use serde::Serialize;
use serde_json::Value;

/// What recording a signal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The signal's id: new, or the one already holding the dedupe key.
    pub id: SignalId,
    /// Whether the tenant already had a signal with this dedupe key.
    pub duplicate: bool,
    /// When the signal was recorded.
    pub recorded_at: Millis,
}

/// A new signal as one row of the JSON array [`insert_json_rows`] reads, for
/// statements that write many rows at once (rows as in [`crate::json_rows`]).
pub(crate) fn json_row(
    tenant: TenantId,
    id: SignalId,
    s: &NewSignal,
    recorded_at: Millis,
) -> Value {
    serde_json::json!([
        tenant,
        id,
        s.signal_type.as_str(),
        s.subject.as_str(),
        s.payload.to_string(),
        s.dedupe_key,
        s.caused_by,
        s.occurred_at,
        recorded_at
    ])
}

/// The statement that inserts the signals of the JSON rows `k` (made by
/// [`json_row`]), in their order, skipping any whose dedupe key the tenant
/// already has.
pub(crate) fn insert_json_rows(k: &str) -> String {
    // `WHERE true`: SQLite needs it to tell the upsert clause from a join.
    format!(
        "INSERT INTO signals (tenant_id, id, type, subject, payload, dedupe_key, caused_by, occurred_at, recorded_at)
         SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
                k.value ->> 6, CAST(k.value ->> 7 AS BIGINT), CAST(k.value ->> 8 AS BIGINT)
         FROM {k} WHERE true ORDER BY k.key
         ON CONFLICT (tenant_id, dedupe_key) DO NOTHING"
    )
}

/// Records a signal unless the tenant already has its dedupe key.
pub async fn insert(tx: &mut Tx, tenant: TenantId, s: &NewSignal) -> Result<Recorded> {
    let id = SignalId::new();
    let now = now_ms();
    let inserted: Option<SignalId> = on_tx!(tx, c => {
        sqlx::query_scalar(
            "INSERT INTO signals (tenant_id, id, type, subject, payload, dedupe_key, caused_by, occurred_at, recorded_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant_id, dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(tenant)
        .bind(id)
        .bind(s.signal_type.as_str())
        .bind(s.subject.as_str())
        .bind(s.payload.to_string())
        .bind(&s.dedupe_key)
        .bind(s.caused_by)
        .bind(s.occurred_at)
        .bind(now)
        .fetch_optional(&mut *c)
        .await?
    });
    if inserted.is_some() {
        return Ok(Recorded {
            id,
            duplicate: false,
            recorded_at: now,
        });
    }
    let (existing, recorded_at): (SignalId, i64) = on_tx!(tx, c => {
        sqlx::query_as("SELECT id, recorded_at FROM signals WHERE tenant_id = $1 AND dedupe_key = $2")
            .bind(tenant)
            .bind(&s.dedupe_key)
            .fetch_one(&mut *c)
            .await?
    });
    Ok(Recorded {
        id: existing,
        duplicate: true,
        recorded_at,
    })
}

/// A stored signal.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct SignalRow {
    /// Its id.
    pub id: SignalId,
    /// Its type.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
    pub signal_type: String,
    /// What it is about.
    pub subject: String,
    /// Its payload.
    #[sqlx(try_from = "JsonText<Value>")]
    pub payload: Value,
    /// Its dedupe key.
    pub dedupe_key: String,
    /// The directive whose outcome it reports.
    pub caused_by: Option<DirectiveId>,
    /// When it happened.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub occurred_at: Millis,
    /// When it was recorded.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub recorded_at: Millis,
}

pub(crate) const COLUMNS: &str =
    "id, type, subject, payload, dedupe_key, caused_by, occurred_at, recorded_at";

/// Reads one signal.
pub async fn get(db: &Db, tenant: TenantId, id: SignalId) -> Result<SignalRow> {
    let sql = format!("SELECT {COLUMNS} FROM signals WHERE tenant_id = $1 AND id = $2");
    on_db!(db, c => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(c)
            .await?
            .ok_or(StoreError::not_found("signal"))
    })
}

/// A subject's signals recorded within `span`, in the order they were
/// recorded.
pub async fn list_by_subject(
    db: &Db,
    tenant: TenantId,
    subject: &str,
    span: Span,
) -> Result<Vec<SignalRow>> {
    // SQLite keeps no statistics here (the engine analyzes PostgreSQL
    // only), and without them it takes the tenant's time index, which spares
    // the sort but reads every signal of the tenant; the subject's index
    // reads this subject's alone.
    let table = match db.backend() {
        crate::Backend::Sqlite => "signals INDEXED BY signals_by_subject",
        crate::Backend::Postgres => "signals",
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM {table} WHERE tenant_id = $1 AND subject = $2
           AND ($3 IS NULL OR recorded_at >= $3) AND ($4 IS NULL OR recorded_at < $4)
         ORDER BY recorded_at, id LIMIT 10000"
    );
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(subject)
            .bind(span.from)
            .bind(span.until)
            .fetch_all(c)
            .await?)
    })
}

/// Which stored signals a replay re-routes.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only this type.
    pub signal_type: Option<String>,
    /// Only this subject.
    pub subject: Option<String>,
    /// Recorded at or after.
    pub since: Option<Millis>,
    /// Recorded before.
    pub until: Option<Millis>,
}

/// A page of a tenant's signals in recording order, after `(recorded_at, id)`.
pub async fn page_for_replay(
    db: &Db,
    tenant: TenantId,
    f: &ReplayFilter,
    after: Option<(Millis, SignalId)>,
    limit: i64,
) -> Result<Vec<SignalRow>> {
    // Two statements rather than one with `$6 IS NULL OR …`: only a plain
    // row comparison lets a page start at its cursor in `signals_by_time`.
    let cursor = if after.is_some() {
        "AND (recorded_at, id) > ($6, $7)"
    } else {
        "AND $6 IS NULL AND $7 = ''"
    };
    let sql = format!(
        "SELECT {COLUMNS} FROM signals WHERE tenant_id = $1
           AND ($2 IS NULL OR type = $2) AND ($3 IS NULL OR subject = $3)
           AND ($4 IS NULL OR recorded_at >= $4) AND ($5 IS NULL OR recorded_at < $5)
           {cursor}
         ORDER BY recorded_at, id LIMIT $8"
    );
    on_db!(db, c => {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(f.signal_type.as_deref())
            .bind(f.subject.as_deref())
            .bind(f.since)
            .bind(f.until)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1.to_string()).unwrap_or_default())
            .bind(limit)
            .fetch_all(c)
            .await?)
    })
}
