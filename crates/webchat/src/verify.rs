//! Installation verification: a test visitor message through the whole
//! path (ingest, rules, escalation), reporting what happened.

use std::time::{Duration, Instant};

use crate::types::id::{SiteId, VisitorId};
use crate::types::token::Claims;
use fleetprompt_core::DirectiveId;
use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::directive;
use fleetprompt_store::signal;
use fleetprompt_store::timeline::Span;
use serde_json::{Value, json};

use crate::conversation_subject;
use crate::error::WebchatError;
use crate::ingest::{Incoming, send_message};
use fleetprompt_engine::Engine;

/// The text of a test message.
pub const TEST_MESSAGE: &str =
    "FleetPrompt installation test: if you can read this, escalation works.";

/// Sends a test visitor message on a site as a fresh visitor and waits up
/// to `wait` for the escalations it caused to finish.
///
/// Returns `{ conversation_id, message_id, signal, escalations: [ { directive_id,
/// kind, destination, status, attempts, http_status, error } ] }`.
pub async fn test_message(
    engine: &Engine,
    tenant: TenantId,
    site_id: SiteId,
    wait: Duration,
) -> Result<Value, WebchatError> {
    let site = crate::site::get(engine, tenant, site_id).await?;
    let now = now_ms();
    let claims = Claims {
        tenant,
        site: site.id,
        visitor: VisitorId::new(),
        issued_at: now,
        expires_at: now + 60_000,
        key_id: site.key_id,
    };
    let client_id = uuid::Uuid::now_v7().to_string();
    let accepted = send_message(
        engine,
        &site,
        &claims,
        Incoming {
            client_message_id: &client_id,
            content: TEST_MESSAGE,
            page_url: None,
        },
    )
    .await?;
    let subject = conversation_subject(accepted.conversation_id);
    let signals = signal::list_by_subject(engine.db(), tenant, &subject, Span::ALL).await?;
    let received = signals
        .iter()
        .find(|s| s.signal_type == "webchat.message.received")
        .map(|s| json!({ "id": s.id, "type": s.signal_type, "subject": s.subject }));
    let escalations: Vec<DirectiveId> = signals
        .iter()
        .filter(|s| s.signal_type == "webchat.escalation.created")
        .filter_map(|s| s.payload.get("directive_id")?.as_str()?.parse().ok())
        .collect();
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    for id in escalations {
        let row = loop {
            let row = directive::get(engine.db(), tenant, id).await?;
            let done = row.status.is_terminal();
            // A delayed escalation (email) is reported as scheduled.
            let delayed = row.status == fleetprompt_core::DirectiveStatus::Pending
                && row.next_attempt_at > now_ms() + wait.as_millis() as i64;
            if done || delayed {
                break row;
            }
            if Instant::now() >= deadline {
                break row;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let attempts = directive::attempts(engine.db(), tenant, id).await?;
        let last = attempts.last();
        out.push(json!({
            "directive_id": row.id,
            "kind": row.kind,
            "destination": row.args.get("destination"),
            "status": row.status,
            "attempts": row.attempts,
            "http_status": last.and_then(|a| a.http_status),
            "external_ref": last.and_then(|a| a.external_ref.clone()),
            "error": row.last_error,
        }));
    }
    Ok(json!({
        "conversation_id": accepted.conversation_id,
        "message_id": accepted.message_id,
        "signal": received,
        "escalations": out,
    }))
}
