//! Replies to the visitor (an operator's, or an approved assistant draft):
//! stored, recorded as `webchat.reply.sent` with who sent them, and pushed
//! live to the visitor's widget. They run as `webchat.reply_send`
//! directives, so each appears on the conversation's audit timeline.

use crate::store::conversation;
use crate::store::message::{self, MessageRow, Role};
use crate::types::id::{ConversationId, MessageId};
use fleetprompt_core::time::{now_ms, to_rfc3339};
use fleetprompt_core::{NewSignal, TenantId};
use serde_json::json;

use crate::error::{WebchatError, invalid};
use crate::ingest::with_content;
use crate::live::{LiveEvent, hub};
use crate::{conversation_subject, count_signals};
use fleetprompt_engine::Engine;

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

/// Checks a reply's text.
pub fn check_content(content: &str) -> Result<(), WebchatError> {
    if content.trim().is_empty() {
        return Err(invalid("content", "may not be empty"));
    }
    if content.len() > MAX_REPLY_BYTES {
        return Err(WebchatError::TooLarge {
            size: content.len(),
            limit: MAX_REPLY_BYTES,
        });
    }
    Ok(())
}

/// Stores a reply in a conversation and pushes it to the visitor.
///
/// `directive` names the work: a second call for the same directive
/// stores nothing and returns `None`, so retried attempts reply once.
pub async fn reply(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    content: &str,
    role: Role,
    author: &serde_json::Value,
    directive: fleetprompt_core::DirectiveId,
) -> Result<Option<MessageRow>, WebchatError> {
    check_content(content)?;
    let conv = conversation::get(engine.db(), tenant, id)
        .await
        .map_err(crate::error::or_not_found("conversation"))?;
    let now = now_ms();
    let row = MessageRow {
        id: MessageId::new(),
        conversation_id: id,
        site_id: conv.site_id,
        visitor_id: conv.visitor_id,
        role,
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
            "role": role.as_str(),
            "author": author,
        }),
        content,
    );
    let mut s = NewSignal::new(
        "webchat.reply.sent",
        &conversation_subject(id),
        payload,
        format!("webchat_reply:{tenant}:{directive}"),
        now,
    )?;
    s.caused_by = Some(directive);
    let mut tx = engine.db().begin().await?;
    let recorded = engine.record_in_tx(&mut tx, tenant, &s).await?;
    if recorded.duplicate {
        // An earlier attempt stored and pushed it.
        return Ok(None);
    }
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
    hub().publish_tenant(
        tenant,
        &super::live::InboxEvent::message(id, conv.site_id, row.role.as_str()),
    );
    Ok(Some(row))
}
