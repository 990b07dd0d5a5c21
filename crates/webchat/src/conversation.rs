//! What an operator does to a conversation by hand: escalate, close,
//! reopen, assign. Each is a directive whose origin is the operator (so the
//! timeline says who), and the changes of state run in its handler, in the
//! transaction that records its result, like every other change.

use std::time::Duration;

use crate::store::conversation::{self as store_conv, ConversationRow};
use crate::types::id::ConversationId;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, Origin, TenantId};
use fleetprompt_store::StoreError;
use fleetprompt_store::directive::{self, Created, DirectiveRow};
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{WebchatError, invalid};
use crate::escalation::claimed_conversation;
use crate::{conversation_subject, site};
use fleetprompt_engine::{
    ArgsError, Attempt, BackoffOverride, DirectiveRequest, Engine, EngineError, Failed, Handler,
    Outcome, ResultSignals,
};

/// How long an action waits for its directive before answering with it
/// still pending.
pub const WAIT: Duration = Duration::from_secs(10);

/// The dedupe-key prefix of Mattermost escalations, as the shipped rules
/// write it (`workflows/website_chat.toml`).
pub const MATTERMOST_KEY: &str = "webchat_mm_escalation";

/// The dedupe-key prefix of email escalations, as the shipped rules write it.
pub const EMAIL_KEY: &str = "webchat_email_escalation";

/// The key of a conversation's escalation to a destination: the one the
/// shipped rules render (`{prefix}:{{ tenant }}:{{ conversation_id }}:{{
/// destination }}`, the tenant being its slug), so a rule and a person
/// escalating the same conversation to the same place make one directive.
pub fn escalation_key(prefix: &str, slug: &str, conv: ConversationId, destination: &str) -> String {
    format!("{prefix}:{slug}:{conv}:{destination}")
}

async fn conversation(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
) -> Result<ConversationRow, WebchatError> {
    store_conv::get(engine.db(), tenant, id)
        .await
        .map_err(crate::error::or_not_found("conversation"))
}

/// What an escalation by hand did.
#[derive(Debug, Clone)]
pub struct Escalation {
    /// The directive that notifies: this call's, or the one a rule (or an
    /// earlier call) made with the same key.
    pub directive: DirectiveRow,
    /// Whether this call created it.
    pub created: bool,
}

/// Escalates a conversation to a Mattermost or email destination now.
/// When a rule already escalated it there, that directive is the answer
/// (and, if it was waiting on a delay, it runs now): one post, not two.
pub async fn escalate(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    destination: &str,
    origin: Origin,
) -> Result<Escalation, WebchatError> {
    conversation(engine, tenant, id).await?;
    let dest = fleetprompt_engine::destination::find(engine, tenant, destination)
        .await
        .map_err(|e| match e {
            EngineError::NotFound(_) => invalid(
                "destination",
                format!("no destination {destination:?} in this tenant"),
            ),
            other => other.into(),
        })?;
    let (kind, prefix) = match dest.kind.as_str() {
        "mattermost" | "mattermost_api" => ("webchat.escalate_to_mattermost", MATTERMOST_KEY),
        "email" => ("webchat.escalate_to_email", EMAIL_KEY),
        other => {
            return Err(invalid(
                "destination",
                format!(
                    "{destination:?} is a {other} destination; escalate to a mattermost, mattermost_api or email one"
                ),
            ));
        }
    };
    let slug = engine.tenant_slug(tenant).await?;
    let req = DirectiveRequest {
        kind: kind.into(),
        args: json!({ "conversation_id": id, "destination": dest.name }),
        dedupe_key: escalation_key(prefix, &slug, id, &dest.name),
        // As the shipped rules retry.
        max_attempts: Some(8),
        subject: Some(conversation_subject(id)),
        delay_ms: None,
        backoff: BackoffOverride {
            base_ms: Some(2_000),
            max_ms: Some(300_000),
            ..Default::default()
        },
    };
    let (created, row) = engine.create_directive(tenant, req, origin).await?;
    let row = match created {
        Created::New(_) => row,
        Created::Existing(existing) => {
            let mut tx = engine.db().begin().await?;
            directive::run_now_if_waiting(&mut tx, tenant, existing).await?;
            tx.commit().await?;
            directive::get(engine.db(), tenant, existing).await?
        }
    };
    Ok(Escalation {
        directive: row,
        created: matches!(created, Created::New(_)),
    })
}

/// Who wrote an operator's reply, as the message records it: the member
/// (id and name) or the token.
pub fn reply_author(origin: &Origin) -> Value {
    match origin {
        Origin::Member {
            member_id, name, ..
        } => json!({ "kind": "operator", "member_id": member_id, "name": name }),
        Origin::Api { token_id } => json!({ "kind": "operator", "token_id": token_id }),
        other => json!({ "kind": "operator", "actor": other.actor() }),
    }
}

/// Sends an operator's reply: the `webchat.reply_send` directive (so the
/// timeline says who replied, and when), with a key of its own per call,
/// since an operator may well send the same words twice. The admin API and
/// the console both reply through here.
pub async fn reply(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    content: &str,
    origin: Origin,
) -> Result<DirectiveRow, WebchatError> {
    conversation(engine, tenant, id).await?;
    let key = format!("webchat_reply_send:{tenant}:{id}:{}", DirectiveId::new());
    let req = DirectiveRequest {
        kind: "webchat.reply_send".into(),
        args: json!({
            "conversation_id": id,
            "content": content,
            "role": "agent",
            "author": reply_author(&origin),
        }),
        dedupe_key: key,
        max_attempts: None,
        subject: Some(conversation_subject(id)),
        delay_ms: None,
        backoff: Default::default(),
    };
    let (_, row) = engine.create_directive(tenant, req, origin).await?;
    Ok(row)
}

/// The longest private note, in bytes.
pub const NOTE_MAX_BYTES: usize = 8 * 1024;

/// Adds a private note to a conversation: a `webchat.note.added` signal on
/// its timeline, for members only. It is never stored as a message, so it
/// never reaches the visitor (no widget view reads signals).
pub async fn add_note(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    content: &str,
    origin: Origin,
) -> Result<fleetprompt_core::SignalId, WebchatError> {
    conversation(engine, tenant, id).await?;
    let content = content.trim();
    if content.is_empty() {
        return Err(invalid("content", "may not be empty"));
    }
    if content.len() > NOTE_MAX_BYTES {
        return Err(invalid(
            "content",
            format!("may be at most {NOTE_MAX_BYTES} bytes"),
        ));
    }
    let s = fleetprompt_core::NewSignal::new(
        "webchat.note.added",
        &conversation_subject(id),
        super::ingest::with_content(
            json!({
                "conversation_id": id,
                "author": reply_author(&origin),
                "actor": origin.actor(),
            }),
            content,
        ),
        format!("webchat_note:{tenant}:{id}:{}", DirectiveId::new()),
        now_ms(),
    )?;
    let recorded = engine.record_signal(tenant, s).await?;
    Ok(recorded.id)
}

/// A directive about conversation `id`, with a key of its own: the same
/// action may be taken again (closed, reopened, closed).
fn action(kind: &str, id: ConversationId, tenant: TenantId, args: Value) -> DirectiveRequest {
    DirectiveRequest {
        kind: kind.into(),
        args,
        dedupe_key: format!("{kind}:{tenant}:{id}:{}", DirectiveId::new()),
        max_attempts: Some(5),
        subject: Some(conversation_subject(id)),
        delay_ms: None,
        backoff: BackoffOverride {
            base_ms: Some(200),
            max_ms: Some(5_000),
            ..Default::default()
        },
    }
}

/// Creates an action's directive and waits (at most [`WAIT`]) for it.
async fn act(
    engine: &Engine,
    tenant: TenantId,
    req: DirectiveRequest,
    origin: Origin,
) -> Result<DirectiveRow, WebchatError> {
    let (_, row) = engine.create_directive(tenant, req, origin).await?;
    site::wait_for(engine, tenant, row.id, WAIT).await
}

/// Closes an open conversation: the `webchat.conversation.close` directive,
/// which records `webchat.session.ended` with reason `operator`.
pub async fn close(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    origin: Origin,
) -> Result<DirectiveRow, WebchatError> {
    let conv = conversation(engine, tenant, id).await?;
    if conv.status != "open" {
        return Err(EngineError::InvalidState("the conversation has already ended".into()).into());
    }
    let req = action(
        "webchat.conversation.close",
        id,
        tenant,
        json!({ "conversation_id": id, "reason": "operator" }),
    );
    act(engine, tenant, req, origin).await
}

/// Opens an ended conversation again (`webchat.conversation.reopen`).
pub async fn reopen(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    origin: Origin,
) -> Result<DirectiveRow, WebchatError> {
    let conv = conversation(engine, tenant, id).await?;
    if conv.status == "open" {
        return Err(EngineError::InvalidState("the conversation is open".into()).into());
    }
    let req = action(
        "webchat.conversation.reopen",
        id,
        tenant,
        json!({ "conversation_id": id }),
    );
    act(engine, tenant, req, origin).await
}

/// Assigns a conversation to a member, or to nobody
/// (`webchat.conversation.assign`).
pub async fn assign(
    engine: &Engine,
    tenant: TenantId,
    id: ConversationId,
    member: Option<MemberId>,
    origin: Origin,
) -> Result<DirectiveRow, WebchatError> {
    conversation(engine, tenant, id).await?;
    if let Some(m) = member {
        check_member(engine, tenant, m).await?;
    }
    let req = action(
        "webchat.conversation.assign",
        id,
        tenant,
        json!({ "conversation_id": id, "member_id": member }),
    );
    act(engine, tenant, req, origin).await
}

/// Whether `member` may be assigned conversations of `tenant`: a member of
/// this tenant who is not disabled.
async fn check_member(
    engine: &Engine,
    tenant: TenantId,
    member: MemberId,
) -> Result<(), WebchatError> {
    match fleetprompt_store::member::get(engine.db(), tenant, member).await {
        Ok(m) if m.disabled_at.is_none() => Ok(()),
        Ok(_) => Err(invalid("member_id", "that member is disabled")),
        Err(StoreError::NotFound { .. }) => {
            Err(invalid("member_id", "no such member in this tenant"))
        }
        Err(e) => Err(e.into()),
    }
}

/// The arguments of `webchat.conversation.reopen`.
#[derive(Debug, Deserialize)]
pub struct ReopenArgs {
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
}

/// `webchat.conversation.reopen`: an ended conversation is open again,
/// its idle clock started afresh. Refused while the visitor has another
/// open conversation on the site (a visitor has one at a time).
pub struct ConversationReopen;

impl Handler for ConversationReopen {
    type Args = ReopenArgs;

    fn result_signals(&self) -> ResultSignals {
        ResultSignals {
            succeeded: "webchat.session.reopened",
            failed: "directive.failed",
        }
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: ReopenArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let id = claimed_conversation(d, args.conversation_id)?;
            let result = async {
                let conv = store_conv::get(engine.db(), d.tenant, id).await?;
                let mut tx = engine.db().begin().await?;
                store_conv::lock_visitor(&mut tx, d.tenant, conv.site_id, conv.visitor_id).await?;
                let open =
                    store_conv::open_for_visitor(&mut tx, d.tenant, conv.site_id, conv.visitor_id)
                        .await?;
                if open.is_some_and(|o| o != id) {
                    return Ok(Err(()));
                }
                let reopened = store_conv::reopen(&mut tx, d.tenant, id, now_ms()).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(Ok(reopened))
            }
            .await;
            match result {
                Ok(Ok(reopened)) => Ok(Outcome::succeeded(
                    json!({ "conversation_id": id, "reopened_now": reopened }),
                )),
                Ok(Err(())) => Err(Failed::fail(
                    "the visitor has another open conversation on this site",
                )),
                Err(StoreError::NotFound { .. }) => {
                    Err(Failed::fail("conversation does not exist"))
                }
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}

/// The arguments of `webchat.conversation.assign`.
#[derive(Debug, Deserialize)]
pub struct AssignArgs {
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// Who it is assigned to; `null` unassigns. Required, so that leaving
    /// it out is not read as "unassign".
    #[serde(deserialize_with = "required_nullable")]
    pub member_id: Option<MemberId>,
}

fn required_nullable<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MemberId>, D::Error> {
    Option::<MemberId>::deserialize(d)
}

/// `webchat.conversation.assign`: sets (or clears, with a null
/// `member_id`) who the conversation is assigned to.
pub struct ConversationAssign;

impl Handler for ConversationAssign {
    type Args = AssignArgs;

    fn result_signals(&self) -> ResultSignals {
        ResultSignals {
            succeeded: "webchat.session.assigned",
            failed: "directive.failed",
        }
    }

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a AssignArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            match args.member_id {
                Some(m) => check_member(engine, tenant, m).await.map_err(|e| match e {
                    WebchatError::Engine(e) => e,
                    other => ArgsError::new(&["member_id"], other.to_string()).into(),
                }),
                None => Ok(()),
            }
        }
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: AssignArgs,
    ) -> BoxFuture<'a, Attempt> {
        async move {
            let id = claimed_conversation(d, args.conversation_id)?;
            let member = args.member_id;
            let result = async {
                let mut tx = engine.db().begin().await?;
                let found = store_conv::set_assignee(&mut tx, d.tenant, id, member).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(found)
            }
            .await;
            match result {
                Ok(true) => Ok(Outcome::succeeded(
                    json!({ "conversation_id": id, "member_id": member }),
                )),
                Ok(false) => Err(Failed::fail("conversation does not exist")),
                Err(e) => Err(Failed::retry(e)),
            }
        }
        .boxed()
    }
}

/// Records that `member` has seen `conv` as it was read: the inbox stops
/// marking it unread for them until the visitor writes again. The mark is
/// the conversation's last activity that the member was shown (not the
/// clock), so a message that lands while the page loads stays unread.
/// Nothing is written when there is nothing new since their last visit.
pub async fn mark_read(
    engine: &Engine,
    tenant: TenantId,
    member: MemberId,
    conv: &ConversationRow,
) -> Result<(), WebchatError> {
    let db = engine.db();
    let seen = crate::store::read::get(db, tenant, member, conv.id).await?;
    if seen.is_some_and(|at| at >= conv.last_message_at) {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    crate::store::read::mark(&mut tx, tenant, member, conv.id, conv.last_message_at).await?;
    tx.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped rules and a person build the same keys: if one changes
    /// alone, a rule and a person post twice.
    #[test]
    fn escalation_keys_match_the_shipped_rules() {
        let rules = include_str!("../../../workflows/website_chat.toml");
        for prefix in [MATTERMOST_KEY, EMAIL_KEY] {
            let template = format!(
                "dedupe_key = \"{prefix}:{{{{ tenant }}}}:{{{{ signal.payload.conversation_id }}}}:{{{{ destination }}}}\""
            );
            assert!(
                rules.contains(&template),
                "{template} not in the shipped rules"
            );
        }
        let conv = ConversationId::new();
        assert_eq!(
            escalation_key(MATTERMOST_KEY, "acme", conv, "mattermost"),
            format!("webchat_mm_escalation:acme:{conv}:mattermost")
        );
    }
}
