//! `/console/tokens` (every member): the member's own personal API tokens:
//! list, create (the secret shown once, with a copy button), revoke. The
//! engine calls of `/admin/v1/tokens`; a token acts with its member's role.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use fleetprompt_core::TokenId;
use fleetprompt_engine::access;
use maud::{Markup, html};
use serde::Deserialize;

use super::ui::{error_box, fixable, shown_once, when, when_opt, with_status};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/tokens";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

async fn render(
    s: &AppState,
    m: &Member,
    error: Option<&str>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let tokens = access::list_tokens(&s.engine, m.tenant.id, Some(m.member.id)).await?;
    let (live, revoked): (Vec<_>, Vec<_>) = tokens.iter().partition(|t| t.revoked_at.is_none());
    Ok(page(
        m,
        HREF,
        "API tokens",
        html! {
            h1 { "Your API tokens" }
            p class="hint" { "A personal token calls the admin API as you (" (m.member.role) "): "
                code { "Authorization: Bearer fpa_…" } ". It stops working when revoked, or while you are disabled." }
            @if let Some(e) = error { (error_box(e)) }
            @if let Some(o) = once { (o) }
            @if live.is_empty() {
                p { "You have no active tokens." }
            } @else {
                div class="table-wrap" {
                    table {
                        caption class="visually-hidden" { "Your active tokens" }
                        thead { tr {
                            th scope="col" { "Name" } th scope="col" { "Prefix" } th scope="col" { "Created" }
                            th scope="col" { "Last used" } th scope="col" { span class="visually-hidden" { "Actions" } }
                        } }
                        tbody {
                            @for t in &live {
                                tr id=(format!("token-{}", t.id)) {
                                    th scope="row" { (t.name) }
                                    td data-label="Prefix" { code { (t.prefix) "…" } }
                                    td data-label="Created" { (when(t.created_at)) }
                                    td data-label="Last used" { (when_opt(t.last_used_at, "never")) }
                                    td {
                                        form method="post" action=(format!("{HREF}/{}/revoke", t.id)) class="inline" {
                                            (csrf_field(m))
                                            button type="submit" class="danger" { "Revoke" span class="visually-hidden" { " " (t.name) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 id="new-token" { "Create a token" }
            form method="post" action=(HREF) class="stack panel" aria-labelledby="new-token" {
                (csrf_field(m))
                label for="token-name" { "Name " span class="req" { "(required)" } }
                input id="token-name" name="name" type="text" required maxlength="100" autocomplete="off" aria-describedby="token-name-hint";
                p class="hint" id="token-name-hint" { "What it is for, e.g. \"CI deploys\"; the token itself is shown once." }
                button type="submit" class="primary" { "Create token" }
            }
            @if !revoked.is_empty() {
                h2 { "Revoked" }
                ul {
                    @for t in &revoked {
                        li { (t.name) " " code { (t.prefix) "…" } ", revoked " (when_opt(t.revoked_at, "")) }
                    }
                }
            }
        },
    ))
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    render(&s, &m, None, None).await
}

#[derive(Deserialize)]
struct NewToken {
    name: String,
}

async fn create(
    State(s): State<AppState>,
    f: CsrfForm<NewToken>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    match access::create_token(
        &s.engine,
        m.tenant.id,
        m.member.id,
        f.form.name.trim(),
        &m.origin(),
    )
    .await
    {
        Ok((row, issued)) => {
            let once = shown_once(
                "new-token-value",
                &format!("Token {} created", row.name),
                &issued.token,
                "Copy it now: it is shown only once, and only its prefix is kept readable.",
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

async fn revoke(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    let id: TokenId = id
        .parse()
        .map_err(|_| ConsoleError::NotFound("token".into()))?;
    // Here a member revokes only their own tokens, whatever their role
    // (admins revoke others' over the API).
    access::revoke_token(&s.engine, m.tenant.id, id, Some(m.member.id), &m.origin())
        .await
        .map_err(|e| match e {
            fleetprompt_engine::EngineError::NotFound(_) => ConsoleError::NotFound("token".into()),
            other => other.into(),
        })?;
    Ok(redirect_with_flash(
        HREF,
        "Token revoked; it no longer works.",
    ))
}
