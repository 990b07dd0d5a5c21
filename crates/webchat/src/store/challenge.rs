//! Proof-of-work challenges already spent. A row lives until the challenge
//! expires; the primary key makes a second use fail on every node.

use fleetprompt_core::TenantId;
use fleetprompt_core::time::Millis;

use fleetprompt_store::{Result, Tx, on_tx};

/// Marks challenge `id` as spent; `false` when it already was. Expired
/// rows of the tenant are dropped on the way (their challenges are refused
/// by their signed expiry anyway).
pub async fn spend(
    tx: &mut Tx,
    tenant: TenantId,
    id: &str,
    expires_at: Millis,
    now: Millis,
) -> Result<bool> {
    let n = on_tx!(tx, c => {
        sqlx::query("DELETE FROM website_chat_challenges WHERE tenant_id = $1 AND expires_at < $2")
            .bind(tenant.to_string())
            .bind(now)
            .execute(&mut *c)
            .await?;
        sqlx::query(
            "INSERT INTO website_chat_challenges (tenant_id, challenge_id, expires_at)
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id, challenge_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(id)
        .bind(expires_at)
        .execute(&mut *c)
        .await?
        .rows_affected()
    });
    Ok(n == 1)
}
