//! `/console/sites` (admins): register a site (domains, mode, appearance,
//! greeting, consent text, limits, the PII setting), edit it, copy its
//! embed snippet, verify the installation with a test message, rotate its
//! secret, disable and enable it. Each change is the engine call the admin
//! API makes, so it is a directive on the site's timeline.

use std::collections::HashMap;
use std::time::Duration;

use crate::settings::{AskContact, SiteSettings};
use crate::site::{self, RegisterRequest, UpdateRequest};
use crate::store::site::SiteRow;
use crate::types::id::SiteId;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetprompt_core::DirectiveStatus;
use fleetprompt_store::directive::DirectiveRow;
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::inbox::site_name;
use super::timeline::plain_error;
use super::{badge, when};
use fleetprompt_server::AppState;
use fleetprompt_server::console::{
    ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash,
};

/// How long a site change is waited for before the page says "still running".
const WAIT: Duration = Duration::from_secs(10);

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/sites", get(list).post(register))
        .route("/sites/{id}", get(show).post(update))
        .route("/sites/{id}/verify", post(verify))
        .route("/sites/{id}/rotate", post(rotate))
        .route("/sites/{id}/disable", post(disable))
        .route("/sites/{id}/enable", post(enable))
}

/// The snippet a customer pastes into their pages.
pub fn snippet(engine: &fleetprompt_engine::Engine, row: &SiteRow) -> String {
    format!(
        "<script async src=\"{}/widget.js\" data-site-key=\"{}\"></script>",
        engine.public_url(),
        row.public_key
    )
}

fn parse_id(id: &str) -> Result<SiteId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("site".into()))
}

async fn load(s: &AppState, m: &Member, id: &str) -> Result<SiteRow, ConsoleError> {
    m.require_admin()?;
    Ok(site::get(&s.engine, m.tenant.id, parse_id(id)?).await?)
}

/// The settings form, filled with `st` (defaults for a new site).
fn settings_fields(st: &SiteSettings, domains: &str) -> Markup {
    let ask = |a: AskContact| st.ask_contact == a;
    html! {
        fieldset {
            legend { "Where" }
            div class="stack" {
                label for="domains" { "Domains (one per line: shop.example.com, or a full origin like http://localhost:8080)" }
                textarea id="domains" name="domains" rows="3" required { (domains) }
                label for="mode" { "Mode" }
                select id="mode" name="mode" { option value="native" selected { "Native widget" } }
            }
        }
        fieldset {
            legend { "Appearance and words" }
            div class="grid2" {
                div { label for="title" { "Title" } input id="title" name="title" type="text" maxlength="80" value=(st.title); }
                div { label for="color" { "Accent colour (#rrggbb)" } input id="color" name="color" type="text" pattern="#[0-9a-fA-F]{6}" value=(st.color); }
            }
            div class="stack" {
                label for="greeting" { "Greeting" }
                textarea id="greeting" name="greeting" rows="2" maxlength="500" { (st.greeting) }
                label for="consent_text" { "Consent text" }
                textarea id="consent_text" name="consent_text" rows="2" maxlength="2000" { (st.consent_text) }
                label { input type="checkbox" name="consent_required" value="on" checked[st.consent_required]; " Visitors must accept the consent text first" }
                label for="ask_contact" { "Ask for the visitor's email" }
                select id="ask_contact" name="ask_contact" {
                    option value="off" selected[ask(AskContact::Off)] { "Never" }
                    option value="optional" selected[ask(AskContact::Optional)] { "Offer (optional)" }
                    option value="before_chat" selected[ask(AskContact::BeforeChat)] { "Before the first message" }
                }
            }
        }
        fieldset {
            legend { "Limits" }
            div class="grid2" {
                div { label for="rl_visitor" { "Messages per minute per visitor" } input id="rl_visitor" name="rate_limit_visitor_per_min" type="number" min="1" max="10000" value=(st.rate_limit_visitor_per_min); }
                div { label for="rl_site" { "Messages per minute per site" } input id="rl_site" name="rate_limit_site_per_min" type="number" min="1" max="1000000" value=(st.rate_limit_site_per_min); }
                div { label for="max_bytes" { "Longest message (bytes)" } input id="max_bytes" name="max_message_bytes" type="number" min="16" max="65536" value=(st.max_message_bytes); }
                div { label for="idle" { "End a conversation after (seconds of silence)" } input id="idle" name="idle_timeout_secs" type="number" min="1" max="604800" value=(st.idle_timeout_secs); }
            }
        }
        fieldset {
            legend { "Personal data" }
            div class="stack" {
                label { input type="checkbox" name="show_visitor_details" value="on" checked[st.show_visitor_details]; " Members see visitors' name, email, browser and system in the console" }
                label { input type="checkbox" name="notify_contact" value="on" checked[st.notify_contact]; " Mattermost notifications may show the visitor's name and email" }
            }
        }
    }
}

/// The settings a form describes, as the engine takes them.
fn settings_of(f: &HashMap<String, String>) -> Result<Value, ConsoleError> {
    let mut out = Map::new();
    for k in ["title", "greeting", "consent_text", "color", "ask_contact"] {
        if let Some(v) = f.get(k) {
            out.insert(k.into(), json!(v.trim()));
        }
    }
    for k in [
        "rate_limit_visitor_per_min",
        "rate_limit_site_per_min",
        "max_message_bytes",
        "idle_timeout_secs",
    ] {
        if let Some(v) = f.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()) {
            let n: u64 = v
                .parse()
                .map_err(|_| ConsoleError::Invalid(format!("{k} must be a whole number.")))?;
            out.insert(k.into(), json!(n));
        }
    }
    for k in ["consent_required", "show_visitor_details", "notify_contact"] {
        out.insert(k.into(), json!(f.contains_key(k)));
    }
    Ok(Value::Object(out))
}

fn domains_of(f: &HashMap<String, String>) -> Vec<String> {
    f.get("domains")
        .map(|d| {
            d.split(['\n', ',', ' '])
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let rows = crate::store::site::list(s.engine.db(), m.tenant.id).await?;
    let body = html! {
        h1 { "Sites" }
        @if rows.is_empty() {
            p { "No site yet: register one below." }
        } @else {
            table {
                caption class="visually-hidden" { "Your sites" }
                thead { tr { th scope="col" { "Site" } th scope="col" { "Status" } th scope="col" { "Domains" } th scope="col" { "Added" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { a href={ "/console/sites/" (r.id) } { (site_name(r)) } }
                            td { (badge(&r.status)) }
                            td { (r.allowed_origins.join(", ")) }
                            td { (when(r.created_at)) }
                        }
                    }
                }
            }
        }
        h2 { "Register a site" }
        form method="post" action="/console/sites" {
            (csrf_field(&m))
            (settings_fields(&SiteSettings::default(), ""))
            button type="submit" class="primary" { "Register site" }
        }
    };
    Ok(page(&m, "/console/sites", "Sites", body))
}

/// What a site change's directive came to, in words.
fn outcome(what: &str, d: &DirectiveRow) -> String {
    match d.status {
        DirectiveStatus::Succeeded => format!("{what}: done."),
        DirectiveStatus::Failed | DirectiveStatus::Cancelled => format!(
            "{what} failed. {}",
            d.last_error.as_deref().map(plain_error).unwrap_or_default()
        ),
        _ => format!("{what}: still running; reload to see it finish."),
    }
}

async fn register(
    State(s): State<AppState>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    f.member.require_admin()?;
    let tenant = f.member.tenant.id;
    let req = RegisterRequest {
        domains: domains_of(&f.form),
        mode: f
            .form
            .get("mode")
            .cloned()
            .unwrap_or_else(|| "native".into()),
        settings: settings_of(&f.form)?,
    };
    let (row, directive) = site::register(&s.engine, tenant, req, f.member.origin()).await?;
    let d = site::wait_for(&s.engine, tenant, directive, WAIT).await?;
    Ok(redirect_with_flash(
        &format!("/console/sites/{}", row.id),
        &outcome("Site registered", &d),
    ))
}

fn site_page(s: &AppState, m: &Member, row: &SiteRow, report: Option<Markup>) -> Markup {
    let st = SiteSettings::from_stored(&row.settings);
    let base = format!("/console/sites/{}", row.id);
    let domains = row
        .allowed_origins
        .iter()
        .map(|o| o.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let body = html! {
        p { a href="/console/sites" { "← Sites" } }
        h1 { (site_name(row)) " " (badge(&row.status)) }
        @if let Some(r) = report { (r) }
        section class="panel" aria-labelledby="h-snippet" {
            h2 id="h-snippet" { "Embed snippet" }
            p { "Paste this into every page of the site, before " code { "</body>" } ":" }
            pre id="snippet" { (snippet(&s.engine, row)) }
            button type="button" data-copy="snippet" { "Copy snippet" }
            span id="snippet-status" role="status" class="hint" {}
        }
        section class="panel" aria-labelledby="h-verify" {
            h2 id="h-verify" { "Verify installation" }
            p { "Sends a test visitor message through the whole path (rules, escalation) and reports what happened." }
            form method="post" action={ (base) "/verify" } {
                (csrf_field(m))
                button type="submit" class="primary" { "Verify installation" }
            }
        }
        section class="panel" aria-labelledby="h-state" {
            h2 id="h-state" { "Secret and status" }
            div class="actions" {
                form method="post" action={ (base) "/rotate" } class="inline" {
                    (csrf_field(m))
                    label for="grace" { "Old tokens valid for (seconds)" }
                    " "
                    input id="grace" name="grace_secs" type="number" min="0" max="86400" value="0";
                    " "
                    button type="submit" { "Rotate secret" }
                }
                @if row.status == "disabled" {
                    form method="post" action={ (base) "/enable" } class="inline" {
                        (csrf_field(m)) button type="submit" { "Enable" }
                    }
                } @else {
                    form method="post" action={ (base) "/disable" } class="inline" {
                        (csrf_field(m)) button type="submit" class="danger" { "Disable" }
                    }
                }
            }
        }
        h2 { "Settings" }
        form method="post" action=(base) {
            (csrf_field(m))
            input type="hidden" name="version" value=(row.version);
            (settings_fields(&st, &domains))
            button type="submit" class="primary" { "Save changes" }
        }
    };
    page(m, "/console/sites", &site_name(row), body)
}

async fn show(
    State(s): State<AppState>,
    m: Member,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    let row = load(&s, &m, &id).await?;
    Ok(site_page(&s, &m, &row, None))
}

async fn update(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let row = load(&s, &f.member, &id).await?;
    let tenant = f.member.tenant.id;
    let version = f
        .form
        .get("version")
        .and_then(|v| v.trim().parse::<i64>().ok());
    let req = UpdateRequest {
        domains: Some(domains_of(&f.form)),
        settings: Some(settings_of(&f.form)?),
        version,
    };
    let d = site::update(&s.engine, tenant, row.id, req, f.member.origin()).await?;
    let d = site::wait_for(&s.engine, tenant, d, WAIT).await?;
    let msg = match d.last_error.as_deref().and_then(|e| e.strip_prefix("version_conflict: ")) {
        Some(_) => "Not saved: someone else changed this site since you opened it. The page now shows their version.".to_owned(),
        None => outcome("Settings saved", &d),
    };
    Ok(redirect_with_flash(
        &format!("/console/sites/{}", row.id),
        &msg,
    ))
}

async fn verify(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let row = load(&s, &f.member, &id).await?;
    let report = crate::verify::test_message(&s.engine, f.member.tenant.id, row.id, WAIT).await?;
    let escalations: &[Value] = report["escalations"].as_array().map_or(&[], Vec::as_slice);
    let signal_ok = !report["signal"].is_null();
    let failed = escalations.iter().any(|e| e["status"] == "failed");
    let pending = escalations
        .iter()
        .any(|e| e["status"] == "pending" || e["status"] == "running");
    let verdict = if !signal_ok || failed {
        "Verification failed"
    } else if pending {
        "Verification: the message arrived; escalations are still running"
    } else {
        "Verification succeeded"
    };
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| v.to_string())
    };
    let r = html! {
        section class={ "panel " (if failed || !signal_ok { "error" } else { "flash" }) } id="verify-report" role="status" aria-labelledby="h-report" {
            h2 id="h-report" { (verdict) }
            p {
                "Test message signal: "
                @if signal_ok { code { (text(&report["signal"]["type"])) } " " code { (text(&report["signal"]["id"])) } }
                @else { "none recorded" }
                ". "
                a href={ "/console/conversations/" (text(&report["conversation_id"])) } { "Open the test conversation" }
            }
            @if escalations.is_empty() {
                p { "No rule escalated the test message (no Mattermost or email rule matched)." }
            } @else {
                ul {
                    @for e in escalations {
                        li {
                            (text(&e["kind"])) " to " (text(&e["destination"])) ": " (badge(&text(&e["status"])))
                            @if !e["http_status"].is_null() { " (status " (text(&e["http_status"])) ")" }
                            @if !e["external_ref"].is_null() { " — reference " code { (text(&e["external_ref"])) } }
                            @if !e["error"].is_null() { " — " (plain_error(&text(&e["error"]))) }
                        }
                    }
                }
            }
        }
    };
    Ok(site_page(&s, &f.member, &row, Some(r)).into_response())
}

async fn rotate(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let row = load(&s, &f.member, &id).await?;
    let grace = f
        .form
        .get("grace_secs")
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|_| {
            ConsoleError::Invalid("The grace period must be a whole number of seconds.".into())
        })?
        .unwrap_or(0);
    let tenant = f.member.tenant.id;
    let d = site::rotate_secret(&s.engine, tenant, row.id, grace, f.member.origin()).await?;
    let d = site::wait_for(&s.engine, tenant, d, WAIT).await?;
    Ok(redirect_with_flash(
        &format!("/console/sites/{}", row.id),
        &outcome("Secret rotated", &d),
    ))
}

async fn disable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let row = load(&s, &f.member, &id).await?;
    let tenant = f.member.tenant.id;
    let d = site::disable(&s.engine, tenant, row.id, f.member.origin()).await?;
    let d = site::wait_for(&s.engine, tenant, d, WAIT).await?;
    Ok(redirect_with_flash(
        &format!("/console/sites/{}", row.id),
        &outcome("Site disabled", &d),
    ))
}

async fn enable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let row = load(&s, &f.member, &id).await?;
    let tenant = f.member.tenant.id;
    let d = site::enable(&s.engine, tenant, row.id, f.member.origin()).await?;
    let d = site::wait_for(&s.engine, tenant, d, WAIT).await?;
    Ok(redirect_with_flash(
        &format!("/console/sites/{}", row.id),
        &outcome("Site enabled", &d),
    ))
}
