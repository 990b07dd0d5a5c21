//! `/console/rules` (admins): the rules active for the tenant with their
//! source and hash and the last reload error, and an editor for the
//! tenant's published TOML files with **Check** (problems at their line
//! and column), **Backtest** (the last 7 days of signals, next to what the
//! rules in force did) and **Publish**. The engine calls behind
//! `/admin/v1/workflows…`: a publish or delete is on the tenant's audit
//! log as the API's is.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use fleetprompt_core::time::now_ms;
use fleetprompt_engine::EngineError;
use fleetprompt_engine::published::{BacktestReport, BacktestRequest};
use fleetprompt_engine::rules::{published_name, source_label};
use maud::{Markup, html};
use serde::Deserialize;

use super::ui::{error_box, fixable, when, when_opt, with_status};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/rules";

/// The backtest's window: the last 7 days.
const BACKTEST_DAYS: i64 = 7;

const NEW_FILE: &str = r#"# A rule file of this tenant: see docs/workflows.md.
# Each rule names the signal type it acts `on` (the packages' types are in
# their manifests) and the directives it plans for it.
[[rule]]
id = "example.after-a-failure"
on = "directive.failed"

[[rule.directive]]
kind = "noop"
dedupe_key = "after-failure:{{ signal.id }}"
"#;

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/rules", get(overview).post(submit))
        .route("/rules/new", get(new_file))
        .route("/rules/files/{name}", get(open_file))
        .route(
            "/rules/files/{name}/delete",
            get(confirm_delete).post(delete),
        )
}

async fn overview(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let rules = s.engine.rules();
    let set = rules.current();
    let slug = m.tenant.slug.as_str();
    let files: Vec<_> = set
        .files()
        .iter()
        .filter(|f| f.scope.applies_to(slug))
        .collect();
    let summaries: Vec<_> = set
        .summaries()
        .into_iter()
        .filter(|r| r.scope.applies_to(slug))
        .collect();
    let status = rules.status().for_tenant(slug);
    let published = s.engine.workflow_files(m.tenant.id).await?;
    Ok(page(
        &m,
        HREF,
        "Rules",
        html! {
            h1 { "Rules" }
            @if let Some(err) = &status.last_error {
                div class="error" role="alert" {
                    p { strong { "The last reload was refused" } " (" (when_opt(status.last_error_at, "")) "); the rules below are the last good set:" }
                    pre { (err) }
                }
            } @else {
                p class="hint" { "Rules loaded " (when_opt(status.loaded_at, "—")) "; the last reload had no problem." }
            }
            h2 id="published" { "Your published files" }
            @if published.is_empty() {
                p { "None yet." }
            } @else {
                div class="table-wrap" {
                    table aria-labelledby="published" {
                        thead { tr { th scope="col" { "File" } th scope="col" { "Version" } th scope="col" { "SHA-256" } th scope="col" { "Published" } } }
                        tbody {
                            @for f in &published {
                                tr {
                                    th scope="row" { a href=(format!("{HREF}/files/{}", f.name)) { (f.name) } }
                                    td { (f.version) }
                                    td { code title=(f.sha256) { (&f.sha256[..12.min(f.sha256.len())]) "…" } }
                                    td { (when(f.published_at)) }
                                }
                            }
                        }
                    }
                }
            }
            p { a class="button primary" href=(format!("{HREF}/new")) { "New file" } }
            h2 id="active" { "Active rules (" (summaries.len()) ")" }
            @if summaries.is_empty() { p { "No rule is active for this tenant." } }
            div class="table-wrap" {
                table aria-labelledby="active" {
                    thead { tr {
                        th scope="col" { "Rule" } th scope="col" { "On" } th scope="col" { "Does" }
                        th scope="col" { "Source" } th scope="col" { "File hash" }
                    } }
                    tbody {
                        @for r in &summaries {
                            @let source = files.iter().find(|f| f.path == r.file).map(|f| source_label(f)).unwrap_or_default();
                            tr {
                                th scope="row" { code { (r.id) } @if !r.enabled { " " span class="badge s-disabled" { "disabled" } }
                                    @if let Some(d) = &r.description { br; span class="hint" { (d) } } }
                                td data-label="On" { @if let Some(on) = &r.on { code { (on) } } @else if let Some(c) = &r.schedule { "schedule " code { (c) } } }
                                td data-label="Does" { @if r.directive_kinds.is_empty() { @if let Some(e) = &r.emits { "emits " code { (e) } } } @else { (r.directive_kinds.join(", ")) } }
                                td class="wrap" data-label="Source" { code { (source.split('@').next().unwrap_or_default()) } }
                                td data-label="File hash" { code title=(r.file_hash) { (&r.file_hash[..12.min(r.file_hash.len())]) "…" } }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// What the editor shows under the form after a button.
enum Outcome {
    None,
    /// Problems: (file, line, col, message).
    Problems(Vec<(String, u32, u32, String)>),
    /// Checked fine: the file's rule ids and warnings.
    Valid(Vec<String>, Vec<String>),
    Backtest(Box<BacktestReport>),
    Error(String),
}

struct Editor<'a> {
    name: &'a str,
    body: &'a str,
    is_new: bool,
}

fn listing(body: &str, bad: &BTreeSet<u32>) -> Markup {
    // The lines around each problem, the problem's own marked.
    let lines: Vec<&str> = body.lines().collect();
    let mut shown = BTreeSet::new();
    for &l in bad {
        let l = l as usize;
        for n in l.saturating_sub(2).max(1)..=(l + 2).min(lines.len().max(1)) {
            shown.insert(n);
        }
    }
    html! {
        ol class="code" aria-label="The lines with problems" {
            @for n in shown {
                @let text = lines.get(n - 1).copied().unwrap_or("");
                @if bad.contains(&(n as u32)) {
                    li value=(n) class="bad" { mark { code { (text) } } span class="visually-hidden" { " (problem on this line)" } }
                } @else {
                    li value=(n) { code { (text) } }
                }
            }
        }
    }
}

fn counts_table(r: &BacktestReport) -> Markup {
    let ids: BTreeSet<&String> = r.rules.keys().chain(r.current.rules.keys()).collect();
    let mut kinds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for d in &r.directives {
        if !d.deduplicated {
            kinds.entry(d.kind.clone()).or_default().0 += 1;
        }
    }
    for d in &r.current.directives {
        let k = d["kind"].as_str().unwrap_or("?").to_owned();
        kinds.entry(k).or_default().1 += 1;
    }
    html! {
        p { "Over the last " (BACKTEST_DAYS) " days: " strong { (r.signals) } " signals. With this change the rules would create "
            strong { (r.directives_created) } " directives (" (r.directives_deduplicated) " more deduplicated); the rules in force created "
            strong { (r.current.directives_created) } "." }
        div class="table-wrap" {
            table id="backtest-rules" {
                caption { "Per rule" }
                thead { tr {
                    th scope="col" { "Rule" } th scope="col" { "Would match" } th scope="col" { "Would skip" }
                    th scope="col" { "Errors" } th scope="col" { "Would create" } th scope="col" { "Created (as it happened)" }
                } }
                tbody {
                    @if ids.is_empty() { tr { td colspan="6" { "No rule acted on these signals, either way." } } }
                    @for id in ids {
                        @let c = r.rules.get(id).cloned().unwrap_or_default();
                        @let now = r.current.rules.get(id).map_or(0, |c| c.directives);
                        tr class=[(c.directives != now).then_some("changed")] {
                            th scope="row" { code { (id) } }
                            td { (c.matched) } td { (c.skipped) } td { (c.errors) }
                            td { (c.directives) } td { (now) }
                        }
                    }
                }
            }
        }
        div class="table-wrap" {
            table id="backtest-kinds" {
                caption { "Per directive kind" }
                thead { tr { th scope="col" { "Kind" } th scope="col" { "Would create" } th scope="col" { "Created (as it happened)" } } }
                tbody {
                    @for (k, (would, did)) in &kinds {
                        tr { th scope="row" { code { (k) } } td { (would) } td { (did) } }
                    }
                    @if kinds.is_empty() { tr { td colspan="3" { "No directives either way." } } }
                }
            }
        }
    }
}

fn editor(m: &Member, e: &Editor<'_>, outcome: &Outcome) -> Markup {
    let problems: Vec<&(String, u32, u32, String)> = match outcome {
        Outcome::Problems(p) => p.iter().collect(),
        _ => Vec::new(),
    };
    let bad_lines: BTreeSet<u32> = problems
        .iter()
        .filter(|p| p.0 == e.name)
        .map(|p| p.1)
        .collect();
    let title = if e.is_new {
        "New rule file".to_owned()
    } else {
        format!("Edit {}", e.name)
    };
    page(
        m,
        HREF,
        &title,
        html! {
            p { a href=(HREF) { "← Rules" } }
            h1 { (title) }
            form method="post" action=(HREF) class="stack" id="rule-editor" {
                (csrf_field(m))
                @if e.is_new {
                    label for="rule-name" { "File name " span class="req" { "(required)" } }
                    input id="rule-name" name="name" type="text" required value=(e.name) pattern="[A-Za-z0-9_.-]+\\.toml"
                        aria-describedby="rule-name-hint";
                    p class="hint" id="rule-name-hint" { "Ends in .toml; letters, digits, _, - and ." }
                    input type="hidden" name="new" value="1";
                } @else {
                    input type="hidden" name="name" value=(e.name);
                }
                label for="rule-body" { "Rules (TOML)" }
                textarea id="rule-body" name="body" rows="22" spellcheck="false" class="code-input"
                    aria-describedby=[(!problems.is_empty()).then_some("rule-problems")] { (e.body) }
                div class="actions" {
                    button type="submit" name="action" value="check" { "Check" }
                    button type="submit" name="action" value="backtest" { "Backtest (last " (BACKTEST_DAYS) " days)" }
                    button type="submit" name="action" value="publish" class="primary" { "Publish" }
                    @if !e.is_new { a class="button danger" href=(format!("{HREF}/files/{}/delete", e.name)) { "Delete file…" } }
                }
            }
            section aria-live="polite" id="rule-result" {
                @match outcome {
                    Outcome::None => {}
                    Outcome::Problems(p) => {
                        div class="error" role="alert" {
                            h2 { (p.len()) " problem(s); nothing was changed" }
                            ul id="rule-problems" class="problems" {
                                @for (file, line, col, msg) in p {
                                    li { code { (file) ":" (line) ":" (col) } ": " (msg) }
                                }
                            }
                        }
                        @if !bad_lines.is_empty() { (listing(e.body, &bad_lines)) }
                    }
                    Outcome::Valid(ids, warnings) => {
                        p class="flash" role="status" { "No problems. This file holds " (ids.len()) " rule(s)" @if !ids.is_empty() { ": " (ids.join(", ")) } "." }
                        @if !warnings.is_empty() {
                            ul class="warnings" { @for w in warnings { li { "warning: " code { (w) } } } }
                        }
                    }
                    Outcome::Backtest(r) => {
                        h2 { "Backtest" }
                        (counts_table(r))
                    }
                    Outcome::Error(msg) => { (error_box(msg)) }
                }
            }
        },
    )
}

async fn new_file(m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let e = Editor {
        name: "",
        body: NEW_FILE,
        is_new: true,
    };
    Ok(editor(&m, &e, &Outcome::None))
}

async fn open_file(
    State(s): State<AppState>,
    m: Member,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let f = s
        .engine
        .workflow_file(m.tenant.id, &name)
        .await
        .map_err(|_| ConsoleError::NotFound("rule file".into()))?;
    let body = f.file.map(|f| f.body).unwrap_or_default();
    let e = Editor {
        name: &name,
        body: &body,
        is_new: false,
    };
    Ok(editor(&m, &e, &Outcome::None))
}

#[derive(Deserialize)]
struct EditForm {
    #[serde(default)]
    name: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    action: String,
    new: Option<String>,
}

fn problems_of(e: EngineError) -> Result<Outcome, ConsoleError> {
    match e {
        EngineError::InvalidWorkflow(diags) => Ok(Outcome::Problems(
            diags
                .into_iter()
                .map(|d| (d.file.display().to_string(), d.line, d.col, d.message))
                .collect(),
        )),
        other => Ok(Outcome::Error(fixable(other)?.1)),
    }
}

async fn submit(
    State(s): State<AppState>,
    f: CsrfForm<EditForm>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let name = f.form.name.trim().to_owned();
    // Browsers post text areas with CRLF line ends; store what was meant.
    let body = f.form.body.replace("\r\n", "\n");
    let files = BTreeMap::from([(name.clone(), body.clone())]);
    let outcome = match f.form.action.as_str() {
        "check" => match s.engine.check_workflow_files(m.tenant.id, &files).await {
            Ok(r) => {
                let ids = r
                    .rules
                    .iter()
                    .filter(|r| {
                        published_name(&r.file) == Some((m.tenant.slug.as_str(), name.as_str()))
                    })
                    .map(|r| r.id.clone())
                    .collect();
                Outcome::Valid(ids, r.warnings.iter().map(ToString::to_string).collect())
            }
            Err(e) => problems_of(e)?,
        },
        "backtest" => {
            let until = now_ms();
            let req = BacktestRequest {
                files,
                since: until - BACKTEST_DAYS * 24 * 3600 * 1000,
                until,
            };
            match s.engine.backtest(m.tenant.id, &req).await {
                Ok(r) => Outcome::Backtest(Box::new(r)),
                Err(e) => problems_of(e)?,
            }
        }
        "publish" => match s
            .engine
            .publish_workflow_file(m.tenant.id, &name, &body, m.origin())
            .await
        {
            Ok(r) => {
                let msg = if r.changed {
                    format!(
                        "Published {} version {} ({} rule(s)); it is in force now.",
                        r.name,
                        r.version,
                        r.rules.len()
                    )
                } else {
                    format!("{} is unchanged: nothing was written.", r.name)
                };
                return Ok(redirect_with_flash(
                    &format!("{HREF}/files/{}", r.name),
                    &msg,
                ));
            }
            Err(e) => problems_of(e)?,
        },
        _ => Outcome::Error("Choose Check, Backtest or Publish.".into()),
    };
    let status = match &outcome {
        Outcome::Problems(_) | Outcome::Error(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let e = Editor {
        name: &name,
        body: &body,
        is_new: f.form.new.is_some(),
    };
    Ok(with_status(status, editor(m, &e, &outcome)))
}

async fn confirm_delete(
    State(s): State<AppState>,
    m: Member,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    s.engine
        .workflow_file(m.tenant.id, &name)
        .await
        .ok()
        .and_then(|f| f.file)
        .ok_or_else(|| ConsoleError::NotFound("rule file".into()))?;
    Ok(page(
        &m,
        HREF,
        "Delete a rule file",
        html! {
            p { a href=(format!("{HREF}/files/{name}")) { "← Back to " (name) } }
            h1 { "Delete " (name) "?" }
            p { "Its rules stop at once, on every node. Its history is kept, and publishing the file again brings them back." }
            div class="actions" {
                form method="post" action=(format!("{HREF}/files/{name}/delete")) class="inline" {
                    (csrf_field(&m))
                    button type="submit" class="danger" { "Delete " (name) }
                }
                a class="button" href=(format!("{HREF}/files/{name}")) { "Keep it" }
            }
        },
    ))
}

async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    match s
        .engine
        .delete_workflow_file(m.tenant.id, &name, m.origin())
        .await
    {
        Ok(()) => Ok(redirect_with_flash(
            HREF,
            &format!("{name} deleted; its rules no longer run."),
        )),
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Err(match status {
                StatusCode::NOT_FOUND => ConsoleError::NotFound("rule file".into()),
                _ => ConsoleError::Invalid(msg),
            })
        }
    }
}
