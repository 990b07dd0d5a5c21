//! Escalation: `webchat.escalate_to_mattermost` (email: [`crate::email`]).
//!
//! A notification is one concise post: the site, a safe summary of the
//! visitor's message (one line, truncated, inert: `@`-mentions defused so a
//! visitor cannot page a whole channel, Markdown and HTML escaped so their
//! text cannot become a link, an image or a heading), the visitor's name and email only
//! when the site's `notify_contact` setting allows it, and a deep link to
//! the conversation in the console. With a `mattermost_api` destination the
//! first post's id is kept per conversation and later notifications are
//! posted as replies to it (one thread per conversation).

use std::sync::Arc;

use crate::store::{conversation, escalation, identity, message};
use crate::types::id::ConversationId;
use fleetprompt_connectors::mattermost::{self, ApiPost, PostOutcome};
use fleetprompt_core::TenantId;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::StoreError;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::settings::SiteSettings;
use fleetprompt_engine::destination::{MattermostApiConfig, MattermostConfig, open_config};
use fleetprompt_engine::handler::ResultSignals;
use fleetprompt_engine::{
    ArgsError, Attempt, Engine, EngineError, Failed, Handler, OrRetry, Outcome,
};

/// Longest visitor text quoted in a notification, in characters.
pub const SUMMARY_CHARS: usize = 300;

/// The signals of an escalation's life.
pub const ESCALATION_SIGNALS: ResultSignals = ResultSignals {
    succeeded: "webchat.escalation.notified",
    failed: "webchat.escalation.failed",
};

/// The conversation a directive is about: its `conversation_id` argument,
/// else its `conversation:<id>` subject.
pub(crate) fn conversation_of(
    arg: Option<ConversationId>,
    subject: Option<&str>,
) -> Option<ConversationId> {
    arg.or_else(|| {
        subject
            .and_then(|s| s.strip_prefix("conversation:"))
            .and_then(|s| s.parse().ok())
    })
}

/// The conversation a claimed directive is about, or the failed attempt
/// that says none was named.
///
/// Existence is not checked when the directive is created: rules create
/// it inside the transaction that creates the conversation, where other
/// connections cannot see it yet. Handlers fail cleanly on a conversation
/// that does not exist.
pub(crate) fn claimed_conversation(
    d: &Claimed,
    arg: Option<ConversationId>,
) -> Result<ConversationId, Failed> {
    conversation_of(arg, d.subject.as_deref()).ok_or_else(|| {
        Failed::fail("no conversation: give `conversation_id` or a conversation subject")
    })
}

/// Checks that the destination `name` exists and is of one of `kinds`.
pub(crate) async fn validate_destination(
    engine: &Engine,
    tenant: TenantId,
    name: &str,
    kinds: &[&str],
) -> Result<(), EngineError> {
    let d = fleetprompt_engine::destination::find(engine, tenant, name)
        .await
        .map_err(|e| match e {
            EngineError::NotFound(what) => EngineError::NotConfigured(format!(
                "{what} does not exist (create it with POST /admin/v1/destinations)"
            )),
            other => other,
        })?;
    if !kinds.contains(&d.kind.as_str()) {
        return Err(ArgsError::new(
            &["destination"],
            format!(
                "destination {name:?} is a {} destination; this directive needs one of: {}",
                d.kind,
                kinds.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

/// One line, at most [`SUMMARY_CHARS`], inert in Mattermost: mentions
/// defused, Markdown and HTML escaped ([`inert_markdown`]).
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
    inert_markdown(&out).replace('@', "@\u{2060}")
}

/// Escapes what Mattermost's Markdown would act on in one line of text
/// that is not ours: link and image brackets, emphasis, code, HTML, and a
/// leading heading, list or quote marker, each with a backslash (which
/// Markdown hides). Bare URLs are broken (`http\://`, `www\.`) so neither
/// the client nor the server's link preview fetches what a visitor typed.
/// What renders reads as the visitor wrote it.
pub fn inert_markdown(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 8);
    for (i, c) in line.char_indices() {
        let escape = match c {
            '\\' | '`' | '*' | '_' | '~' | '[' | ']' | '(' | ')' | '<' | '>' | '!' | '|' | '&' => {
                true
            }
            // Only at the start do these begin a heading, list or quote.
            '#' | '-' | '+' | '=' => i == 0,
            ':' => line[i..].starts_with("://"),
            '.' => i >= 3 && line[..i].to_ascii_lowercase().ends_with("www"),
            _ => false,
        };
        if escape {
            out.push('\\');
        }
        out.push(c);
    }
    // "1. text" starts an ordered list.
    if let Some(dot) = out.find(". ")
        && dot > 0
        && out[..dot].bytes().all(|b| b.is_ascii_digit())
    {
        out.insert(dot, '\\');
    }
    out
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

/// The visitor's name and email, as far as they gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Contact {
    /// Their name.
    pub name: Option<String>,
    /// Their email address.
    pub email: Option<String>,
}

impl Contact {
    /// `Name <email>`, the email, the name, or nothing.
    pub fn display(&self) -> Option<String> {
        match (&self.name, &self.email) {
            (Some(n), Some(e)) => Some(format!("{n} <{e}>")),
            (None, Some(e)) => Some(e.clone()),
            (Some(n), None) => Some(n.clone()),
            (None, None) => None,
        }
    }
}

/// The visitor's contact details when the site's `notify_contact` setting
/// lets notifications show them; `None` otherwise.
pub(crate) async fn visitor_contact(
    engine: &Engine,
    tenant: TenantId,
    conv: &conversation::ConversationRow,
    settings: &SiteSettings,
) -> Result<Option<Contact>, StoreError> {
    if !settings.notify_contact {
        return Ok(None);
    }
    Ok(
        identity::get(engine.db(), tenant, conv.site_id, conv.visitor_id)
            .await?
            .map(|i| Contact {
                name: i.name,
                email: i.email,
            }),
    )
}

/// How a site is named in notifications: its first allowed origin, else its id.
pub(crate) fn site_name(site: &crate::store::site::SiteRow) -> String {
    site.allowed_origins
        .first()
        .cloned()
        .unwrap_or_else(|| site.id.to_string())
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
/// Args: `{ "destination", "conversation_id"?, "text"?, "follow_up"? }`
/// (the conversation defaults to the directive's subject).
/// Holds the package's state, whose site cache it reads.
pub struct EscalateToMattermost(pub Arc<crate::Webchat>);

/// The arguments of `webchat.escalate_to_mattermost`.
#[derive(Debug, Deserialize)]
pub struct MattermostArgs {
    /// A `mattermost` or `mattermost_api` destination's name.
    pub destination: String,
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// A note added to the post.
    #[serde(default)]
    pub text: Option<String>,
    /// Posts as a follow-up even without a thread to reply in.
    #[serde(default)]
    pub follow_up: bool,
}

impl Handler for EscalateToMattermost {
    type Args = MattermostArgs;

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
        args: &'a MattermostArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        validate_destination(
            engine,
            tenant,
            &args.destination,
            &["mattermost", "mattermost_api"],
        )
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: MattermostArgs,
    ) -> BoxFuture<'a, Attempt> {
        notify(&self.0, engine, d, args).boxed()
    }
}

async fn notify(
    state: &crate::Webchat,
    engine: &Engine,
    d: &Claimed,
    args: MattermostArgs,
) -> Attempt {
    let conv_id = claimed_conversation(d, args.conversation_id)?;
    let dest_name = args.destination.as_str();
    let dest = match fleetprompt_engine::destination::find(engine, d.tenant, dest_name).await {
        Ok(x) => x,
        Err(EngineError::NotFound(_)) => {
            return Err(Failed::fail(format!(
                "destination {dest_name:?} no longer exists"
            )));
        }
        Err(e) => return Err(Failed::retry(e)),
    };
    let db = engine.db();
    let conv = match conversation::get(db, d.tenant, conv_id).await {
        Ok(c) => c,
        Err(StoreError::NotFound { .. }) => {
            return Err(Failed::fail("conversation does not exist"));
        }
        Err(e) => return Err(Failed::retry(e)),
    };
    let site = state
        .site_cache()
        .get(db, d.tenant, conv.site_id)
        .await
        .or_retry()?;
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
        let ms = message::list(db, d.tenant, conv_id, None, 1000)
            .await
            .or_retry()?;
        content = ms
            .iter()
            .rev()
            .find(|m| m.role == message::Role::Visitor)
            .map(|m| m.content.clone());
    }
    let contact = visitor_contact(engine, d.tenant, &conv, &settings)
        .await
        .or_retry()?
        .and_then(|c| c.display());
    let site_name = site_name(&site);
    let link = conversation_link(engine, conv_id);
    let root = if dest.kind == "mattermost_api" {
        escalation::thread_root(db, d.tenant, conv_id, dest_name)
            .await
            .or_retry()?
    } else {
        None
    };
    let follow_up = root.is_some() || args.follow_up;
    let text = notice_text(&Notice {
        site: &site_name,
        content: content.as_deref().unwrap_or("(no message text)"),
        contact,
        link: &link,
        follow_up,
        note: args.text.as_deref(),
    });
    let outcome = match dest.kind.as_str() {
        "mattermost" => {
            let cfg: MattermostConfig = open_config(engine, d.tenant, &dest).or_fail()?;
            mattermost::post_webhook(engine.http(), &cfg.webhook_url, &text).await
        }
        "mattermost_api" => {
            let cfg: MattermostApiConfig = open_config(engine, d.tenant, &dest).or_fail()?;
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
            return Err(Failed::fail(format!(
                "destination {dest_name:?} is a {other} destination"
            )));
        }
    };
    Ok(match outcome {
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_are_one_safe_line() {
        let s = safe_summary("hello\n\n@channel   please\thelp");
        assert_eq!(s, "hello @\u{2060}channel please help");
        assert_eq!(
            safe_summary("where is my order #123?"),
            "where is my order #123?"
        );
        let long = "x".repeat(1000);
        assert_eq!(safe_summary(&long).chars().count(), SUMMARY_CHARS + 1);
    }

    #[test]
    fn visitor_markdown_and_html_are_escaped() {
        assert_eq!(
            inert_markdown(
                "![p](http://tracker.test/p.gif) [Open conversation](https://phish.test)"
            ),
            r"\!\[p\]\(http\://tracker.test/p.gif\) \[Open conversation\]\(https\://phish.test\)"
        );
        assert_eq!(
            inert_markdown("<img src=x> & *bold* `code`"),
            r"\<img src=x\> \& \*bold\* \`code\`"
        );
        assert_eq!(inert_markdown("# big"), r"\# big");
        assert_eq!(inert_markdown("1. first"), r"1\. first");
        assert_eq!(inert_markdown("see www.phish.test"), r"see www\.phish.test");
        assert_eq!(inert_markdown("a-b #1"), "a-b #1");
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
        assert!(t.contains(r"New chat on https\://shop.example"), "{t}");
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
        assert!(t.contains(r"From: Ada \<ada@"), "{t}");
        assert!(t.contains("@\u{2060}example.com\\>"), "{t}");
    }
}
