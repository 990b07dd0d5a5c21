//! Rule evaluations: why a rule did or did not act on a signal.

use fleetprompt_core::time::Millis;
use fleetprompt_core::{SignalId, TenantId};
use serde::Serialize;
use uuid::Uuid;

use crate::timeline::Span;
use crate::{Db, Result, Tx, on_db, on_tx};

/// One rule's verdict on one signal.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct EvaluationRow {
    /// The signal evaluated.
    pub signal_id: SignalId,
    /// Its subject.
    pub subject: String,
    /// The rule.
    pub rule_id: String,
    /// SHA-256 of the rule's file at the time.
    pub file_hash: String,
    /// `matched`, `skipped` or `error`.
    pub outcome: String,
    /// Human-readable: what was created, why it was skipped, or the error.
    pub detail: String,
    /// When.
    #[serde(serialize_with = "crate::timeline::ser_ms")]
    pub evaluated_at: Millis,
}

/// Records evaluations, of any tenants, in one statement.
pub async fn insert_many(tx: &mut Tx, rows: &[(TenantId, EvaluationRow)]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let values = crate::json_array(rows.iter().map(|(tenant, r)| {
        serde_json::json!([
            tenant,
            Uuid::now_v7().simple().to_string(),
            r.signal_id,
            r.subject,
            r.rule_id,
            r.file_hash,
            r.outcome,
            r.detail,
            r.evaluated_at
        ])
    }));
    let sql = format!(
        "INSERT INTO rule_evaluations (tenant_id, id, signal_id, subject, rule_id, file_hash, outcome, detail, evaluated_at)
         SELECT k.value ->> 0, k.value ->> 1, k.value ->> 2, k.value ->> 3, k.value ->> 4, k.value ->> 5,
                k.value ->> 6, k.value ->> 7, CAST(k.value ->> 8 AS BIGINT)
         FROM {} ORDER BY k.key",
        crate::json_rows(tx.backend(), 1)
    );
    on_tx!(tx, c => {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(values)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// A subject's evaluations within `span`, in time order.
pub async fn list_by_subject(
    db: &Db,
    tenant: TenantId,
    subject: &str,
    span: Span,
) -> Result<Vec<EvaluationRow>> {
    on_db!(db, c => {
        Ok(sqlx::query_as(
            "SELECT signal_id, subject, rule_id, file_hash, outcome, detail, evaluated_at FROM rule_evaluations
             WHERE tenant_id = $1 AND subject = $2
               AND ($3 IS NULL OR evaluated_at >= $3) AND ($4 IS NULL OR evaluated_at < $4)
             ORDER BY evaluated_at, id LIMIT 10000",
        )
        .bind(tenant)
        .bind(subject)
        .bind(span.from)
        .bind(span.until)
        .fetch_all(c)
        .await?)
    })
}
