//! `/console/saved-replies`: the team's snippets for the reply box. Any
//! member may add, edit and delete them; the conversation page lists them
//! above its reply box, beside the FAQ's answers.

use crate::saved_reply::{self, MAX_CONTENT, MAX_TITLE};
use crate::types::id::SavedReplyId;
use axum::Router;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::when;
use fleetprompt_server::AppState;
use fleetprompt_server::console::{
    ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash,
};

const URL: &str = "/console/saved-replies";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/saved-replies", get(list).post(add))
        .route("/saved-replies/{id}", post(edit))
        .route("/saved-replies/{id}/delete", post(delete))
}

fn parse_id(id: &str) -> Result<SavedReplyId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("saved reply".into()))
}

/// A saved reply's two fields, empty or filled in; `key` keeps the ids of
/// several forms on one page apart.
fn fields(key: &str, title: &str, content: &str) -> Markup {
    html! {
        label for={ "title-" (key) } { "Title" }
        input id={ "title-" (key) } name="title" required maxlength=(MAX_TITLE) value=(title);
        label for={ "content-" (key) } { "Text" }
        textarea id={ "content-" (key) } name="content" required maxlength=(MAX_CONTENT) rows="4" { (content) }
    }
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    let rows = saved_reply::list(&s.engine, m.tenant.id).await?;
    let body = html! {
        h1 { "Saved replies" }
        p class="hint" {
            "Your team's wording for answers you give often. In a conversation, pick one above the reply box to put it there, then edit it before sending. "
            "The answers in your FAQ file are listed there too."
        }
        @if rows.is_empty() {
            p { "No saved reply yet: add one below." }
        } @else {
            ul class="snippets" aria-label="Saved replies" {
                @for r in &rows {
                    li class="panel" {
                        h2 { (r.title) }
                        p class="text" { (r.content) }
                        p class="hint" { "Changed " (when(r.updated_at)) }
                        details {
                            summary { "Edit" span class="visually-hidden" { " " (r.title) } }
                            form method="post" action={ (URL) "/" (r.id) } class="stack" {
                                (csrf_field(&m))
                                (fields(&r.id.to_string(), &r.title, &r.content))
                                button type="submit" class="primary" { "Save changes" }
                            }
                        }
                        form method="post" action={ (URL) "/" (r.id) "/delete" } class="inline" {
                            (csrf_field(&m))
                            button type="submit" class="danger" { "Delete" span class="visually-hidden" { " " (r.title) } }
                        }
                    }
                }
            }
        }
        h2 { "Add a saved reply" }
        form method="post" action=(URL) class="stack" {
            (csrf_field(&m))
            (fields("new", "", ""))
            button type="submit" class="primary" { "Add saved reply" }
        }
    };
    Ok(page(&m, URL, "Saved replies", body))
}

#[derive(Deserialize)]
struct Fields {
    title: String,
    content: String,
}

async fn add(State(s): State<AppState>, f: CsrfForm<Fields>) -> Result<Response, ConsoleError> {
    let m = &f.member;
    let row = saved_reply::add(
        &s.engine,
        m.tenant.id,
        Some(m.member.id),
        &f.form.title,
        &f.form.content,
    )
    .await?;
    Ok(redirect_with_flash(
        URL,
        &format!("Saved reply “{}” added.", row.title),
    ))
}

async fn edit(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<Fields>,
) -> Result<Response, ConsoleError> {
    let id = parse_id(&id)?;
    saved_reply::edit(
        &s.engine,
        f.member.tenant.id,
        id,
        &f.form.title,
        &f.form.content,
    )
    .await?;
    Ok(redirect_with_flash(URL, "Saved reply changed."))
}

async fn delete(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<std::collections::HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let id = parse_id(&id)?;
    saved_reply::remove(&s.engine, f.member.tenant.id, id).await?;
    Ok(redirect_with_flash(URL, "Saved reply deleted."))
}
