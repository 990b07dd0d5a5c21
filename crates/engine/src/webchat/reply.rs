//! Operator (agent) replies: stored, recorded as `webchat.reply.sent`, and
//! pushed live to the visitor's widget.

use fleetprompt_core::id::{ConversationId, MessageId};
use fleetprompt_core::time::{now_ms, to_rfc3339};
use fleetprompt_core::{NewSignal, Origin, TenantId};
use fleetprompt_store::StoreError;
use fleetprompt_store::webchat::conversation;
use fleetprompt_store::webchat::message::{self, MessageRow, Role};
use serde_json::json;

use super::error::{WebchatError, invalid};
use super::ingest::with_content;
use super::live::{LiveEvent, hub};
use super::{conversation_subject, count_signals};
use crate::Engine;

/// Longest reply an operator may send.
pub const MAX_REPLY_BYTES: usize = 16 * 1024;

/// A message as the widget shows it (history and live events alike).
pub fn widget_view(m: &MessageRow) -> serde_json::Value {
    json!({
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "client_message_id": m.client_message_id,
        "created_at": to_rfc3339(m.created_at),
    })
}

/// Stores an agent reply in a conversation and pushes it to the visitor.
pub async fn reply(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    content: &str,
    author: &Origin,
) -> Result<MessageRow, WebchatError> {
    if content.trim().is_empty() {
        return Err(invalid("content", "may not be empty"));
    }
    if content.len() > MAX_REPLY_BYTES {
        return Err(WebchatError::TooLarge {
            size: content.len(),
            limit: MAX_REPLY_BYTES,
        });
    }
    let conv = conversation::get(engine.db(), tenant, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => WebchatError::NotFound("conversation".into()),
            other => other.into(),
        })?;
    let now = now_ms();
    let row = MessageRow {
        id: MessageId::new(),
        conversation_id: id,
        site_id: conv.site_id,
        visitor_id: conv.visitor_id,
        role: Role::Agent,
        content: content.to_owned(),
        client_message_id: None,
        created_at: now,
    };
    let payload = with_content(
        json!({
            "site_id": conv.site_id,
            "visitor_id": conv.visitor_id,
            "conversation_id": id,
            "message_id": row.id,
            "role": "agent",
            "author": author,
        }),
        content,
    );
    let s = NewSignal::new(
        "webchat.reply.sent",
        &conversation_subject(id),
        payload,
        format!("webchat_reply:{tenant}:{}", row.id),
        now,
    )?;
    let mut tx = engine.db().begin().await?;
    let recorded = engine.record_in_tx(&mut tx, tenant, &s).await?;
    message::insert(&mut tx, tenant, &row, Some(&recorded.id.to_string())).await?;
    if conv.status == "open" {
        conversation::touch(&mut tx, tenant, id, now).await?;
    }
    tx.commit().await?;
    count_signals(&["webchat.reply.sent"]);
    // After the commit, so a visitor never sees a reply that was rolled back.
    hub().publish(
        tenant,
        conv.site_id,
        conv.visitor_id,
        LiveEvent(widget_view(&row)),
    );
    Ok(row)
}
