//! Edge Connectors: what the platform does for the `fleetprompt-edge`
//! processes tenants run next to their own mail server.
//!
//! A connector holds a token of its own (`fpe_…`), sends heartbeats (the
//! last-seen gauge and the silent-connector alert read them), and never
//! touches the database: everything it does goes through these calls.

use fleetprompt_core::secret::{IssuedEdgeToken, parse_edge_token};
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{EdgeConnectorId, TenantId};
use fleetprompt_store::edge::{self, EdgeConnector};

use crate::{Engine, EngineError};

/// Registers a connector for a tenant; the token is returned once.
pub async fn create_connector(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
) -> Result<(EdgeConnector, IssuedEdgeToken), EngineError> {
    edge::check_name(name).map_err(invalid_name)?;
    let mut tx = engine.db().begin().await?;
    let created = edge::create(&mut tx, tenant, name).await?;
    tx.commit().await?;
    Ok(created)
}

fn invalid_name(reason: String) -> EngineError {
    EngineError::Validation(fleetprompt_core::signal::ValidationError::Invalid {
        field: "name",
        reason,
    })
}

/// Revokes a connector; its token stops working at once.
pub async fn revoke_connector(
    engine: &Engine,
    tenant: TenantId,
    id: EdgeConnectorId,
) -> Result<EdgeConnector, EngineError> {
    let mut tx = engine.db().begin().await?;
    edge::revoke(&mut tx, tenant, id)
        .await
        .map_err(|e| match e {
            fleetprompt_store::StoreError::NotFound => {
                EngineError::NotFound("edge connector".into())
            }
            other => other.into(),
        })?;
    tx.commit().await?;
    Ok(edge::get(engine.db(), tenant, id).await?)
}

/// The live connector a presented token belongs to; `None` for a token
/// that is malformed, unknown, revoked or wrong, alike.
pub async fn authenticate(
    engine: &Engine,
    token: &str,
) -> Result<Option<EdgeConnector>, EngineError> {
    let Some((id, secret)) = parse_edge_token(token.trim()) else {
        return Ok(None);
    };
    Ok(edge::authenticate(engine.db(), id, secret).await?)
}

/// Records a heartbeat: the connector is alive, running `version`.
pub async fn heartbeat(
    engine: &Engine,
    connector: &EdgeConnector,
    version: Option<&str>,
) -> Result<(), EngineError> {
    let mut tx = engine.db().begin().await?;
    edge::touch(
        &mut tx,
        connector.tenant_id,
        connector.id,
        version,
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
