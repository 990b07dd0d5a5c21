//! `/console/conversations/{id}`: the deep link every escalation carries.
//! The messages (with private notes among them), the visitor as the site
//! lets members see them, a reply box, drafts, the actions (escalate,
//! assign, close, reopen) and the audit timeline. Every action is the
//! engine call the admin API makes, so it is a directive on the timeline;
//! its progress shows under "Actions", which the page refreshes while
//! anything is still pending or running.

use std::collections::HashMap;

use crate::conversation as actions;
use crate::settings::SiteSettings;
use crate::store::conversation::ConversationRow;
use crate::store::{conversation, escalation, identity, message};
use crate::types::id::{ConversationId, MessageId};
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use fleetprompt_core::DirectiveStatus;
use fleetprompt_core::id::MemberId;
use fleetprompt_core::{DirectiveId, Origin};
use fleetprompt_store::StoreError;
use fleetprompt_store::directive::DirectiveRow;
use fleetprompt_store::timeline::{Entry, Span};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::timeline::{self, View, origin_label, plain_error};
use super::{badge, inbox::site_name, mask_email, visitor_label, when};
use fleetprompt_server::AppState;
use fleetprompt_server::console::{
    ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash,
};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/conversations/{id}", get(show))
        .route("/conversations/{id}/reply", post(reply))
        .route("/conversations/{id}/note", post(note))
        .route("/conversations/{id}/escalate", post(escalate))
        .route("/conversations/{id}/close", post(close))
        .route("/conversations/{id}/reopen", post(reopen))
        .route("/conversations/{id}/assign", post(assign))
        .route(
            "/conversations/{id}/drafts/{draft}/{action}",
            post(draft_action),
        )
        .route(
            "/conversations/{id}/directives/{directive}/retry",
            post(retry),
        )
}

fn url(id: ConversationId) -> String {
    format!("/console/conversations/{id}")
}

fn parse_id(id: &str) -> Result<ConversationId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("conversation".into()))
}

/// The conversation, if it is this member's tenant's (else 404, whoever's
/// it is).
async fn load(s: &AppState, m: &Member, id: &str) -> Result<ConversationRow, ConsoleError> {
    let id = parse_id(id)?;
    conversation::get(s.engine.db(), m.tenant.id, id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ConsoleError::NotFound("conversation".into()),
            other => other.into(),
        })
}

/// Whether a directive is still to finish.
fn in_flight(d: &DirectiveRow) -> bool {
    matches!(
        d.status,
        DirectiveStatus::Pending | DirectiveStatus::Running
    )
}

/// A member's own actions on this conversation, newest first, with their
/// state: what "shows its progress in place" reads.
fn activity(entries: &[Entry]) -> Vec<&DirectiveRow> {
    let mut v: Vec<&DirectiveRow> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Directive(d) if matches!(d.origin, Origin::Member { .. }) => Some(d),
            _ => None,
        })
        .collect();
    v.reverse();
    v.truncate(8);
    v
}

fn action_name(kind: &str) -> &str {
    match kind {
        "webchat.reply_send" => "Reply",
        "webchat.escalate_to_mattermost" => "Escalate to Mattermost",
        "webchat.escalate_to_email" => "Escalate to email",
        "webchat.conversation.close" => "Close",
        "webchat.conversation.reopen" => "Reopen",
        "webchat.conversation.assign" => "Assign",
        other => other,
    }
}

fn status_words(d: &DirectiveRow) -> &'static str {
    match d.status {
        DirectiveStatus::Pending => "pending",
        DirectiveStatus::Running => "running",
        DirectiveStatus::Succeeded => "done",
        DirectiveStatus::Failed => "failed",
        DirectiveStatus::Cancelled => "cancelled",
    }
}

/// What the conversation page's address may ask for.
#[derive(Debug, Default, Deserialize)]
struct ShowQuery {
    /// The saved reply to put in the reply box: a saved reply's id, or
    /// `faq:<n>` for the FAQ's n-th answer.
    insert: Option<String>,
    /// An earlier stretch of the history: the messages before the message
    /// `<created ms>.<message id>`, and the timeline before that time.
    before: Option<String>,
}

/// Messages on one stretch of a conversation's page; the timeline shows the
/// same stretch of time. Older stretches are a link away, so a long
/// conversation's page stays as quick as a short one's.
pub const WINDOW: i64 = 50;

/// The `before` cursor: the time and id of the oldest message shown.
fn parse_before(v: &str) -> Option<(i64, MessageId)> {
    let (at, id) = v.split_once('.')?;
    Some((at.parse().ok()?, id.parse().ok()?))
}

async fn show(
    State(s): State<AppState>,
    m: Member,
    Path(id): Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Markup, ConsoleError> {
    // A query that does not parse inserts nothing: the page still opens.
    let query: ShowQuery = query
        .and_then(|q| serde_urlencoded::from_str(&q).ok())
        .unwrap_or_default();
    let conv = load(&s, &m, &id).await?;
    let db = s.engine.db();
    let tenant = m.tenant.id;
    actions::mark_read(&s.engine, tenant, m.member.id, &conv).await?;
    let faq = crate::assist::saved_replies(&s.engine, &m.tenant.slug);
    let snippets = crate::saved_reply::list(&s.engine, tenant).await?;
    let inserted = match query.insert.as_deref() {
        Some(key) => match key.strip_prefix("faq:") {
            Some(n) => n
                .parse::<usize>()
                .ok()
                .and_then(|n| faq.get(n))
                .map(|e| e.answer.as_str()),
            None => snippets
                .iter()
                .find(|r| r.id.to_string() == key)
                .map(|r| r.content.as_str()),
        },
        None => None,
    }
    .unwrap_or_default();
    let before = match query.before.as_deref().filter(|b| !b.is_empty()) {
        None => None,
        Some(b) => Some(parse_before(b).ok_or_else(|| {
            ConsoleError::BadRequest("That stretch of the conversation does not exist.".into())
        })?),
    };
    let (messages, earlier) =
        message::newest(db, tenant, conv.id, before.map(|(_, id)| id), WINDOW).await?;
    let span = Span {
        from: earlier
            .then(|| messages.first().map(|x| x.created_at))
            .flatten(),
        until: before.map(|(at, _)| at),
    };
    let earlier_link = earlier
        .then(|| messages.first())
        .flatten()
        .map(|x| format!("{}?before={}.{}", url(conv.id), x.created_at, x.id));
    let visitor = identity::get(db, tenant, conv.site_id, conv.visitor_id).await?;
    let site = crate::store::site::get(db, tenant, conv.site_id).await.ok();
    let show_details = site
        .as_ref()
        .is_none_or(|s| SiteSettings::from_stored(&s.settings).show_visitor_details);
    let drafts: Vec<_> = escalation::drafts(db, tenant, conv.id)
        .await?
        .into_iter()
        .filter(|d| d.status == "pending")
        .collect();
    let destinations: Vec<_> = fleetprompt_store::destination::list(db, tenant)
        .await?
        .into_iter()
        .filter(|d| matches!(d.kind.as_str(), "mattermost" | "mattermost_api" | "email"))
        .collect();
    let members: Vec<_> = fleetprompt_engine::access::list_members(&s.engine, tenant)
        .await?
        .into_iter()
        .filter(|x| x.disabled_at.is_none())
        .collect();
    let subject = crate::conversation_subject(conv.id);
    let entries = fleetprompt_store::timeline::within(db, tenant, &subject, span).await?;
    let who = visitor_label(
        visitor.as_ref().and_then(|v| v.name.as_deref()),
        visitor.as_ref().and_then(|v| v.email.as_deref()),
        &conv.visitor_id.to_string(),
        show_details,
    );
    // Messages and private notes, in time order.
    let notes: Vec<&fleetprompt_store::signal::SignalRow> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Signal(sig) if sig.signal_type == "webchat.note.added" => Some(sig),
            _ => None,
        })
        .collect();
    enum Item<'a> {
        Msg(&'a message::MessageRow),
        Note(&'a fleetprompt_store::signal::SignalRow),
    }
    let mut items: Vec<(i64, Item<'_>)> = messages
        .iter()
        .map(|x| (x.created_at, Item::Msg(x)))
        .chain(notes.iter().map(|n| (n.recorded_at, Item::Note(n))))
        .collect();
    items.sort_by_key(|(t, _)| *t);
    let busy = entries.iter().any(|e| match e {
        Entry::Directive(d) => in_flight(d),
        _ => false,
    });
    let open = conv.status == "open";
    let cid = conv.id;
    let view = View {
        conversation: &cid.to_string(),
        show_details,
        can_retry: m.is_admin(),
        csrf: csrf_field(&m),
    };
    let assignee_name = conv
        .assignee
        .and_then(|a| members.iter().find(|x| x.id == a).map(|x| x.name.clone()));
    let body = html! {
        p { a href="/console/conversations" { "← Inbox" } }
        h1 { "Conversation with " (who) " " (badge(if open { "open" } else { "closed" })) }
        p id="live-status" class="hint" role="status" aria-live="polite" {}
        div class="convo" {
            div {
                section aria-labelledby="h-messages" {
                    h2 id="h-messages" { "Messages" }
                    (history_nav(cid, earlier_link.as_deref(), before.is_some()))
                    div id="messages" data-refresh="messages" {
                        ol class="messages" {
                            @for (_, item) in &items {
                                @match item {
                                    Item::Msg(x) => {
                                        li class={ "msg " (x.role.as_str()) } {
                                            span class="meta" {
                                                @match x.role.as_str() {
                                                    "visitor" => { (who) }
                                                    "assistant" => "Assistant",
                                                    _ => "Operator",
                                                }
                                                " · " (when(x.created_at))
                                            }
                                            p { (x.content) }
                                        }
                                    }
                                    Item::Note(n) => {
                                        li class="msg note" {
                                            span class="meta" {
                                                "Private note by "
                                                (n.payload.pointer("/author/name").and_then(Value::as_str).unwrap_or("a member"))
                                                " · " (when(n.recorded_at))
                                            }
                                            p { (n.payload.get("content").and_then(Value::as_str).unwrap_or("")) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                section aria-labelledby="h-reply" {
                    h2 id="h-reply" { "Reply" }
                    @if !faq.is_empty() || !snippets.is_empty() {
                        @let chosen = query.insert.as_deref().unwrap_or_default();
                        form method="get" action=(url(cid)) class="stack" data-insert-into="reply" {
                            label for="saved" { "Saved reply" }
                            select id="saved" name="insert" {
                                @if !snippets.is_empty() {
                                    optgroup label="Saved replies" {
                                        @for r in &snippets {
                                            option value=(r.id) data-text=(r.content) selected[chosen == r.id.to_string()] { (r.title) }
                                        }
                                    }
                                }
                                @if !faq.is_empty() {
                                    optgroup label="FAQ answers" {
                                        @for (i, e) in faq.iter().enumerate() {
                                            @let key = format!("faq:{i}");
                                            option value=(key) data-text=(e.answer) selected[chosen == key] { (e.question) }
                                        }
                                    }
                                }
                            }
                            button type="submit" { "Insert into the reply" }
                        }
                    }
                    form method="post" action={ (url(cid)) "/reply" } class="stack" {
                        (csrf_field(&m))
                        label for="reply" { "Reply to the visitor" }
                        textarea id="reply" name="content" required rows="4" { (inserted) }
                        button type="submit" class="primary" { "Send reply" }
                    }
                    form method="post" action={ (url(cid)) "/note" } class="stack" {
                        (csrf_field(&m))
                        label for="note" { "Private note (members only, never sent to the visitor)" }
                        textarea id="note" name="content" required rows="2" {}
                        button type="submit" { "Add note" }
                    }
                }
                div id="drafts" data-refresh="drafts" {
                    @if !drafts.is_empty() {
                        section aria-labelledby="h-drafts" {
                            h2 id="h-drafts" { "Drafts" }
                            @for d in &drafts {
                                div class="panel" {
                                    p class="hint" { "Drafted by " (if d.source == "faq" { "the FAQ" } else { "the assistant" })
                                        @if let Some(model) = &d.model { " (" (model) ")" } " · " (when(d.created_at)) }
                                    form method="post" action={ (url(cid)) "/drafts/" (d.id) "/send" } class="stack" {
                                        (csrf_field(&m))
                                        label for={ "draft-" (d.id) } { "Draft reply (edit before sending if needed)" }
                                        textarea id={ "draft-" (d.id) } name="content" rows="3" { (d.content) }
                                        div class="actions" {
                                            button type="submit" class="primary" { "Approve and send" }
                                            button type="submit" formaction={ (url(cid)) "/drafts/" (d.id) "/discard" } class="danger" { "Discard" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div {
                section class="panel" aria-labelledby="h-visitor" {
                    h2 id="h-visitor" { "Visitor" }
                    dl class="kv" {
                        dt { "Name" } dd { (visitor.as_ref().and_then(|v| v.name.as_deref()).map_or("—".to_owned(), |n| if show_details { n.to_owned() } else { "(hidden)".into() })) }
                        dt { "Email" } dd { (visitor.as_ref().and_then(|v| v.email.as_deref()).map_or("—".to_owned(), |e| if show_details { e.to_owned() } else { mask_email(e) })) }
                        @if show_details {
                            dt { "Browser" } dd { (visitor.as_ref().and_then(|v| v.browser.as_deref()).unwrap_or("—")) }
                            dt { "System" } dd { (visitor.as_ref().and_then(|v| v.os.as_deref()).unwrap_or("—")) }
                        }
                        dt { "Site" } dd { (site.as_ref().map_or("—".to_owned(), site_name)) }
                        dt { "Page" } dd { (conv.page_url.as_deref().unwrap_or("—")) }
                        dt { "Started" } dd { (when(conv.started_at)) }
                        dt { "Assigned to" } dd { (assignee_name.as_deref().unwrap_or("nobody")) }
                    }
                    @if !show_details { p class="hint" { "This site hides visitors' details from members." } }
                }
                section class="panel" aria-labelledby="h-actions" {
                    h2 id="h-actions" { "Actions" }
                    div class="actions" {
                        @for d in &destinations {
                            form method="post" action={ (url(cid)) "/escalate" } class="inline" {
                                (csrf_field(&m))
                                input type="hidden" name="destination" value=(d.name);
                                button type="submit" {
                                    @if d.kind == "email" { "Escalate to email" } @else { "Escalate to Mattermost" }
                                    @if destinations.iter().filter(|x| (x.kind == "email") == (d.kind == "email")).count() > 1 { " (" (d.name) ")" }
                                }
                            }
                        }
                        @if destinations.is_empty() { p class="hint" { "No Mattermost or email destination is set up to escalate to." } }
                        @if open {
                            form method="post" action={ (url(cid)) "/close" } class="inline" {
                                (csrf_field(&m)) button type="submit" { "Close" }
                            }
                        } @else {
                            form method="post" action={ (url(cid)) "/reopen" } class="inline" {
                                (csrf_field(&m)) button type="submit" { "Reopen" }
                            }
                        }
                    }
                    form method="post" action={ (url(cid)) "/assign" } class="actions" {
                        (csrf_field(&m))
                        label for="assign" { "Assign to" }
                        select id="assign" name="member_id" {
                            option value="" { "Nobody" }
                            @for x in &members {
                                option value=(x.id) selected[conv.assignee == Some(x.id)] { (x.name) @if x.id == m.member.id { " (me)" } }
                            }
                        }
                        button type="submit" { "Assign" }
                    }
                    div id="activity" data-refresh="activity" data-poll=[busy.then_some("1")] {
                        @let acts = activity(&entries);
                        @if !acts.is_empty() {
                            h3 class="visually-hidden" { "Progress" }
                            ul class="timeline" aria-label="Your team's actions" {
                                @for d in acts {
                                    li data-directive=(d.id) data-status=(status_words(d)) {
                                        (action_name(&d.kind)) " by " (origin_label(&d.origin)) ": "
                                        span class={ "badge s-" (d.status.as_str()) } { (status_words(d)) }
                                        @if let Some(e) = &d.last_error { " — " (plain_error(e)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-timeline" {
            h2 id="h-timeline" { "Timeline" }
            @if span != Span::ALL {
                p class="hint" {
                    "What happened "
                    @if let Some(f) = span.from { "from " (when(f)) " " }
                    @if let Some(u) = span.until { "until " (when(u)) } @else { "until now" }
                    ", beside the messages above."
                }
            }
            div id="timeline" data-refresh="timeline" {
                (timeline::in_order(&entries, &view))
                details {
                    summary { "Causal view: what caused what" }
                    (timeline::chain(&entries, &view))
                }
            }
        }
    };
    Ok(page(
        &m,
        "/console/conversations",
        &format!("Conversation with {who}"),
        body,
    ))
}

/// Links to the stretch before this one and back to the newest.
fn history_nav(cid: ConversationId, earlier: Option<&str>, past: bool) -> Markup {
    html! {
        @if earlier.is_some() || past {
            nav class="actions" aria-label="Conversation history" {
                @if let Some(href) = earlier { a href=(href) { "← Earlier messages and timeline" } }
                @if past { a href=(url(cid)) { "Newest messages →" } }
            }
        }
    }
}

#[derive(Deserialize)]
struct Content {
    content: String,
}

async fn reply(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<Content>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    if f.form.content.trim().is_empty() {
        return Err(ConsoleError::Invalid("The reply is empty.".into()));
    }
    actions::reply(
        &s.engine,
        f.member.tenant.id,
        conv.id,
        &f.form.content,
        f.member.origin(),
    )
    .await?;
    Ok(redirect_with_flash(
        &url(conv.id),
        "Reply queued: its progress shows under Actions.",
    ))
}

async fn note(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<Content>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    actions::add_note(
        &s.engine,
        f.member.tenant.id,
        conv.id,
        &f.form.content,
        f.member.origin(),
    )
    .await?;
    Ok(redirect_with_flash(
        &url(conv.id),
        "Note added. Only members see it.",
    ))
}

#[derive(Deserialize)]
struct Destination {
    destination: String,
}

async fn escalate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<Destination>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    let e = actions::escalate(
        &s.engine,
        f.member.tenant.id,
        conv.id,
        &f.form.destination,
        f.member.origin(),
    )
    .await?;
    let msg = if e.created {
        format!(
            "Escalation to {} created: its progress shows under Actions.",
            f.form.destination
        )
    } else {
        format!(
            "This conversation was already escalated to {}; that escalation is shown below.",
            f.form.destination
        )
    };
    Ok(redirect_with_flash(&url(conv.id), &msg))
}

/// What a waited-for action says when it is back.
fn outcome(what: &str, d: &DirectiveRow) -> String {
    match d.status {
        DirectiveStatus::Succeeded => format!("{what}: done."),
        DirectiveStatus::Failed | DirectiveStatus::Cancelled => format!(
            "{what} failed. {}",
            d.last_error.as_deref().map(plain_error).unwrap_or_default()
        ),
        _ => format!("{what}: still running; its progress shows under Actions."),
    }
}

async fn close(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    let d = actions::close(&s.engine, f.member.tenant.id, conv.id, f.member.origin()).await?;
    Ok(redirect_with_flash(&url(conv.id), &outcome("Close", &d)))
}

async fn reopen(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    let d = actions::reopen(&s.engine, f.member.tenant.id, conv.id, f.member.origin()).await?;
    Ok(redirect_with_flash(&url(conv.id), &outcome("Reopen", &d)))
}

#[derive(Deserialize)]
struct AssignForm {
    #[serde(default)]
    member_id: String,
}

async fn assign(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<AssignForm>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    let member = match f.form.member_id.trim() {
        "" => None,
        v => Some(
            v.parse::<MemberId>()
                .map_err(|_| ConsoleError::Invalid("Choose a member of this tenant.".into()))?,
        ),
    };
    let d = actions::assign(
        &s.engine,
        f.member.tenant.id,
        conv.id,
        member,
        f.member.origin(),
    )
    .await?;
    Ok(redirect_with_flash(&url(conv.id), &outcome("Assign", &d)))
}

#[derive(Deserialize)]
struct DraftForm {
    #[serde(default)]
    content: Option<String>,
}

/// `send` (approve, or send the edited text instead), `approve` or
/// `discard` a draft.
async fn draft_action(
    State(s): State<AppState>,
    Path((id, draft_id, action)): Path<(String, String, String)>,
    f: CsrfForm<DraftForm>,
) -> Result<Response, ConsoleError> {
    let conv = load(&s, &f.member, &id).await?;
    let tenant = f.member.tenant.id;
    let origin = f.member.origin();
    let draft = escalation::draft(s.engine.db(), tenant, conv.id, &draft_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => ConsoleError::NotFound("draft".into()),
            other => other.into(),
        })?;
    let edited = f
        .form
        .content
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty() && *c != draft.content.trim());
    let msg = match (action.as_str(), edited) {
        ("discard", _) => {
            crate::assist::discard_draft(&s.engine, tenant, conv.id, &draft.id, &origin.actor_id())
                .await?;
            "Draft discarded."
        }
        ("send", Some(text)) => {
            // Edited: the draft is set aside and the operator's own words go.
            crate::assist::discard_draft(&s.engine, tenant, conv.id, &draft.id, &origin.actor_id())
                .await?;
            actions::reply(&s.engine, tenant, conv.id, text, origin).await?;
            "Edited draft queued: its progress shows under Actions."
        }
        ("send" | "approve", _) => {
            crate::assist::approve_draft(&s.engine, tenant, conv.id, &draft.id, origin).await?;
            "Draft approved and queued."
        }
        _ => return Err(ConsoleError::NotFound("page".into())),
    };
    Ok(redirect_with_flash(&url(conv.id), msg))
}

async fn retry(
    State(s): State<AppState>,
    Path((id, directive)): Path<(String, String)>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    f.member.require_admin()?;
    let conv = load(&s, &f.member, &id).await?;
    let did: DirectiveId = directive
        .parse()
        .map_err(|_| ConsoleError::NotFound("directive".into()))?;
    let tenant = f.member.tenant.id;
    // Only a directive on this conversation's timeline is retried here.
    let d = fleetprompt_store::directive::get(s.engine.db(), tenant, did).await?;
    let subject = crate::conversation_subject(conv.id);
    if d.subject.as_deref() != Some(subject.as_str())
        && d.args.get("conversation_id").and_then(Value::as_str) != Some(&conv.id.to_string())
    {
        return Err(ConsoleError::NotFound("directive".into()));
    }
    s.engine.retry_directive(tenant, did).await?;
    Ok(redirect_with_flash(
        &url(conv.id),
        &format!(
            "{} retried: its progress shows below.",
            action_name(&d.kind)
        ),
    ))
}
