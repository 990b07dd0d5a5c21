//! The website chat secret kept per tenant beside its installation (which
//! lives in the platform's [`fleetprompt_store::installation`]): the key that hashes
//! visitor IPs, sealed under the master key. It outlives an uninstall, so
//! a reinstalled package hashes a returning visitor's address the same way.

use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;

use fleetprompt_store::{Result, Tx, on_tx};

/// Stores the tenant's sealed IP-hash key unless it has one.
pub async fn ensure_ip_key(tx: &mut Tx, tenant: TenantId, sealed_ip_key: &str) -> Result<()> {
    on_tx!(tx, c => {
        sqlx::query(
            "INSERT INTO website_chat_ip_keys (tenant_id, sealed_ip_key, created_at)
             VALUES ($1, $2, $3) ON CONFLICT (tenant_id) DO NOTHING",
        )
        .bind(tenant.to_string())
        .bind(sealed_ip_key)
        .bind(now_ms())
        .execute(&mut *c)
        .await?;
    });
    Ok(())
}

/// The tenant's sealed IP-hash key, read inside a transaction.
pub async fn ip_key_tx(tx: &mut Tx, tenant: TenantId) -> Result<Option<String>> {
    on_tx!(tx, c => {
        Ok(sqlx::query_scalar("SELECT sealed_ip_key FROM website_chat_ip_keys WHERE tenant_id = $1")
            .bind(tenant.to_string())
            .fetch_optional(&mut *c)
            .await?)
    })
}
