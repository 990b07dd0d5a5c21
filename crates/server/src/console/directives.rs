//! `/console/directives`: the tenant's directives, newest first, filtered
//! by status and kind, a page at a time (keyset on the id, so a deep page
//! costs what the first does); retry and cancel for admins, through the
//! engine calls of `/admin/v1/directives/{id}/retry|cancel`. Each links to
//! its subject's timeline.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::routing::{get, post};
use fleetprompt_core::{DirectiveId, DirectiveStatus};
use fleetprompt_engine::EngineError;
use fleetprompt_store::directive::{self, DirectiveRow, ListFilter};
use maud::{Markup, html};

use super::ui::{when, when_opt};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/directives";

/// Directives per page.
const PAGE: i64 = 50;

const STATUSES: &[(&str, &str)] = &[
    ("pending", "Pending"),
    ("running", "Running"),
    ("failed", "Failed"),
    ("succeeded", "Done"),
    ("cancelled", "Cancelled"),
];

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/directives", get(list))
        .route("/directives/{id}/retry", post(retry))
        .route("/directives/{id}/cancel", post(cancel))
}

/// Where a subject's timeline is shown: a conversation's page for
/// `conversation:<id>`, else nowhere yet.
fn subject_link(subject: &str) -> Option<String> {
    let id = subject.strip_prefix("conversation:")?;
    id.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        .then(|| format!("/console/conversations/{id}"))
}

fn query_of(q: Option<&str>) -> HashMap<String, String> {
    q.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// A link to this list with the same filters, from `before`.
fn page_href(status: &str, kind: &str, before: Option<&str>) -> String {
    let mut q: Vec<(&str, &str)> = Vec::new();
    if !status.is_empty() {
        q.push(("status", status));
    }
    if !kind.is_empty() {
        q.push(("kind", kind));
    }
    if let Some(b) = before {
        q.push(("before", b));
    }
    if q.is_empty() {
        HREF.to_owned()
    } else {
        format!(
            "{HREF}?{}",
            serde_urlencoded::to_string(&q).unwrap_or_default()
        )
    }
}

fn row(m: &Member, d: &DirectiveRow, back: &str) -> Markup {
    let status = d.status.as_str();
    let label = STATUSES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(status, |(_, l)| l);
    html! {
        tr id=(format!("directive-{}", d.id)) {
            td { code class="id" { (d.id) } br; span class="hint" { (when(d.created_at)) } }
            td data-label="Kind" { code { (d.kind) } }
            td data-label="Status" { span class=(format!("badge s-{status}")) { (label) } }
            td data-label="Attempts" { (d.attempts) " / " (d.max_attempts)
                @if d.status == DirectiveStatus::Pending && d.attempts > 0 { br; span class="hint" { "next " (when(d.next_attempt_at)) } }
                @if let Some(f) = d.finished_at { br; span class="hint" { "ended " (when_opt(Some(f), "")) } }
            }
            td class="wrap" data-label="Subject" {
                @match d.subject.as_deref() {
                    Some(subj) => @match subject_link(subj) {
                        Some(href) => a href=(href) { (subj) },
                        None => code { (subj) },
                    },
                    None => span class="hint" { "—" },
                }
                @if let Some(e) = &d.last_error { p class="detail err-text" { (e) } }
            }
            @if m.is_admin() {
                td class="row-actions" {
                    @if matches!(d.status, DirectiveStatus::Failed | DirectiveStatus::Cancelled) {
                        form method="post" action=(format!("{HREF}/{}/retry", d.id)) class="inline" {
                            (csrf_field(m))
                            input type="hidden" name="back" value=(back);
                            button type="submit" { "Retry" span class="visually-hidden" { " " (d.kind) " " (d.id) } }
                        }
                    }
                    @if d.status == DirectiveStatus::Pending {
                        form method="post" action=(format!("{HREF}/{}/cancel", d.id)) class="inline" {
                            (csrf_field(m))
                            input type="hidden" name="back" value=(back);
                            button type="submit" class="danger" { "Cancel" span class="visually-hidden" { " " (d.kind) " " (d.id) } }
                        }
                    }
                }
            }
        }
    }
}

async fn list(
    State(s): State<AppState>,
    m: Member,
    RawQuery(q): RawQuery,
) -> Result<Markup, ConsoleError> {
    let q = query_of(q.as_deref());
    let status_s = q.get("status").map(String::as_str).unwrap_or("").trim();
    let kind_s = q.get("kind").map(String::as_str).unwrap_or("").trim();
    let status =
        match status_s {
            "" => None,
            other => Some(other.parse::<DirectiveStatus>().map_err(|_| {
                ConsoleError::Invalid(format!("{other:?} is not a directive status."))
            })?),
        };
    let before = match q.get("before").map(String::as_str) {
        None | Some("") => None,
        Some(b) => Some(
            b.parse::<DirectiveId>()
                .map_err(|_| ConsoleError::Invalid("That page link is not valid.".into()))?,
        ),
    };
    let filter = ListFilter {
        status,
        kind: (!kind_s.is_empty()).then(|| kind_s.to_owned()),
        before,
    };
    // One more than a page tells whether there is an older one.
    let mut rows = directive::list_page(s.engine.db(), m.tenant.id, &filter, PAGE + 1).await?;
    let more = rows.len() as i64 > PAGE;
    rows.truncate(PAGE as usize);
    let kinds = s.engine.handlers().kinds();
    let here = page_href(status_s, kind_s, before.map(|b| b.to_string()).as_deref());
    Ok(page(
        &m,
        HREF,
        "Directives",
        html! {
            h1 { "Directives" }
            p class="hint" { "Every job the platform runs: pending, running, failed and done, newest first." }
            form method="get" action=(HREF) class="filters" role="search" aria-label="Filter directives" {
                div {
                    label for="f-status" { "Status" }
                    select id="f-status" name="status" {
                        option value="" selected[status_s.is_empty()] { "Any" }
                        @for (v, l) in STATUSES { option value=(v) selected[*v == status_s] { (l) } }
                    }
                }
                div {
                    label for="f-kind" { "Kind" }
                    select id="f-kind" name="kind" {
                        option value="" selected[kind_s.is_empty()] { "Any" }
                        @for k in &kinds { option value=(k) selected[*k == kind_s] { (k) } }
                        @if !kind_s.is_empty() && !kinds.contains(&kind_s) { option value=(kind_s) selected { (kind_s) } }
                    }
                }
                button type="submit" { "Filter" }
                @if !status_s.is_empty() || !kind_s.is_empty() { a href=(HREF) { "Clear" } }
            }
            @if rows.is_empty() {
                p { "No directives" @if before.is_some() { " older than these" } " match." }
            } @else {
                div class="table-wrap" {
                    table id="directives" {
                        caption class="visually-hidden" { "Directives, newest first" }
                        thead { tr {
                            th scope="col" { "Directive" } th scope="col" { "Kind" } th scope="col" { "Status" }
                            th scope="col" { "Attempts" } th scope="col" { "Subject and last error" }
                            @if m.is_admin() { th scope="col" { span class="visually-hidden" { "Actions" } } }
                        } }
                        tbody { @for d in &rows { (row(&m, d, &here)) } }
                    }
                }
            }
            nav aria-label="Pages" class="pager" {
                @if before.is_some() { a href=(page_href(status_s, kind_s, None)) { "Newest" } }
                @if more { @if let Some(last) = rows.last() {
                    a href=(page_href(status_s, kind_s, Some(&last.id.to_string()))) rel="next" { "Older →" }
                } }
            }
        },
    ))
}

/// Back to the list the action was taken from (a console directives
/// link only).
fn back_of(form: &HashMap<String, String>) -> String {
    form.get("back")
        .filter(|b| {
            (b.as_str() == HREF || b.starts_with("/console/directives?")) && !b.contains("//")
        })
        .cloned()
        .unwrap_or_else(|| HREF.to_owned())
}

fn engine_error(e: EngineError) -> ConsoleError {
    match e {
        EngineError::NotFound(_) => ConsoleError::NotFound("directive".into()),
        other => other.into(),
    }
}

fn parse_id(id: &str) -> Result<DirectiveId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("directive".into()))
}

async fn retry(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let d = s
        .engine
        .retry_directive(m.tenant.id, parse_id(&id)?)
        .await
        .map_err(engine_error)?;
    Ok(redirect_with_flash(
        &back_of(&f.form),
        &format!("{} {} is pending again.", d.kind, d.id),
    ))
}

async fn cancel(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let d = s
        .engine
        .cancel_directive(m.tenant.id, parse_id(&id)?)
        .await
        .map_err(engine_error)?;
    Ok(redirect_with_flash(
        &back_of(&f.form),
        &format!("{} {} cancelled.", d.kind, d.id),
    ))
}
