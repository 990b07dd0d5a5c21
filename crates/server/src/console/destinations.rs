//! `/console/destinations` (admins): list, add, edit (rotate) and delete
//! outbound destinations, over the engine calls of
//! `/admin/v1/destinations`. Secret fields are write-only: a form never
//! holds their value, the list says only whether one is set, and an empty
//! secret field on the edit form keeps the stored one.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use fleetprompt_engine::destination::{self, DestinationView};
use maud::{Markup, html};
use serde_json::{Map, Value, json};

use super::ui::{error_box, fixable, shown_once, with_status};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/destinations";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/destinations", get(list).post(create))
        .route("/destinations/{name}/edit", get(edit_page).post(edit))
        .route(
            "/destinations/{name}/delete",
            get(confirm_delete).post(delete),
        )
}

/// How a field is typed in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Input {
    Text,
    Url,
    Number,
    /// Addresses, one per line or comma-separated: sent as a list.
    List,
}

/// One setting of a destination kind.
struct Field {
    name: &'static str,
    label: &'static str,
    input: Input,
    required: bool,
    /// Write-only: never shown back; empty on edit keeps it.
    secret: bool,
    hint: &'static str,
}

const fn field(
    name: &'static str,
    label: &'static str,
    input: Input,
    required: bool,
    secret: bool,
    hint: &'static str,
) -> Field {
    Field {
        name,
        label,
        input,
        required,
        secret,
        hint,
    }
}

const MAX_IN_FLIGHT: Field = field(
    "max_in_flight",
    "Attempts in flight at most (per node)",
    Input::Number,
    false,
    false,
    "1 to 10000; empty: the server's default.",
);

/// A destination kind, its label and its settings, as the admin API and
/// docs/escalation.md name them.
struct Kind {
    kind: &'static str,
    label: &'static str,
    about: &'static str,
    fields: &'static [Field],
}

const KINDS: &[Kind] = &[
    Kind {
        kind: "mattermost",
        label: "Mattermost (incoming webhook)",
        about: "Posts escalations to a channel through an incoming webhook.",
        fields: &[
            field(
                "webhook_url",
                "Webhook URL",
                Input::Url,
                true,
                true,
                "https://chat.example.com/hooks/…; its path is the credential.",
            ),
            MAX_IN_FLIGHT,
        ],
    },
    Kind {
        kind: "mattermost_api",
        label: "Mattermost (REST API)",
        about: "Posts through the REST API v4; follow-ups thread under the first post, and retries are not posted twice.",
        fields: &[
            field(
                "base_url",
                "Server URL",
                Input::Url,
                true,
                true,
                "e.g. https://chat.example.com",
            ),
            field(
                "token",
                "Bot or personal access token",
                Input::Text,
                true,
                true,
                "",
            ),
            field("channel_id", "Channel id", Input::Text, true, false, ""),
            MAX_IN_FLIGHT,
        ],
    },
    Kind {
        kind: "email",
        label: "Email (Edge Connector)",
        about: "Emails the team through one of the tenant's Edge Connectors.",
        fields: &[
            field(
                "connector",
                "Edge Connector (name or id)",
                Input::Text,
                true,
                false,
                "",
            ),
            field(
                "to",
                "To",
                Input::List,
                true,
                false,
                "The team's addresses, one per line or separated by commas (at most 20).",
            ),
            field(
                "from",
                "From",
                Input::Text,
                false,
                false,
                "e.g. Acme Support <support@acme.example>; empty: the connector's own.",
            ),
            MAX_IN_FLIGHT,
        ],
    },
    Kind {
        kind: "llm",
        label: "LLM (OpenAI-compatible)",
        about: "Drafts replies to visitors with a language model (OpenAI, Ollama, llama.cpp, vLLM).",
        fields: &[
            field(
                "base_url",
                "Base URL",
                Input::Url,
                true,
                true,
                "e.g. https://api.openai.com/v1 or http://localhost:11434",
            ),
            field("model", "Model", Input::Text, true, false, ""),
            field(
                "api_key",
                "API key",
                Input::Text,
                false,
                true,
                "Only if the server needs one.",
            ),
            field(
                "timeout_ms",
                "Timeout (ms)",
                Input::Number,
                false,
                false,
                "100 to 600000; empty: 15 s.",
            ),
            field(
                "max_response_bytes",
                "Longest answer (bytes)",
                Input::Number,
                false,
                false,
                "1024 to 67108864; empty: 1 MiB.",
            ),
            MAX_IN_FLIGHT,
        ],
    },
    Kind {
        kind: "webhook",
        label: "Webhook",
        about: "POSTs a signed JSON body (Standard Webhooks) for webhook.post directives.",
        fields: &[
            field(
                "url",
                "URL",
                Input::Url,
                true,
                true,
                "Where to POST; sealed at rest.",
            ),
            field(
                "signing_secret",
                "Signing secret",
                Input::Text,
                false,
                true,
                "At least 24 characters; empty: one is made and shown once.",
            ),
            MAX_IN_FLIGHT,
        ],
    },
];

fn kind_of(kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// Whether a secret field holds a value, from the redacted summary (which
/// names sealed optional secrets as `"(sealed)"` and never holds them).
fn secret_set(d: &DestinationView, f: &Field) -> bool {
    if f.required || (d.kind == "webhook" && f.name == "signing_secret") {
        return true;
    }
    d.config.get(f.name).is_some_and(|v| !v.is_null())
}

/// A form's value of a non-secret field from the summary, for the edit
/// form.
fn shown_value(d: &DestinationView, f: &Field) -> String {
    match d.config.get(f.name) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The summary a list row shows: the redacted public settings, and every
/// secret only as set or not set.
fn summary(d: &DestinationView) -> Markup {
    let Some(k) = kind_of(&d.kind) else {
        return html! { code { (d.config) } };
    };
    html! {
        dl class="kv" {
            @for f in k.fields {
                @if f.secret {
                    dt { (f.label) }
                    dd {
                        @if secret_set(d, f) { span class="badge s-active" { "set" } } @else { span class="badge s-disabled" { "not set" } }
                        @if f.input == Input::Url { @if let Some(Value::String(host)) = d.config.get(f.name) { " " span class="hint" { (host) } } }
                    }
                } @else {
                    @let v = shown_value(d, f);
                    @if !v.is_empty() { dt { (f.label) } dd { (v.replace('\n', ", ")) } }
                }
            }
        }
    }
}

fn input_for(prefix: &str, f: &Field, value: &str, edit_secret: Option<bool>) -> Markup {
    let id = format!("{prefix}-{}", f.name);
    let hint_id = format!("{id}-hint");
    // On edit a secret is never required: empty keeps the stored one.
    let required = f.required && edit_secret.is_none();
    let hint = match edit_secret {
        Some(true) => format!(
            "Set. Leave empty to keep it; type a new value to rotate it. {}",
            f.hint
        ),
        Some(false) => format!("Not set. {}", f.hint),
        None => f.hint.to_owned(),
    };
    html! {
        div class="field" {
            label for=(id) { (f.label) @if required { " " span class="req" { "(required)" } } }
            @match f.input {
                Input::List => textarea id=(id) name=(f.name) rows="3" required[required] aria-describedby=(hint_id) { (value) },
                Input::Number => input id=(id) name=(f.name) type="number" min="1" value=(value) required[required] aria-describedby=(hint_id);,
                Input::Url => input id=(id) name=(f.name) type="url" value=(value) required[required] autocomplete="off" aria-describedby=(hint_id);,
                Input::Text => @if f.secret {
                    input id=(id) name=(f.name) type="password" value="" required[required] autocomplete="new-password" aria-describedby=(hint_id);
                } @else {
                    input id=(id) name=(f.name) type="text" value=(value) required[required] aria-describedby=(hint_id);
                },
            }
            @if !hint.trim().is_empty() { p class="hint" id=(hint_id) { (hint) } }
        }
    }
}

/// What was typed into a form, fields given meaning: numbers as numbers,
/// lists as lists; an empty field is left out, or (`clear`) set to null to
/// remove an optional setting.
fn config_from(k: &Kind, form: &HashMap<String, String>, edit: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for f in k.fields {
        let raw = form.get(f.name).map(|v| v.trim()).unwrap_or("");
        if raw.is_empty() {
            // On edit, emptying a shown optional setting removes it; an
            // empty secret keeps the stored one.
            if edit && !f.secret && !f.required {
                out.insert(f.name.into(), Value::Null);
            }
            continue;
        }
        let v = match f.input {
            Input::Number => raw
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(raw)),
            Input::List => Value::Array(
                raw.split([',', '\n'])
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| json!(s))
                    .collect(),
            ),
            _ => json!(raw),
        };
        out.insert(f.name.into(), v);
    }
    out
}

async fn render(
    s: &AppState,
    m: &Member,
    error: Option<&str>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let rows = fleetprompt_store::destination::list(s.engine.db(), m.tenant.id).await?;
    let views: Vec<DestinationView> = rows.into_iter().map(Into::into).collect();
    Ok(page(
        m,
        HREF,
        "Destinations",
        html! {
            h1 { "Destinations" }
            p class="hint" { "Where directives deliver: Mattermost, email, an LLM, webhooks. Secrets are sealed at rest and never shown again." }
            @if let Some(e) = error { (error_box(e)) }
            @if let Some(o) = once { (o) }
            @if views.is_empty() {
                p { "No destinations yet. Add one below: the shipped rules use the names " code { "mattermost" } ", " code { "email" } " and " code { "llm" } "." }
            } @else {
                div class="table-wrap" {
                    table {
                        caption class="visually-hidden" { "Destinations" }
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Kind" } th scope="col" { "Settings" }
                            th scope="col" { span class="visually-hidden" { "Actions" } }
                        } }
                        tbody {
                            @for d in &views {
                                tr id=(format!("destination-{}", d.name)) {
                                    th scope="row" { (d.name) }
                                    td data-label="Kind" { (kind_of(&d.kind).map_or(d.kind.as_str(), |k| k.label)) }
                                    td data-label="Settings" { (summary(d)) }
                                    td class="row-actions" {
                                        a class="button" href=(format!("{HREF}/{}/edit", d.name)) { "Edit" span class="visually-hidden" { " " (d.name) } }
                                        " "
                                        a class="button danger" href=(format!("{HREF}/{}/delete", d.name)) { "Delete…" span class="visually-hidden" { " " (d.name) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Add a destination" }
            @for k in KINDS {
                details class="panel" {
                    summary { (k.label) }
                    p class="hint" { (k.about) }
                    form method="post" action=(HREF) class="stack" {
                        (csrf_field(m))
                        input type="hidden" name="kind" value=(k.kind);
                        div class="field" {
                            label for=(format!("new-{}-name", k.kind)) { "Name " span class="req" { "(required)" } }
                            input id=(format!("new-{}-name", k.kind)) name="name" type="text" required pattern="[A-Za-z0-9_-]{1,64}"
                                aria-describedby=(format!("new-{}-name-hint", k.kind));
                            p class="hint" id=(format!("new-{}-name-hint", k.kind)) { "Rules and directives name it; letters, digits, - and _." }
                        }
                        @for f in k.fields { (input_for(&format!("new-{}", k.kind), f, "", None)) }
                        button type="submit" class="primary" { "Add " (k.label) }
                    }
                }
            }
        },
    ))
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    render(&s, &m, None, None).await
}

async fn create(
    State(s): State<AppState>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let kind = f.form.get("kind").map(String::as_str).unwrap_or("");
    let name = f.form.get("name").map(|n| n.trim()).unwrap_or("");
    let config = kind_of(kind)
        .map(|k| config_from(k, &f.form, false))
        .unwrap_or_default();
    match destination::create(
        &s.engine,
        m.tenant.id,
        name,
        kind,
        &Value::Object(config),
        &m.origin(),
    )
    .await
    {
        Ok((view, None)) => Ok(redirect_with_flash(
            HREF,
            &format!("Destination {} added.", view.name),
        )),
        Ok((view, Some(secret))) => {
            let once = shown_once(
                "signing-secret",
                &format!("Destination {} added: its signing secret", view.name),
                &secret,
                "The receiver verifies signatures with it. It is shown only now: copy it.",
            );
            Ok(with_status(
                StatusCode::OK,
                render(&s, m, None, Some(once)).await?,
            ))
        }
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(status, render(&s, m, Some(&msg), None).await?))
        }
    }
}

async fn edit_form(
    s: &AppState,
    m: &Member,
    name: &str,
    error: Option<&str>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let d: DestinationView = destination::lookup(&s.engine, m.tenant.id, name)
        .await
        .map_err(|_| ConsoleError::NotFound("destination".into()))?
        .into();
    let k = kind_of(&d.kind).ok_or_else(|| ConsoleError::NotFound("destination kind".into()))?;
    Ok(page(
        m,
        HREF,
        "Edit a destination",
        html! {
            p { a href=(HREF) { "← Destinations" } }
            h1 { "Edit " (d.name) }
            p { (k.label) ". " span class="hint" { "The name and kind cannot change." } }
            @if let Some(e) = error { (error_box(e)) }
            @if let Some(o) = once { (o) }
            form method="post" action=(format!("{HREF}/{}/edit", d.name)) class="stack" {
                (csrf_field(m))
                @for f in k.fields {
                    @if f.secret {
                        (input_for("edit", f, "", Some(secret_set(&d, f))))
                        @if !f.required && secret_set(&d, f) {
                            div class="check" {
                                input type="checkbox" id=(format!("clear-{}", f.name)) name=(format!("clear_{}", f.name)) value="1";
                                label for=(format!("clear-{}", f.name)) {
                                    @if d.kind == "webhook" && f.name == "signing_secret" { "Make a new signing secret (shown once)" } @else { "Remove the " (f.label.to_lowercase()) }
                                }
                            }
                        }
                    } @else {
                        (input_for("edit", f, &shown_value(&d, f), None))
                    }
                }
                button type="submit" class="primary" { "Save changes" }
            }
        },
    ))
}

async fn edit_page(
    State(s): State<AppState>,
    m: Member,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    edit_form(&s, &m, &name, None, None).await
}

async fn edit(
    State(s): State<AppState>,
    Path(name): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let row = destination::lookup(&s.engine, m.tenant.id, &name)
        .await
        .map_err(|_| ConsoleError::NotFound("destination".into()))?;
    let k = kind_of(&row.kind).ok_or_else(|| ConsoleError::NotFound("destination kind".into()))?;
    let mut changes = config_from(k, &f.form, true);
    for fld in k.fields.iter().filter(|f| f.secret && !f.required) {
        if f.form.contains_key(&format!("clear_{}", fld.name)) {
            changes.insert(fld.name.into(), Value::Null);
        }
    }
    match destination::update(&s.engine, m.tenant.id, &name, &changes, &m.origin()).await {
        Ok((view, None)) => Ok(redirect_with_flash(
            HREF,
            &format!("Destination {} saved.", view.name),
        )),
        Ok((view, Some(secret))) => {
            let once = shown_once(
                "signing-secret",
                &format!("Destination {} saved: its new signing secret", view.name),
                &secret,
                "The old one no longer signs. It is shown only now: copy it.",
            );
            Ok(with_status(
                StatusCode::OK,
                edit_form(&s, m, &name, None, Some(once)).await?,
            ))
        }
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(
                status,
                edit_form(&s, m, &name, Some(&msg), None).await?,
            ))
        }
    }
}

fn delete_page(m: &Member, name: &str, in_use: Option<&str>) -> Markup {
    page(
        m,
        HREF,
        "Delete a destination",
        html! {
            p { a href=(HREF) { "← Destinations" } }
            h1 { "Delete " (name) "?" }
            @if let Some(why) = in_use {
                div class="error" role="alert" {
                    p { strong { "This destination is still in use." } }
                    p { (why) }
                    p { "Deleting it anyway cancels those unfinished directives (the reason is recorded on each), and the rules skip it from then on, as if it had never been set up." }
                }
                div class="actions" {
                    form method="post" action=(format!("{HREF}/{name}/delete")) class="inline" {
                        (csrf_field(m))
                        input type="hidden" name="force" value="1";
                        button type="submit" class="danger" { "Delete anyway and cancel its directives" }
                    }
                    a class="button" href=(HREF) { "Keep it" }
                }
            } @else {
                p { "Rules that name " code { (name) } " will skip it from then on. This cannot be undone; its secrets are gone with it." }
                div class="actions" {
                    form method="post" action=(format!("{HREF}/{name}/delete")) class="inline" {
                        (csrf_field(m))
                        button type="submit" class="danger" { "Delete " (name) }
                    }
                    a class="button" href=(HREF) { "Keep it" }
                }
            }
        },
    )
}

async fn confirm_delete(
    State(s): State<AppState>,
    m: Member,
    Path(name): Path<String>,
) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let row = destination::lookup(&s.engine, m.tenant.id, &name)
        .await
        .map_err(|_| ConsoleError::NotFound("destination".into()))?;
    Ok(delete_page(&m, &row.name, None))
}

async fn delete(
    State(s): State<AppState>,
    Path(name): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    let force = f.form.get("force").is_some_and(|v| v == "1");
    match destination::delete(&s.engine, m.tenant.id, &name, force, &m.origin()).await {
        Ok(d) => {
            let n = d.cancelled_directives.len();
            let msg = if n > 0 {
                format!(
                    "Destination {} deleted; {n} unfinished directive(s) cancelled.",
                    d.destination.name
                )
            } else {
                format!("Destination {} deleted.", d.destination.name)
            };
            Ok(redirect_with_flash(HREF, &msg))
        }
        Err(fleetprompt_engine::EngineError::DestinationInUse(why)) => {
            // The API's 409, in plain words: which rules and directives
            // need it, and the force option.
            let why = why
                .split_once("; ")
                .map_or(why.as_str(), |(_, rest)| rest)
                .split(". Change those rules")
                .next()
                .unwrap_or_default();
            let mut chars = why.chars();
            let why: String = chars
                .next()
                .map(|c| c.to_uppercase().chain(chars).collect())
                .unwrap_or_default();
            Ok(with_status(
                StatusCode::CONFLICT,
                delete_page(m, &name, Some(&format!("{why}."))),
            ))
        }
        Err(e) => Err(e.into()),
    }
}
