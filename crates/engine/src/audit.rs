//! The tenant's audit log: admin changes (a member added, a token revoked,
//! a destination rotated, a rule file published) recorded as signals on the
//! tenant's own subject, `tenant:<id>`, in the transaction of the change,
//! each naming who made it.

use fleetprompt_core::signal::NewSignal;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{Origin, TenantId};
use serde_json::{Value, json};

use crate::{Engine, EngineError};

/// The subject every audit signal of `tenant` is recorded on.
pub fn subject(tenant: TenantId) -> String {
    format!("tenant:{tenant}")
}

/// Records `signal_type` on the tenant's audit subject, in `tx`, with the
/// actor added to `payload` (`actor`: `member:…`, `token:…`, …; `origin`:
/// the full origin, a member's name included).
pub(crate) async fn record(
    engine: &Engine,
    tx: &mut fleetprompt_store::Tx,
    tenant: TenantId,
    signal_type: &str,
    mut payload: Value,
    dedupe: String,
    actor: &Origin,
) -> Result<(), EngineError> {
    payload["actor"] = json!(actor.actor());
    payload["origin"] = serde_json::to_value(actor).unwrap_or_default();
    let s = NewSignal::new(signal_type, &subject(tenant), payload, dedupe, now_ms())?;
    engine.record_in_tx(tx, tenant, &s).await?;
    Ok(())
}

/// A dedupe key no other change shares: every audited change is its own event.
pub(crate) fn once() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
