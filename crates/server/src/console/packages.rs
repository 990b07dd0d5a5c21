//! `/console/packages` (admins): the catalogue from the package manifests
//! with this tenant's state; install, and uninstall after a confirmation.
//! The same engine calls as `GET /admin/v1/packages` and
//! `POST`/`DELETE /admin/v1/installations`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use fleetprompt_engine::installation;
use maud::{Markup, html};
use serde_json::Value;

use super::ui::{error_box, fixable, with_status};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/packages";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/packages", get(list))
        .route("/packages/{slug}/install", axum::routing::post(install))
        .route(
            "/packages/{slug}/uninstall",
            get(confirm_uninstall).post(uninstall),
        )
}

fn state_label(state: &str) -> &'static str {
    match state {
        "installed" => "Installed",
        "uninstalled" => "Uninstalled (data kept)",
        _ => "Not installed",
    }
}

async fn render(s: &AppState, m: &Member, error: Option<&str>) -> Result<Markup, ConsoleError> {
    let packages = installation::catalogue(&s.engine, m.tenant.id).await?;
    Ok(page(
        m,
        HREF,
        "Packages",
        html! {
            h1 { "Packages" }
            p class="hint" { "Uninstalling a package turns off its rules, directive kinds and public endpoints for this tenant; its data is kept, and installing it again brings everything back." }
            @if let Some(e) = error { (error_box(e)) }
            div class="table-wrap" {
                table {
                    caption class="visually-hidden" { "The package catalogue" }
                    thead { tr {
                        th scope="col" { "Package" }
                        th scope="col" { "Category" }
                        th scope="col" { "Description" }
                        th scope="col" { "Version" }
                        th scope="col" { "State" }
                        th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody {
                        @for p in &packages {
                            @let category = serde_json::to_value(p.category).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
                            tr id=(format!("package-{}", p.slug)) {
                                th scope="row" { (p.name) br; code { (p.slug) } }
                                td data-label="Category" { (category.replace('_', " ")) }
                                td data-label="Description" { (p.description) }
                                td data-label="Version" { (p.version)
                                    @if let Some(i) = &p.installation { @if i.version != p.version {
                                        br; span class="hint" { "installed: " (i.version) }
                                    } }
                                }
                                td data-label="State" { span class=(format!("badge s-{}", if p.state == "installed" { "active" } else { "disabled" })) { (state_label(p.state)) } }
                                td {
                                    @if p.state == "installed" {
                                        a class="button danger" href=(format!("{HREF}/{}/uninstall", p.slug)) { "Uninstall…" span class="visually-hidden" { " " (p.name) } }
                                    } @else {
                                        form method="post" action=(format!("{HREF}/{}/install", p.slug)) class="inline" {
                                            (csrf_field(m))
                                            button type="submit" class="primary" { "Install" span class="visually-hidden" { " " (p.name) } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    render(&s, &m, None).await
}

async fn install(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    // `None` keeps a stored configuration (a new installation gets `{}`),
    // as the CLI does without `--settings`.
    match installation::install(&s.engine, m.tenant.id, &slug, None::<&Value>).await {
        Ok(_) => Ok(redirect_with_flash(
            HREF,
            &format!("Package {slug} installed."),
        )),
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(status, render(&s, m, Some(&msg)).await?))
        }
    }
}

async fn confirm_uninstall(
    State(s): State<AppState>,
    m: Member,
    Path(slug): Path<String>,
) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    let packages = installation::catalogue(&s.engine, m.tenant.id).await?;
    let p = packages
        .iter()
        .find(|p| p.slug == slug)
        .ok_or_else(|| ConsoleError::NotFound("package".into()))?;
    Ok(page(
        &m,
        HREF,
        "Uninstall a package",
        html! {
            h1 { "Uninstall " (p.name) "?" }
            p { "While " (p.name) " is uninstalled for " strong { (m.tenant.slug) } ":" }
            ul {
                li { "its default rules do not run (" (p.workflows.join(", ")) ")," }
                li { "its directive kinds are refused (" (p.directives.join(", ")) ")," }
                li { "its public endpoints refuse this tenant's sites (the chat widget stops answering)." }
            }
            p { "Its data is kept. Installing it again brings everything back." }
            div class="actions" {
                form method="post" action=(format!("{HREF}/{slug}/uninstall")) class="inline" {
                    (csrf_field(&m))
                    button type="submit" class="danger" { "Uninstall " (p.name) }
                }
                a class="button" href=(HREF) { "Keep it installed" }
            }
        },
    ))
}

async fn uninstall(
    State(s): State<AppState>,
    Path(slug): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let m = &f.member;
    m.require_admin()?;
    match installation::uninstall(&s.engine, m.tenant.id, &slug).await {
        Ok(_) => Ok(redirect_with_flash(
            HREF,
            &format!("Package {slug} uninstalled; its data is kept."),
        )),
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(status, render(&s, m, Some(&msg)).await?))
        }
    }
}
