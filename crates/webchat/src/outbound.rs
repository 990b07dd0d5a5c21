//! `webchat.reply_send` and `webchat.conversation.close`.

use crate::store::conversation;
use crate::store::message::Role;
use crate::types::id::ConversationId;
use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::WebchatError;
use crate::escalation::claimed_conversation;
use crate::ingest::{Ending, end_conversation};
use fleetprompt_engine::{ArgsError, Attempt, Engine, EngineError, Failed, Handler, Outcome};

/// Who a reply is from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyRole {
    /// A person on the team.
    #[default]
    Agent,
    /// The assistant (an approved or sent draft).
    Assistant,
}

impl From<ReplyRole> for Role {
    fn from(r: ReplyRole) -> Self {
        match r {
            ReplyRole::Agent => Role::Agent,
            ReplyRole::Assistant => Role::Assistant,
        }
    }
}

/// The arguments of `webchat.reply_send`.
#[derive(Debug, Deserialize)]
pub struct ReplySendArgs {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The reply's text.
    pub content: String,
    /// Who it is from; `agent` when not given.
    #[serde(default)]
    pub role: ReplyRole,
    /// The author as the timeline names it (`{ "name": … }`).
    #[serde(default)]
    pub author: Value,
}

/// `webchat.reply_send`: delivers a reply to the visitor.
///
/// Args: `{ "conversation_id", "content", "role"?: "agent"|"assistant",
/// "author"?: {…}, "draft_id"? }`. The message is stored, pushed live to
/// the widget and recorded as `webchat.reply.sent` naming the author.
pub struct ReplySend;

impl Handler for ReplySend {
    type Args = ReplySendArgs;

    fn validate<'a>(
        &'a self,
        _: &'a Engine,
        _: TenantId,
        args: &'a ReplySendArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let checked = crate::reply::check_content(&args.content).map_err(|e| match e {
            WebchatError::Invalid(v) => EngineError::Validation(v),
            other => ArgsError::new(&["content"], other.to_string()).into(),
        });
        futures::future::ready(checked).boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: ReplySendArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let conv = args.conversation_id;
            let role = args.role.into();
            match crate::reply::reply(
                engine,
                d.tenant,
                conv,
                &args.content,
                role,
                &args.author,
                d.id,
            )
            .await
            {
                Ok(row) => Ok(Outcome::Succeeded {
                    result: json!({
                        "conversation_id": conv,
                        "message_id": row.as_ref().map(|r| r.id),
                        "already_sent": row.is_none(),
                    }),
                    http_status: None,
                    external_ref: row.map(|r| r.id.to_string()),
                }),
                Err(WebchatError::NotFound(what)) => Err(Failed::fail(format!("{what} not found"))),
                Err(e @ (WebchatError::Invalid(_) | WebchatError::TooLarge { .. })) => {
                    Err(Failed::fail(e))
                }
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}

/// The arguments of `webchat.conversation.close`.
#[derive(Debug, Deserialize)]
pub struct CloseArgs {
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// Why it ends (`webchat.session.ended`'s `reason`); `closed` when not given.
    #[serde(default)]
    pub reason: Option<String>,
}

/// `webchat.conversation.close`: ends a conversation (reason `closed`, or
/// `reason` from the args) and records `webchat.session.ended`.
pub struct ConversationClose;

impl Handler for ConversationClose {
    type Args = CloseArgs;

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: CloseArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let id = claimed_conversation(d, args.conversation_id)?;
            let reason = args.reason.unwrap_or_else(|| "closed".to_owned());
            let result = async {
                // Named here: `?` would turn the store's NotFound into the
                // engine's, and a missing conversation must fail at once,
                // not be retried.
                let conv = conversation::get(engine.db(), d.tenant, id)
                    .await
                    .map_err(crate::error::or_not_found("conversation"))?;
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
                Ok(ended) => Ok(Outcome::succeeded(
                    json!({ "conversation_id": id, "closed_now": ended }),
                )),
                Err(WebchatError::NotFound(what))
                | Err(WebchatError::Engine(EngineError::NotFound(what))) => {
                    Err(Failed::fail(format!("{what} does not exist")))
                }
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}
