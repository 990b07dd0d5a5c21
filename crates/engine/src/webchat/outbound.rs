//! `webchat.reply_send` and `webchat.conversation.close`.

use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::queue::Claimed;
use fleetprompt_store::webchat::conversation;
use fleetprompt_store::webchat::message::Role;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::WebchatError;
use super::escalation::{
    claimed_conversation, conversation_of, invalid, retry, validate_conversation,
};
use super::ingest::{Ending, end_conversation};
use crate::{Engine, EngineError, Handler, Outcome};

fn role_arg(args: &Value) -> Result<Role, EngineError> {
    match args.get("role").and_then(Value::as_str).unwrap_or("agent") {
        "agent" => Ok(Role::Agent),
        "assistant" => Ok(Role::Assistant),
        other => Err(invalid(format!(
            "`role` must be \"agent\" or \"assistant\", not {other:?}"
        ))),
    }
}

/// `webchat.reply_send`: delivers a reply to the visitor.
///
/// Args: `{ "conversation_id", "content", "role"?: "agent"|"assistant",
/// "author"?: {…}, "draft_id"? }`. The message is stored, pushed live to
/// the widget and recorded as `webchat.reply.sent` naming the author.
pub struct ReplySend;

impl Handler for ReplySend {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            let content = crate::handlers::str_arg(args, "content")?;
            super::reply::check_content(content).map_err(|e| match e {
                WebchatError::Invalid(v) => EngineError::Validation(v),
                other => invalid(other.to_string()),
            })?;
            role_arg(args)?;
            if args.get("conversation_id").is_none() {
                return Err(invalid("`conversation_id` is required"));
            }
            validate_conversation(engine, tenant, args).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            let Some(conv) = conversation_of(&d.args, d.subject.as_deref()) else {
                return Outcome::fail("`conversation_id` is required");
            };
            let Some(content) = d.args.get("content").and_then(Value::as_str) else {
                return Outcome::fail("`content` is required");
            };
            let role = match role_arg(&d.args) {
                Ok(r) => r,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            let author = d.args.get("author").cloned().unwrap_or(Value::Null);
            match super::reply::reply(engine, d.tenant, conv, content, role, &author, d.id).await {
                Ok(row) => Outcome::Succeeded {
                    result: json!({
                        "conversation_id": conv,
                        "message_id": row.as_ref().map(|r| r.id),
                        "already_sent": row.is_none(),
                    }),
                    http_status: None,
                    external_ref: row.map(|r| r.id.to_string()),
                },
                Err(WebchatError::NotFound(what)) => Outcome::fail(format!("{what} not found")),
                Err(e @ (WebchatError::Invalid(_) | WebchatError::TooLarge { .. })) => {
                    Outcome::fail(e.to_string())
                }
                Err(e) => retry(e),
            }
        }
        .boxed()
    }
}

/// `webchat.conversation.close`: ends a conversation (reason `closed`, or
/// `reason` from the args) and records `webchat.session.ended`.
pub struct ConversationClose;

impl Handler for ConversationClose {
    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_conversation(engine, tenant, args).boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        async move {
            let id = match claimed_conversation(d) {
                Ok(c) => c,
                Err(failed) => return failed,
            };
            let reason = d
                .args
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("closed")
                .to_owned();
            let result = async {
                // Named here: `?` would turn the store's NotFound into the
                // engine's, and a missing conversation must fail at once,
                // not be retried.
                let conv = conversation::get(engine.db(), d.tenant, id)
                    .await
                    .map_err(super::error::or_not_found("conversation"))?;
                let mut tx = engine.db().begin().await?;
                let ended = end_conversation(
                    engine,
                    &mut tx,
                    d.tenant,
                    Ending {
                        site: conv.site_id,
                        visitor: conv.visitor_id,
                        id,
                        reason: &reason,
                    },
                    now_ms(),
                )
                .await?;
                tx.commit().await.map_err(EngineError::from)?;
                Ok::<_, WebchatError>(ended)
            }
            .await;
            match result {
                Ok(ended) => Outcome::Succeeded {
                    result: json!({ "conversation_id": id, "closed_now": ended }),
                    http_status: None,
                    external_ref: None,
                },
                Err(WebchatError::NotFound(what))
                | Err(WebchatError::Engine(EngineError::NotFound(what))) => {
                    Outcome::fail(format!("{what} does not exist"))
                }
                Err(e) => retry(e),
            }
        }
        .boxed()
    }
}
