//! The last tick each schedule rule fired, per tenant.

use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;

use crate::{Db, Result, Tx, on_db, on_tx};

/// The last tick fired for `(tenant, rule)`, if the rule was ever seen.
pub async fn last_tick(db: &Db, tenant: TenantId, rule_id: &str) -> Result<Option<Millis>> {
    on_db!(db, c => {
        Ok(sqlx::query_scalar("SELECT last_tick FROM cron_ticks WHERE tenant_id = $1 AND rule_id = $2")
            .bind(tenant)
            .bind(rule_id)
            .fetch_optional(c)
            .await?)
    })
}

/// Starts tracking a rule from `now`: ticks before a rule existed never fire.
pub async fn start(tx: &mut Tx, tenant: TenantId, rule_id: &str, now: Millis) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO cron_ticks (tenant_id, rule_id, last_tick) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, rule_id) DO NOTHING",
        )
        .bind(tenant)
        .bind(rule_id)
        .bind(now)
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// Moves `(tenant, rule)` from `from` to `to`; false when another node moved
/// it first (and so fires that tick instead).
pub async fn advance(
    tx: &mut Tx,
    tenant: TenantId,
    rule_id: &str,
    from: Millis,
    to: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query("UPDATE cron_ticks SET last_tick = $4 WHERE tenant_id = $1 AND rule_id = $2 AND last_tick = $3")
            .bind(tenant)
            .bind(rule_id)
            .bind(from)
            .bind(to)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(n == 1)
}
