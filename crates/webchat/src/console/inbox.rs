//! `/console/conversations`: the inbox. Conversations by site, status and
//! assignee, newest activity first, with unread marks (the last message is
//! the visitor's, unanswered, and written after this member last opened the
//! conversation) and a search by the visitor's email,
//! name or any message's text. New messages arrive over the live feed
//! ([`super::live`]), which makes the page fetch its list again.

use std::collections::HashMap;

use crate::settings::SiteSettings;
use crate::store::conversation::{self, Assignee, InboxQuery, InboxRow};
use crate::store::site::SiteRow;
use crate::types::id::SiteId;
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::routing::get;
use maud::{Markup, html};
use serde::Deserialize;

use super::{badge, visitor_label, when};
use fleetprompt_server::AppState;
use fleetprompt_server::console::{ConsoleError, Member, page};

/// Rows on an inbox page.
pub const PAGE: i64 = 50;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/conversations", get(inbox))
}

/// The inbox's filters, as its form sends them.
#[derive(Debug, Default, Deserialize)]
struct Filters {
    site: Option<String>,
    /// `open` (default), `ended` or `all`.
    status: Option<String>,
    /// `any` (default), `mine` or `unassigned`.
    assignee: Option<String>,
    q: Option<String>,
    /// The page after the row `<last message ms>.<conversation id>`.
    after: Option<String>,
}

/// The sites that hide who their visitors are from members.
fn details_hidden(sites: &HashMap<SiteId, SiteRow>) -> Vec<SiteId> {
    sites
        .values()
        .filter(|s| !SiteSettings::from_stored(&s.settings).show_visitor_details)
        .map(|s| s.id)
        .collect()
}

/// A site's name in the console: its first domain, else its key.
pub fn site_name(s: &SiteRow) -> String {
    s.allowed_origins
        .first()
        .map(|o| {
            o.trim_start_matches("https://")
                .trim_start_matches("http://")
                .to_owned()
        })
        .unwrap_or_else(|| s.public_key.clone())
}

async fn inbox(
    State(s): State<AppState>,
    m: Member,
    RawQuery(raw): RawQuery,
) -> Result<Markup, ConsoleError> {
    let f: Filters = raw
        .as_deref()
        .map(serde_urlencoded::from_str)
        .transpose()
        .map_err(|_| ConsoleError::BadRequest("The filters could not be read.".into()))?
        .unwrap_or_default();
    let db = s.engine.db();
    let sites: HashMap<SiteId, SiteRow> = crate::store::site::list(db, m.tenant.id)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let site = match f.site.as_deref().filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            v.parse::<SiteId>()
                .map_err(|_| ConsoleError::BadRequest("No such site.".into()))?,
        ),
    };
    let status = f.status.as_deref().unwrap_or("open");
    let assignee = match f.assignee.as_deref().unwrap_or("any") {
        "mine" => Assignee::Member(m.member.id),
        "unassigned" => Assignee::Nobody,
        _ => Assignee::Any,
    };
    let q = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty());
    if q.is_some_and(|q| q.contains('\0') || q.len() > 200) {
        return Err(ConsoleError::BadRequest(
            "The search must be at most 200 characters of text.".into(),
        ));
    }
    let after = match f.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => {
            let bad = || ConsoleError::BadRequest("That page of the inbox does not exist.".into());
            let (at, id) = a.split_once('.').ok_or_else(bad)?;
            Some((
                at.parse::<i64>().map_err(|_| bad())?,
                id.parse().map_err(|_| bad())?,
            ))
        }
    };
    let details_hidden = details_hidden(&sites);
    let rows = conversation::inbox(
        db,
        m.tenant.id,
        &InboxQuery {
            site,
            status: match status {
                "ended" => Some("ended"),
                "all" => None,
                _ => Some("open"),
            },
            assignee,
            search: q,
            details_hidden: &details_hidden,
            reader: Some(m.member.id),
            after,
            limit: PAGE,
        },
    )
    .await?;
    let mut site_list: Vec<&SiteRow> = sites.values().collect();
    site_list.sort_by_key(|s| site_name(s));
    let selected_site = site.map(|s| s.to_string()).unwrap_or_default();
    let assignee_value = f.assignee.as_deref().unwrap_or("any");
    let body = html! {
        h1 { "Inbox" }
        form method="get" action="/console/conversations" class="filters" role="search" {
            div {
                label for="f-site" { "Site" }
                select id="f-site" name="site" {
                    option value="" { "All sites" }
                    @for s in &site_list {
                        option value=(s.id) selected[selected_site == s.id.to_string()] { (site_name(s)) }
                    }
                }
            }
            div {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="open" selected[status == "open"] { "Open" }
                    option value="ended" selected[status == "ended"] { "Closed" }
                    option value="all" selected[status == "all"] { "All" }
                }
            }
            div {
                label for="f-assignee" { "Assignee" }
                select id="f-assignee" name="assignee" {
                    option value="any" selected[assignee_value == "any"] { "Anyone" }
                    option value="mine" selected[assignee_value == "mine"] { "Mine" }
                    option value="unassigned" selected[assignee_value == "unassigned"] { "Unassigned" }
                }
            }
            div {
                label for="f-q" { "Search" }
                input id="f-q" name="q" type="search" value=(q.unwrap_or_default())
                    placeholder="Email, name or text" aria-keyshortcuts="/";
            }
            button type="submit" { "Filter" }
        }
        p class="hint" { "Keys: " kbd { "j" } " / " kbd { "k" } " move, " kbd { "Enter" } " opens, " kbd { "/" } " searches." }
        p id="live-status" class="hint" role="status" aria-live="polite" {}
        (list(&rows, &sites, &details_hidden))
        @if rows.len() as i64 == PAGE {
            @if let Some(last) = rows.last() {
                @let next = serde_urlencoded::to_string([
                    ("site", selected_site.as_str()),
                    ("status", status),
                    ("assignee", assignee_value),
                    ("q", q.unwrap_or_default()),
                    ("after", &format!("{}.{}", last.conversation.last_message_at, last.conversation.id)),
                ]).unwrap_or_default();
                p { a href={ "/console/conversations?" (next) } { "Older conversations →" } }
            }
        }
    };
    Ok(page(&m, "/console/conversations", "Inbox", body))
}

/// The list itself (replaced in place when the live feed says so).
fn list(rows: &[InboxRow], sites: &HashMap<SiteId, SiteRow>, details_hidden: &[SiteId]) -> Markup {
    html! {
        div id="inbox" data-live="inbox" data-refresh="inbox" {
            @if rows.is_empty() {
                p { "No conversations match." }
            } @else {
                ul class="inbox" aria-label="Conversations" {
                    @for r in rows {
                        @let c = &r.conversation;
                        @let unread = r.unread();
                        @let who = visitor_label(r.visitor_name.as_deref(), r.visitor_email.as_deref(), &c.visitor_id.to_string(), !details_hidden.contains(&c.site_id));
                        li class=[unread.then_some("unread")] data-id=(c.id) {
                            a href={ "/console/conversations/" (c.id) } {
                                span class="who-line" {
                                    (who)
                                    @if unread { span class="visually-hidden" { " (unread)" } }
                                }
                                span { (when(c.last_message_at)) " " (badge(if c.status == "open" { "open" } else { "closed" })) }
                                span class="preview" {
                                    @if let Some(site) = sites.get(&c.site_id) { (site_name(site)) " · " }
                                    @match r.last_role.as_deref() {
                                        Some("visitor") => "",
                                        Some("assistant") => "Assistant: ",
                                        Some(_) => "Operator: ",
                                        None => "",
                                    }
                                    (r.last_text.as_deref().unwrap_or(""))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
