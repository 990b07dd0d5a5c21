//! Escalation: `webchat.escalate_to_mattermost` and `webchat.escalate_to_email`.
//!
//! A notification is one concise post: the site, a safe summary of the
//! visitor's message (one line, truncated, `@`-mentions defused so a
//! visitor cannot page a whole channel), the visitor's name and email only
//! when the site's `notify_contact` setting allows it, and a deep link to
//! the conversation in the console. With a `mattermost_api` destination the
//! first post's id is kept per conversation and later notifications are
//! posted as replies to it (one thread per conversation).

use fleetprompt_connectors::mattermost::{self, ApiPost, PostOutcome};
use fleetprompt_core::id::ConversationId;
use fleetprompt_core::signal::ValidationError;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, DirectiveKind, NewSignal, Origin, RetryPolicy, TenantId};
use fleetprompt_store::StoreError;
use fleetprompt_store::directive::{self, NewDirective};
use fleetprompt_store::queue::Claimed;
use fleetprompt_store::webchat::{conversation, escalation, identity, message};
use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::settings::SiteSettings;
use crate::destination::{MattermostApiConfig, MattermostConfig, open_config};
use crate::handler::ResultSignals;
use crate::{Engine, EngineError, Handler, Outcome};

/// Longest visitor text quoted in a notification, in characters.
pub const SUMMARY_CHARS: usize = 300;

/// The signals of an escalation's life.
pub const ESCALATION_SIGNALS: ResultSignals = ResultSignals {
    succeeded: "webchat.escalation.notified",
    failed: "webchat.escalation.failed",
};

pub(crate) fn invalid(reason: impl Into<String>) -> EngineError {
    EngineError::Validation(ValidationError::Invalid {
        field: "args",
        reason: reason.into(),
    })
}

pub(crate) fn retry(error: impl std::fmt::Display) -> Outcome {
    Outcome::Retry {
        error: error.to_string(),
        http_status: None,
        retry_after: None,
    }
}

/// The conversation a directive is about: `conversation_id` in its args,
/// else its `conversation:<id>` subject.
pub(crate) fn conversation_of(args: &Value, subject: Option<&str>) -> Option<ConversationId> {
    args.get("conversation_id")
        .and_then(Value::as_str)
        .or_else(|| subject.and_then(|s| s.strip_prefix("conversation:")))
        .and_then(|s| s.parse().ok())
}

/// The conversation a claimed directive is about, or the failed attempt
/// that says none was named.
pub(crate) fn claimed_conversation(d: &Claimed) -> Result<ConversationId, Outcome> {
    conversation_of(&d.args, d.subject.as_deref()).ok_or_else(|| {
        Outcome::fail("no conversation: give `conversation_id` or a conversation subject")
    })
}

/// Checks that `conversation_id`, when given, is a conversation id.
///
/// Existence is not checked here: rules validate inside the transaction
/// that creates the conversation, where other connections cannot see it
/// yet. Handlers fail cleanly on a conversation that does not exist.
pub(crate) async fn validate_conversation(
    _engine: &Engine,
    _tenant: TenantId,
    args: &Value,
) -> Result<(), EngineError> {
    match args.get("conversation_id") {
        None => Ok(()),
        Some(raw) => raw
            .as_str()
            .and_then(|s| s.parse::<ConversationId>().ok())
            .map(|_| ())
            .ok_or_else(|| invalid("`conversation_id` is not a conversation id")),
    }
}

/// Checks that `destination` names a destination of one of `kinds`.
pub(crate) async fn validate_destination(
    engine: &Engine,
    tenant: TenantId,
    args: &Value,
    kinds: &[&str],
) -> Result<(), EngineError> {
    let name = crate::handlers::str_arg(args, "destination")?;
    let d = crate::destination::find(engine, tenant, name)
        .await
        .map_err(|e| match e {
            EngineError::NotFound(what) => EngineError::NotConfigured(format!(
                "{what} does not exist (create it with POST /admin/v1/destinations)"
            )),
            other => other,
        })?;
    if !kinds.contains(&d.kind.as_str()) {
        return Err(invalid(format!(
            "destination {name:?} is a {} destination; this directive needs one of: {}",
            d.kind,
            kinds.join(", ")
        )));
    }
    Ok(())
}

/// One line, at most [`SUMMARY_CHARS`], with `@` mentions defused.
pub fn safe_summary(text: &str) -> String {
    let one_line: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    let mut out: String = one_line.chars().take(SUMMARY_CHARS).collect();
    if one_line.chars().count() > SUMMARY_CHARS {
        out.push('…');
    }
    // A zero-width joiner after `@` keeps the text readable and stops
    // @channel / @all / @here / @user from notifying anyone.
    out.replace('@', "@\u{2060}")
}

/// Everything a notification says.
#[derive(Debug, Clone)]
pub struct Notice<'a> {
    /// How the site is named (its first allowed origin, else its id).
    pub site: &'a str,
    /// The visitor's words.
    pub content: &'a str,
    /// `Name <email>` when the site allows showing it.
    pub contact: Option<String>,
    /// Deep link into the console.
    pub link: &'a str,
    /// A follow-up of an already notified conversation.
    pub follow_up: bool,
    /// An extra line from the rule's `text` argument.
    pub note: Option<&'a str>,
}

/// The post's Markdown.
pub fn notice_text(n: &Notice<'_>) -> String {
    let mut t = format!(
        "**{} on {}**\n> {}\n",
        if n.follow_up {
            "Follow-up in chat"
        } else {
            "New chat"
        },
        safe_summary(n.site),
        safe_summary(n.content)
    );
    if let Some(c) = &n.contact {
        t.push_str(&format!("From: {}\n", safe_summary(c)));
    }
    if let Some(note) = n.note.filter(|s| !s.trim().is_empty()) {
        t.push_str(&safe_summary(note));
        t.push('\n');
    }
    t.push_str(&format!("[Open conversation]({})", n.link));
    mattermost::truncate_post(&t)
}

/// The console deep link of a conversation.
pub fn conversation_link(engine: &Engine, id: ConversationId) -> String {
    format!(
        "{}/console/conversations/{id}",
        engine.public_url().trim_end_matches('/')
    )
}

/// `webchat.escalate_to_mattermost`.
///
/// Args: `{ "destination", "conversation_id"?, "text"? }` (the conversation
/// defaults to the directive's subject).
pub struct EscalateToMattermost;

impl Handler for EscalateToMattermost {
    fn result_signals(&self) -> ResultSignals {
        ESCALATION_SIGNALS
    }

    fn created_signal(&self) -> Option<&'static str> {
        Some("webchat.escalation.created")
    }

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            validate_destination(engine, tenant, args, &["mattermost", "mattermost_api"]).await?;
            validate_conversation(engine, tenant, args).await
        }
        .boxed()
    }

    fn execute<'a>(&'a self, engine: &'a Engine, d: &'a Claimed) -> BoxFuture<'a, Outcome> {
        notify(engine, d).boxed()
    }
}

async fn notify(engine: &Engine, d: &Claimed) -> Outcome {
    let conv_id = match claimed_conversation(d) {
        Ok(c) => c,
        Err(failed) => return failed,
    };
    let Ok(dest_name) = crate::handlers::str_arg(&d.args, "destination") else {
        return Outcome::fail("`destination` is required");
    };
    let dest = match crate::destination::find(engine, d.tenant, dest_name).await {
        Ok(x) => x,
        Err(EngineError::NotFound(_)) => {
            return Outcome::fail(format!("destination {dest_name:?} no longer exists"));
        }
        Err(e) => return retry(e),
    };
    let db = engine.db();
    let conv = match conversation::get(db, d.tenant, conv_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound) => return Outcome::fail("conversation does not exist"),
        Err(e) => return retry(e),
    };
    let site = match engine.site_cache().get(db, d.tenant, conv.site_id).await {
        Ok(s) => s,
        Err(e) => return retry(e),
    };
    let settings = SiteSettings::from_stored(&site.settings);
    // The words of the message that caused this, else the latest visitor message.
    let mut content = None;
    if let Some(sig) = d.caused_by
        && let Ok(s) = fleetprompt_store::signal::get(db, d.tenant, sig).await
    {
        content = s
            .payload
            .get("content")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if content.is_none() {
        match message::list(db, d.tenant, conv_id, None, 1000).await {
            Ok(ms) => {
                content = ms
                    .iter()
                    .rev()
                    .find(|m| m.role == message::Role::Visitor)
                    .map(|m| m.content.clone());
            }
            Err(e) => return retry(e),
        }
    }
    let contact = if settings.notify_contact {
        match identity::get(db, d.tenant, conv.site_id, conv.visitor_id).await {
            Ok(Some(i)) => match (i.name, i.email) {
                (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
                (None, Some(e)) => Some(e),
                (Some(n), None) => Some(n),
                (None, None) => None,
            },
            Ok(None) => None,
            Err(e) => return retry(e),
        }
    } else {
        None
    };
    let site_name = site
        .allowed_origins
        .first()
        .cloned()
        .unwrap_or_else(|| site.id.to_string());
    let link = conversation_link(engine, conv_id);
    let root = if dest.kind == "mattermost_api" {
        match escalation::thread_root(db, d.tenant, conv_id, dest_name).await {
            Ok(r) => r,
            Err(e) => return retry(e),
        }
    } else {
        None
    };
    let follow_up =
        root.is_some() || d.args.get("follow_up").and_then(Value::as_bool) == Some(true);
    let text = notice_text(&Notice {
        site: &site_name,
        content: content.as_deref().unwrap_or("(no message text)"),
        contact,
        link: &link,
        follow_up,
        note: d.args.get("text").and_then(Value::as_str),
    });
    let outcome = match dest.kind.as_str() {
        "mattermost" => {
            let cfg: MattermostConfig = match open_config(engine, d.tenant, &dest) {
                Ok(c) => c,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            mattermost::post_webhook(engine.http(), &cfg.webhook_url, &text).await
        }
        "mattermost_api" => {
            let cfg: MattermostApiConfig = match open_config(engine, d.tenant, &dest) {
                Ok(c) => c,
                Err(e) => return Outcome::fail(e.to_string()),
            };
            // Stable across attempts: the server only compares the strings
            // (its own webapp sends `<user_id>:<timestamp>`).
            let pending_post_id = format!("fleetprompt:{}", d.id);
            mattermost::post_api(
                engine.http(),
                &ApiPost {
                    base_url: &cfg.base_url,
                    token: &cfg.token,
                    channel_id: &cfg.channel_id,
                    root_id: root.as_deref(),
                    message: &text,
                    pending_post_id: &pending_post_id,
                },
            )
            .await
        }
        other => {
            return Outcome::fail(format!(
                "destination {dest_name:?} is a {other} destination"
            ));
        }
    };
    match outcome {
        PostOutcome::Posted { status, post_id } => {
            if root.is_none()
                && let Some(p) = &post_id
                && dest.kind == "mattermost_api"
            {
                let stored = async {
                    let mut tx = db.begin().await?;
                    escalation::set_thread_root(&mut tx, d.tenant, conv_id, dest_name, p, now_ms())
                        .await?;
                    tx.commit().await
                }
                .await;
                if let Err(e) = stored {
                    // The post is out; a lost root only costs threading.
                    tracing::warn!(error = %e, conversation = %conv_id, "could not store the Mattermost thread root");
                }
            }
            Outcome::Succeeded {
                result: json!({
                    "status": status,
                    "post_id": post_id,
                    "root_id": root,
                    "conversation_id": conv_id,
                    "link": link,
                }),
                http_status: Some(status),
                external_ref: post_id,
            }
        }
        PostOutcome::Failed {
            retriable: true,
            status,
            error,
            retry_after,
            ..
        } => Outcome::Retry {
            error,
            http_status: status,
            retry_after,
        },
        PostOutcome::Failed {
            status,
            error,
            error_id,
            ..
        } => Outcome::Fail {
            error,
            http_status: status,
            external_ref: error_id,
        },
    }
}

/// `webchat.escalate_to_email`: records `email.outbound.requested` and
/// creates an `email.send` task in the edge lane, which an Edge Connector
/// of the tenant claims and delivers through the tenant's own mail server.
///
/// Args: `{ "to"?, "conversation_id"? }` (without `to`, the connector's
/// default recipient).
pub struct EscalateToEmail;

/// The subject line of an escalation email.
pub const EMAIL_SUBJECT: &str = "Unanswered website chat";

/// The plain-text body of an escalation email: no visitor text, only the
/// link, so nothing a visitor typed leaves through the tenant's mail server
/// unreviewed.
pub fn email_text(link: &str) -> String {
    format!(
        "A visitor on your website is waiting for an answer in the chat.\n\nOpen the conversation: {link}\n"
    )
}

impl Handler for EscalateToEmail {
    fn result_signals(&self) -> ResultSignals {
        ESCALATION_SIGNALS
    }

    fn created_signal(&self) -> Option<&'static str> {
        Some("webchat.escalation.created")
    }

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
            let conv_id = match claimed_conversation(d) {
                Ok(c) => c,
                Err(failed) => return failed,
            };
            let to = d.args.get("to").and_then(Value::as_str);
            let link = conversation_link(engine, conv_id);
            let payload = json!({
                "conversation_id": conv_id,
                "to": to,
                "subject": EMAIL_SUBJECT,
                "text": email_text(&link),
                "link": link,
                "requested_by": d.id,
            });
            let result = async {
                let mut tx = engine.db().begin().await?;
                let s = NewSignal::new(
                    "email.outbound.requested",
                    &super::conversation_subject(conv_id),
                    payload.clone(),
                    format!("email_outbound:{}:{}", d.tenant, d.id),
                    now_ms(),
                )?;
                let mut s = s;
                s.caused_by = Some(d.id);
                engine.record_in_tx(&mut tx, d.tenant, &s).await?;
                let task = NewDirective {
                    id: DirectiveId::new(),
                    kind: DirectiveKind::parse("email.send".to_owned())?,
                    args: payload.clone(),
                    dedupe_key: format!("email_send:{}:{}", d.tenant, d.id),
                    subject: Some(super::conversation_subject(conv_id)),
                    retry: RetryPolicy::default(),
                    // Due now: the kind puts it in the edge lane, which only
                    // the tenant's connectors claim.
                    run_at: now_ms(),
                    origin: Origin::System {
                        component: "webchat.escalate_to_email".into(),
                    },
                    caused_by: d.caused_by,
                };
                let created = directive::insert(&mut tx, d.tenant, &task).await?;
                tx.commit().await?;
                Ok::<_, EngineError>(created.id())
            }
            .await;
            match result {
                Ok(task) => Outcome::Succeeded {
                    result: json!({ "queued": "email.send", "task": task, "conversation_id": conv_id }),
                    http_status: None,
                    external_ref: Some(task.to_string()),
                },
                Err(e) => retry(e),
            }
        }
        .boxed()
    }
}

/// The signals of an email's delivery.
pub const EMAIL_SIGNALS: ResultSignals = ResultSignals {
    succeeded: "email.outbound.sent",
    failed: "email.outbound.failed",
};

/// `email.send`: delivered by an Edge Connector (`fleetprompt-edge`), which
/// claims it over `/edge/v1/tasks/claim` and reports through
/// `/edge/v1/tasks/{id}/result`; the outcome is written by the same
/// completion path as the platform's own attempts. The kind runs in the edge
/// lane ([`fleetprompt_core::Runner::Edge`]), so no platform worker claims it.
///
/// Args: `{ "to"?, "subject", "text"?, "link"?, "conversation_id"? }`.
pub struct EmailSend;

impl Handler for EmailSend {
    fn result_signals(&self) -> ResultSignals {
        EMAIL_SIGNALS
    }

    fn validate<'a>(
        &'a self,
        _: &'a Engine,
        _: TenantId,
        args: &'a Value,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        let check = || {
            if !args.get("subject").is_some_and(Value::is_string) {
                return Err(invalid("`subject` (a string) is required"));
            }
            for field in ["to", "text", "link"] {
                if args
                    .get(field)
                    .is_some_and(|v| !v.is_string() && !v.is_null())
                {
                    return Err(invalid(format!("`{field}` must be a string")));
                }
            }
            Ok(())
        };
        futures::future::ready(check()).boxed()
    }

    fn execute<'a>(&'a self, _: &'a Engine, _: &'a Claimed) -> BoxFuture<'a, Outcome> {
        // Unreachable through the platform's claim, which takes only the
        // platform lane; kept as a clear failure rather than a panic.
        futures::future::ready(Outcome::fail(
            "email.send runs on an Edge Connector, not on a platform worker",
        ))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_safe_line() {
        let s = safe_summary("hello\n\n@channel   please\thelp");
        assert_eq!(s, "hello @\u{2060}channel please help");
        let long = "x".repeat(1000);
        assert_eq!(safe_summary(&long).chars().count(), SUMMARY_CHARS + 1);
    }

    #[test]
    fn notice_has_site_summary_and_link_and_contact_only_when_given() {
        let n = Notice {
            site: "https://shop.example",
            content: "Where is my order?",
            contact: None,
            link: "http://fp/console/conversations/conv_1",
            follow_up: false,
            note: None,
        };
        let t = notice_text(&n);
        assert!(t.contains("New chat on https://shop.example"), "{t}");
        assert!(t.contains("> Where is my order?"), "{t}");
        assert!(
            t.contains("(http://fp/console/conversations/conv_1)"),
            "{t}"
        );
        assert!(!t.contains("From:"), "{t}");
        let t = notice_text(&Notice {
            contact: Some("Ada <ada@example.com>".into()),
            follow_up: true,
            ..n
        });
        assert!(t.starts_with("**Follow-up"), "{t}");
        assert!(t.contains("From: Ada <ada@\u{2060}example.com>"), "{t}");
    }
}
