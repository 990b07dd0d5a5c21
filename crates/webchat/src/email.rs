//! Email escalation, both ways.
//!
//! - `webchat.escalate_to_email` composes the email (site, the visitor's
//!   name and email when the site's `notify_contact` allows, the last
//!   messages, the deep link; plain text with an HTML alternative; a subject
//!   stable per conversation) and queues it as an `email.send` task for the
//!   Edge Connector its `email` destination names, recording
//!   `email.outbound.requested` in the same transaction.
//! - `email.send` runs on that connector. When SMTP accepted it, its
//!   completion records `email.outbound.sent` and, because an `email.send`
//!   is an escalation's delivery, `webchat.escalation.notified` (failed for
//!   good: `email.outbound.failed`, `webchat.escalation.failed`).
//! - A reply to such an email comes back through the connector's IMAP
//!   watch ([`receive_reply`]) as `email.inbound.received`; a shipped rule
//!   turns one from the team into `webchat.reply_send`.
//!
//! Threading: every email of a conversation carries `References:
//! <conv_…@domain>` (the connector adds its own `Message-ID` domain), so
//! mail clients thread them and a reply names the conversation even when
//! its `In-Reply-To` is lost.

use std::sync::Arc;

use crate::store::{conversation, message};
use crate::types::id::ConversationId;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, DirectiveKind, NewSignal, Origin, RetryPolicy, TenantId};
use fleetprompt_store::StoreError;
use fleetprompt_store::directive::{self, NewDirective};
use fleetprompt_store::edge::EdgeConnector;
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::escalation::{
    Contact, ESCALATION_SIGNALS, claimed_conversation, conversation_link, site_name,
    validate_destination, visitor_contact,
};
use crate::settings::SiteSettings;
use fleetprompt_engine::destination::{EmailConfig, email_address, open_config};
use fleetprompt_engine::handler::ResultSignals;
use fleetprompt_engine::{
    Attempt, Engine, EngineError, Failed, Handler, OrRetry, Outcome, metrics,
};

/// How many of the conversation's last messages an email quotes.
pub const EMAIL_MESSAGES: usize = 10;
/// Longest quoted message, in characters.
pub const EMAIL_MESSAGE_CHARS: usize = 1000;
/// Longest reply text kept from an inbound email, in bytes (a chat reply's limit).
pub const INBOUND_TEXT_MAX: usize = crate::reply::MAX_REPLY_BYTES;

/// `webchat.escalate_to_email`: composes the escalation email and queues it
/// as an `email.send` task in the edge lane.
///
/// Args: `{ "destination"?, "to"?, "conversation_id"? }`. With
/// `destination` (an `email` destination, as the shipped rule names), the
/// email goes to its `to` list, from its `from`, through its connector; a
/// tenant without that destination has the directive skipped with a note.
/// Without one, to `to` or the connector's `--to`, through any of the
/// tenant's connectors.
/// Holds the package's state, whose site cache it reads.
pub struct EscalateToEmail(pub Arc<crate::Webchat>);

/// The conversation's short tag in subjects: the last four characters of
/// its id (the random end of a UUIDv7), stable for the conversation.
pub fn conversation_tag(id: ConversationId) -> String {
    let s = id.to_string();
    s[s.len().saturating_sub(4)..].to_owned()
}

/// The subject of a conversation's emails, the same for every email of it
/// so mail clients keep them together:
/// `[FleetPrompt] Conversation with Ana (#3f9c)`.
pub fn email_subject(contact: Option<&Contact>, site: &str, id: ConversationId) -> String {
    let who = contact
        .and_then(|c| c.name.clone().or_else(|| c.email.clone()))
        .map(|w| one_line(&w, 60))
        .unwrap_or_else(|| format!("a visitor on {}", one_line(site, 80)));
    format!(
        "[FleetPrompt] Conversation with {who} (#{})",
        conversation_tag(id)
    )
}

fn one_line(s: &str, max: usize) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out: String = joined
        .chars()
        .filter(|c| !c.is_control())
        .take(max)
        .collect();
    if joined.chars().count() > max {
        out.push('…');
    }
    out
}

/// What an escalation email says.
#[derive(Debug, Clone)]
pub struct EmailBody<'a> {
    /// The site's name.
    pub site: &'a str,
    /// The visitor, when the site lets notifications show them.
    pub contact: Option<&'a Contact>,
    /// The last messages, oldest first: (role, text).
    pub messages: &'a [(String, String)],
    /// The console deep link.
    pub link: &'a str,
}

fn who(role: &str) -> &'static str {
    match role {
        "visitor" => "Visitor",
        "agent" => "Operator",
        _ => "Assistant",
    }
}

fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(EMAIL_MESSAGE_CHARS).collect();
    if text.chars().count() > EMAIL_MESSAGE_CHARS {
        out.push('…');
    }
    out
}

/// The plain-text body.
pub fn email_text(b: &EmailBody<'_>) -> String {
    let mut t = format!(
        "A visitor on {} is waiting for an answer in the chat.\n\n",
        b.site
    );
    if let Some(c) = b.contact.and_then(Contact::display) {
        t.push_str(&format!("Visitor: {c}\n\n"));
    }
    if !b.messages.is_empty() {
        t.push_str("Last messages:\n\n");
        for (role, text) in b.messages {
            t.push_str(&format!("{}:\n", who(role)));
            for line in excerpt(text).lines() {
                t.push_str(&format!("  {line}\n"));
            }
            t.push('\n');
        }
    }
    t.push_str(&format!(
        "Open the conversation: {}\n\nReply to this email to answer the visitor in the chat.\n",
        b.link
    ));
    t
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The HTML alternative: the same content, every visitor-typed character escaped.
pub fn email_html(b: &EmailBody<'_>) -> String {
    let mut h = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\">\
         <p>A visitor on <b>{}</b> is waiting for an answer in the chat.</p>",
        html_escape(b.site)
    );
    if let Some(c) = b.contact.and_then(Contact::display) {
        h.push_str(&format!("<p>Visitor: {}</p>", html_escape(&c)));
    }
    if !b.messages.is_empty() {
        h.push_str("<p>Last messages:</p>");
        for (role, text) in b.messages {
            h.push_str(&format!(
                "<p><b>{}</b><br><span style=\"white-space:pre-wrap\">{}</span></p>",
                who(role),
                html_escape(&excerpt(text))
            ));
        }
    }
    let link = html_escape(b.link);
    h.push_str(&format!(
        "<p><a href=\"{link}\">Open the conversation</a></p>\
         <p style=\"color:#666\">Reply to this email to answer the visitor in the chat.</p></body></html>"
    ));
    h
}

/// The arguments of `webchat.escalate_to_email`.
#[derive(Debug, Deserialize)]
pub struct EscalateToEmailArgs {
    /// An `email` destination's name (its `to`, `from` and connector);
    /// without one, `to` says where the email goes.
    #[serde(default)]
    pub destination: Option<String>,
    /// The address, when no destination is named.
    #[serde(default)]
    pub to: Option<String>,
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
}

impl Handler for EscalateToEmail {
    type Args = EscalateToEmailArgs;

    fn result_signals(&self) -> ResultSignals {
        // Queuing the email is not notifying anyone: the notified signal
        // comes with the email's own success ([`EmailSend`]).
        ResultSignals {
            succeeded: "directive.succeeded",
            failed: ESCALATION_SIGNALS.failed,
        }
    }

    fn created_signal(&self) -> Option<&'static str> {
        Some("webchat.escalation.created")
    }

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a EscalateToEmailArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            if let Some(name) = &args.destination {
                validate_destination(engine, tenant, name, &["email"]).await?;
            }
            Ok(())
        }
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: EscalateToEmailArgs,
    ) -> BoxFuture<'a, Attempt> {
        escalate(&self.0, engine, d, args).boxed()
    }
}

async fn escalate(
    state: &crate::Webchat,
    engine: &Engine,
    d: &Claimed,
    args: EscalateToEmailArgs,
) -> Attempt {
    let conv_id = claimed_conversation(d, args.conversation_id)?;
    let db = engine.db();
    let dest_name = args.destination.as_deref();
    let dest = match dest_name {
        None => None,
        Some(name) => match fleetprompt_engine::destination::find(engine, d.tenant, name).await {
            Ok(row) if row.kind == "email" => {
                Some(open_config::<EmailConfig>(engine, d.tenant, &row).or_fail()?)
            }
            Ok(row) => {
                return Err(Failed::fail(format!(
                    "destination {name:?} is a {} destination, not email",
                    row.kind
                )));
            }
            Err(EngineError::NotFound(_)) => {
                return Err(Failed::fail(format!(
                    "destination {name:?} no longer exists"
                )));
            }
            Err(e) => return Err(Failed::retry(e)),
        },
    };
    // A conversation that is gone (or an API caller's made-up subject) still
    // gets its email: the link alone, as nothing else is known.
    let (site, contact, messages) = match conversation::get(db, d.tenant, conv_id).await {
        Ok(conv) => {
            let site = state
                .site_cache()
                .get(db, d.tenant, conv.site_id)
                .await
                .or_retry()?;
            let settings = SiteSettings::from_stored(&site.settings);
            let contact = visitor_contact(engine, d.tenant, &conv, &settings)
                .await
                .or_retry()?;
            let ms = message::list(db, d.tenant, conv_id, None, 1000)
                .await
                .or_retry()?;
            let skip = ms.len().saturating_sub(EMAIL_MESSAGES);
            let messages: Vec<(String, String)> = ms
                .into_iter()
                .skip(skip)
                .map(|m| (m.role.as_str().to_owned(), m.content))
                .collect();
            (site_name(&site), contact, messages)
        }
        Err(StoreError::NotFound { .. }) => ("your website".to_owned(), None, Vec::new()),
        Err(e) => return Err(Failed::retry(e)),
    };
    let link = conversation_link(engine, conv_id);
    let body = EmailBody {
        site: &site,
        contact: contact.as_ref(),
        messages: &messages,
        link: &link,
    };
    let subject = email_subject(contact.as_ref(), &site, conv_id);
    let to: Value = match &dest {
        Some(cfg) => json!(cfg.to),
        None => json!(args.to),
    };
    let from = dest.as_ref().and_then(|c| c.from.clone());
    let connector = dest.as_ref().map(|c| c.connector_id);
    // What the timeline shows of the request: never the message text.
    let requested = json!({
        "conversation_id": conv_id,
        "to": to,
        "from": from,
        "subject": subject,
        "destination": dest_name,
        "connector_id": connector,
        "link": link,
        "requested_by": d.id,
    });
    let mut args = requested.clone();
    args["text"] = json!(email_text(&body));
    args["html"] = json!(email_html(&body));
    // The connector makes `<conv_…@its domain>` of it: one thread per conversation.
    args["thread_id"] = json!(conv_id);
    let result = async {
        let mut tx = engine.db().begin().await?;
        let mut s = NewSignal::new(
            "email.outbound.requested",
            &crate::conversation_subject(conv_id),
            requested,
            format!("email_outbound:{}:{}", d.tenant, d.id),
            now_ms(),
        )?;
        s.caused_by = Some(d.id);
        engine.record_in_tx(&mut tx, d.tenant, &s).await?;
        let task = NewDirective {
            id: DirectiveId::new(),
            kind: DirectiveKind::parse("email.send".to_owned())?,
            args,
            dedupe_key: format!("email_send:{}:{}", d.tenant, d.id),
            subject: Some(crate::conversation_subject(conv_id)),
            retry: RetryPolicy::default(),
            // Due now: the kind puts it in the edge lane, which only the
            // tenant's connectors claim (only `connector_id`'s, when set).
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
    let task = result.or_retry()?;
    Ok(Outcome::Succeeded {
        result: json!({ "queued": "email.send", "task": task, "conversation_id": conv_id }),
        http_status: None,
        external_ref: Some(task.to_string()),
    })
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
/// Args: `{ "to"?: address or [addresses], "from"?, "subject", "text"?,
/// "html"?, "link"?, "thread_id"?, "connector_id"?, "conversation_id"? }`.
pub struct EmailSend;

impl Handler for EmailSend {
    type Args = EmailSendArgs;

    fn result_signals(&self) -> ResultSignals {
        EMAIL_SIGNALS
    }

    fn also_result_signals(&self) -> Option<ResultSignals> {
        // An email.send is an escalation's delivery: its end is the
        // escalation's.
        Some(ESCALATION_SIGNALS)
    }

    fn execute<'a>(
        &'a self,
        _: &'a Engine,
        _: &'a Claimed,
        _: EmailSendArgs,
    ) -> BoxFuture<'a, Attempt> {
        // Unreachable through the platform's claim, which takes only the
        // platform lane; kept as a clear failure rather than a panic.
        futures::future::ready(Err(Failed::fail(
            "email.send runs on an Edge Connector, not on a platform worker",
        )))
        .boxed()
    }
}

/// The arguments of `email.send`, as its Edge Connector reads them.
#[derive(Debug, Deserialize)]
pub struct EmailSendArgs {
    /// One address or a list of them; the connector's default when not given.
    #[serde(default, deserialize_with = "recipients")]
    pub to: Vec<String>,
    /// The sender.
    #[serde(default)]
    pub from: Option<String>,
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    #[serde(default)]
    pub text: Option<String>,
    /// The HTML body.
    #[serde(default)]
    pub html: Option<String>,
    /// A link the email points to.
    #[serde(default)]
    pub link: Option<String>,
    /// Makes the emails of one thread one conversation in a mail client.
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The Edge Connector that sends it (else any of the tenant's).
    #[serde(default)]
    pub connector_id: Option<String>,
}

/// `to`: an address, a list of addresses, or `null`.
fn recipients<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(one)) => Ok(vec![one]),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => Ok(a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()),
        Some(_) => Err(serde::de::Error::custom(
            "must be an address or a list of addresses",
        )),
    }
}

/// A reply email an Edge Connector found in its mailbox.
#[derive(Debug, Clone)]
pub struct InboundEmail {
    /// Its `Message-ID` (the dedupe key: the same email seen twice is one).
    pub message_id: String,
    /// The `email.send` tasks it answers, from its `In-Reply-To` and
    /// `References` (the connector keeps only ids it made: `dir_…`), and
    /// the conversations it names (`conv_…`).
    pub references: Vec<String>,
    /// The sender's address.
    pub from: String,
    /// The reply's own words: quoted text and signature already stripped.
    pub text: String,
}

/// What became of an inbound email.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// Recorded as `email.inbound.received` about `conversation`;
    /// `known_sender` says whether it came from the team (then the shipped
    /// rule sends it to the visitor).
    Recorded {
        /// The conversation it answers.
        conversation: ConversationId,
        /// Whether the sender is on the email's `to` list.
        known_sender: bool,
        /// Whether this `Message-ID` was reported before.
        duplicate: bool,
    },
    /// It answers none of this tenant's emails: not recorded.
    Ignored(String),
}

/// The `email.send` task a reference names, if it is one of the tenant's.
async fn referenced_task(
    engine: &Engine,
    tenant: TenantId,
    reference: &str,
) -> Result<Option<fleetprompt_store::directive::DirectiveRow>, EngineError> {
    let Ok(id) = reference.parse::<DirectiveId>() else {
        return Ok(None);
    };
    match fleetprompt_store::directive::get(engine.db(), tenant, id).await {
        Ok(row) if row.kind == "email.send" => Ok(Some(row)),
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn addresses(to: &Value) -> Vec<String> {
    match to {
        Value::String(one) => email_address(one).into_iter().collect(),
        Value::Array(many) => many
            .iter()
            .filter_map(Value::as_str)
            .filter_map(email_address)
            .collect(),
        _ => Vec::new(),
    }
}

/// Records a reply an Edge Connector found: matched to the conversation of
/// the email it answers, in the connector's own tenant, as
/// `email.inbound.received` (routed in the same transaction), deduped by
/// its `Message-ID`. A reply from an address on that email's `to` list (the
/// destination's team) is marked `known_sender`; one from anyone else is
/// recorded only.
pub async fn receive_reply(
    engine: &Engine,
    connector: &EdgeConnector,
    email: InboundEmail,
) -> Result<InboundOutcome, EngineError> {
    let tenant = connector.tenant_id;
    let message_id = email.message_id.trim().trim_matches(['<', '>']).to_owned();
    if message_id.is_empty() || message_id.len() > 998 || message_id.chars().any(char::is_control) {
        return Err(fleetprompt_engine::edge::invalid(
            "message_id",
            "must be the email's Message-ID",
        ));
    }
    let Some(sender) = email_address(&email.from) else {
        return Err(fleetprompt_engine::edge::invalid(
            "from",
            "must be the sender's address",
        ));
    };
    let mut task = None;
    for r in &email.references {
        if let Some(row) = referenced_task(engine, tenant, r).await? {
            task = Some(row);
            break;
        }
    }
    let Some(task) = task else {
        metrics::inbound_email("ignored");
        return Ok(InboundOutcome::Ignored(
            "it answers none of this tenant's emails".into(),
        ));
    };
    // A stored task's arguments, read as they were written (by
    // `webchat.escalate_to_email`): `conversation_id`, else its subject.
    let named = task
        .args
        .get("conversation_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let Some(conv) = crate::escalation::conversation_of(named, task.subject.as_deref()) else {
        metrics::inbound_email("ignored");
        return Ok(InboundOutcome::Ignored(
            "the email it answers is about no conversation".into(),
        ));
    };
    let known_sender = addresses(&task.args["to"]).contains(&sender);
    let mut text = email.text.trim().to_owned();
    if text.len() > INBOUND_TEXT_MAX {
        let mut end = INBOUND_TEXT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    let payload = crate::ingest::with_content(
        json!({
            "conversation_id": conv,
            "sender": sender,
            "known_sender": known_sender,
            "message_id": message_id,
            "in_reply_to": task.id,
            "destination": task.args.get("destination"),
            "connector_id": connector.id,
        }),
        &text,
    );
    let mut s = NewSignal::new(
        "email.inbound.received",
        &crate::conversation_subject(conv),
        payload,
        format!("email_inbound:{tenant}:{message_id}"),
        now_ms(),
    )?;
    s.caused_by = Some(task.id);
    let recorded = engine.record_signal(tenant, s).await?;
    metrics::inbound_email(if recorded.duplicate {
        "duplicate"
    } else if known_sender {
        "matched"
    } else {
        "stranger"
    });
    Ok(InboundOutcome::Recorded {
        conversation: conv,
        known_sender,
        duplicate: recorded.duplicate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv() -> ConversationId {
        "conv_0193a1b2c3d4e5f60718293a4b5c3f9c".parse().unwrap()
    }

    #[test]
    fn the_subject_is_stable_and_names_the_visitor_only_when_allowed() {
        let ana = Contact {
            name: Some("Ana".into()),
            email: Some("ana@example.com".into()),
        };
        assert_eq!(
            email_subject(Some(&ana), "https://shop.example", conv()),
            "[FleetPrompt] Conversation with Ana (#3f9c)"
        );
        assert_eq!(
            email_subject(None, "https://shop.example", conv()),
            "[FleetPrompt] Conversation with a visitor on https://shop.example (#3f9c)"
        );
    }

    #[test]
    fn the_body_quotes_the_last_messages_and_escapes_them_in_html() {
        let messages = vec![
            ("visitor".to_owned(), "Where is <b>my</b> order?".to_owned()),
            ("agent".to_owned(), "Looking.".to_owned()),
        ];
        let ana = Contact {
            name: Some("Ana".into()),
            email: Some("ana@example.com".into()),
        };
        let b = EmailBody {
            site: "https://shop.example",
            contact: Some(&ana),
            messages: &messages,
            link: "http://fp/console/conversations/conv_1",
        };
        let t = email_text(&b);
        assert!(t.contains("Visitor: Ana <ana@example.com>"), "{t}");
        assert!(t.contains("Visitor:\n  Where is <b>my</b> order?"), "{t}");
        assert!(t.contains("Operator:\n  Looking."), "{t}");
        assert!(t.contains("http://fp/console/conversations/conv_1"), "{t}");
        let h = email_html(&b);
        assert!(h.contains("Where is &lt;b&gt;my&lt;/b&gt; order?"), "{h}");
        assert!(h.contains("Ana &lt;ana@example.com&gt;"), "{h}");
        assert!(!h.contains("<b>my</b>"), "{h}");
        let none = EmailBody { contact: None, ..b };
        assert!(!email_text(&none).contains("ana@"));
    }
}
