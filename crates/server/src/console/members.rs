//! `/console/members` (admins): the tenant's people with their role and
//! state; add one (its one-time password or invite link shown once),
//! change a role, disable or enable, reset a password (shown once). The
//! engine calls of `/admin/v1/members`, so each change is on the tenant's
//! audit log with the admin who made it.

use std::collections::HashMap;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use fleetprompt_core::MemberId;
use fleetprompt_core::member::Role;
use fleetprompt_engine::access::{self, FirstSecret};
use fleetprompt_store::member::{MemberPatch, MemberRow};
use maud::{Markup, html};
use serde::Deserialize;

use super::ui::{error_box, fixable, shown_once, when, with_status};
use super::{ConsoleError, CsrfForm, Member, csrf_field, page, redirect_with_flash};
use crate::AppState;
use crate::extract::Path;

const HREF: &str = "/console/members";

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/members", get(list).post(create))
        .route("/members/{id}/role", post(set_role))
        .route("/members/{id}/disable", post(disable))
        .route("/members/{id}/enable", post(enable))
        .route("/members/{id}/reset-password", post(reset_password))
}

fn state_of(m: &MemberRow) -> (&'static str, &'static str) {
    if m.disabled_at.is_some() {
        ("Disabled", "disabled")
    } else if !m.has_password {
        ("Invited", "pending")
    } else {
        ("Active", "active")
    }
}

async fn render(
    s: &AppState,
    me: &Member,
    error: Option<&str>,
    once: Option<Markup>,
) -> Result<Markup, ConsoleError> {
    let members = access::list_members(&s.engine, me.tenant.id).await?;
    Ok(page(
        me,
        HREF,
        "Members",
        html! {
            h1 { "Members" }
            p class="hint" { "Admins may do everything; agents read and answer conversations. A disabled member is signed out at once and cannot sign in." }
            @if let Some(e) = error { (error_box(e)) }
            @if let Some(o) = once { (o) }
            div class="table-wrap" {
                table {
                    caption class="visually-hidden" { "Members" }
                    thead { tr {
                        th scope="col" { "Member" } th scope="col" { "Role" } th scope="col" { "State" }
                        th scope="col" { "Added" } th scope="col" { span class="visually-hidden" { "Actions" } }
                    } }
                    tbody {
                        @for m in &members {
                            @let (label, class) = state_of(m);
                            @let you = m.id == me.member.id;
                            tr id=(format!("member-{}", m.id)) {
                                th scope="row" { (m.name) @if you { " (you)" } br; span class="hint" { (m.email) } }
                                td data-label="Role" {
                                    form method="post" action=(format!("{HREF}/{}/role", m.id)) class="inline-form" {
                                        (csrf_field(me))
                                        label for=(format!("role-{}", m.id)) class="visually-hidden" { "Role of " (m.name) }
                                        select id=(format!("role-{}", m.id)) name="role" {
                                            @for r in ["agent", "admin"] {
                                                option value=(r) selected[m.role.to_string() == r] { (r) }
                                            }
                                        }
                                        button type="submit" { "Change role" span class="visually-hidden" { " of " (m.name) } }
                                    }
                                }
                                td data-label="State" { span class=(format!("badge s-{class}")) { (label) } }
                                td data-label="Added" { (when(m.created_at)) }
                                td class="row-actions" {
                                    @if m.disabled_at.is_some() {
                                        form method="post" action=(format!("{HREF}/{}/enable", m.id)) class="inline" {
                                            (csrf_field(me))
                                            button type="submit" { "Enable" span class="visually-hidden" { " " (m.name) } }
                                        }
                                    } @else if !you {
                                        form method="post" action=(format!("{HREF}/{}/disable", m.id)) class="inline" {
                                            (csrf_field(me))
                                            button type="submit" class="danger" { "Disable" span class="visually-hidden" { " " (m.name) } }
                                        }
                                    }
                                    " "
                                    form method="post" action=(format!("{HREF}/{}/reset-password", m.id)) class="inline" {
                                        (csrf_field(me))
                                        button type="submit" { "Reset password" span class="visually-hidden" { " of " (m.name) } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 id="add-member" { "Add a member" }
            form method="post" action=(HREF) class="stack panel" aria-labelledby="add-member" {
                (csrf_field(me))
                div class="grid2" {
                    div {
                        label for="member-email" { "Email " span class="req" { "(required)" } }
                        input id="member-email" name="email" type="email" required autocomplete="off";
                    }
                    div {
                        label for="member-name" { "Name" }
                        input id="member-name" name="name" type="text" autocomplete="off";
                    }
                    div {
                        label for="member-role" { "Role" }
                        select id="member-role" name="role" {
                            option value="agent" selected { "agent" }
                            option value="admin" { "admin" }
                        }
                    }
                }
                div class="check" {
                    input type="checkbox" id="member-invite" name="invite" value="1" aria-describedby="member-invite-hint";
                    label for="member-invite" { "Send an invite link instead of a password" }
                }
                p class="hint" id="member-invite-hint" { "Either is shown once, here: pass it to the member yourself. An invite link is valid for 7 days and once." }
                button type="submit" class="primary" { "Add member" }
            }
        },
    ))
}

async fn list(State(s): State<AppState>, m: Member) -> Result<Markup, ConsoleError> {
    m.require_admin()?;
    render(&s, &m, None, None).await
}

#[derive(Deserialize)]
struct NewMember {
    email: String,
    #[serde(default)]
    name: String,
    role: String,
    invite: Option<String>,
}

fn parse_role(r: &str) -> Result<Role, ConsoleError> {
    r.parse::<Role>()
        .map_err(|_| ConsoleError::Invalid(format!("{r:?} is not a role: choose admin or agent.")))
}

async fn create(
    State(s): State<AppState>,
    f: CsrfForm<NewMember>,
) -> Result<Response, ConsoleError> {
    let me = &f.member;
    me.require_admin()?;
    let role = parse_role(&f.form.role)?;
    let name = Some(f.form.name.trim()).filter(|n| !n.is_empty());
    let added = access::add_member(
        &s.engine,
        me.tenant.id,
        &f.form.email,
        name,
        role,
        f.form.invite.is_some(),
        &me.origin(),
    )
    .await;
    let once = match added {
        Ok((row, FirstSecret::Password(p))) => shown_once(
            "first-secret",
            &format!("{} added: their one-time password", row.email),
            &p,
            "Shown only now. They sign in at /console/login with it; an admin can reset it later.",
        ),
        Ok((row, FirstSecret::Invite(token))) => shown_once(
            "first-secret",
            &format!("{} added: their invite link", row.email),
            &format!(
                "{}/console/invite#{token}",
                s.engine.public_url().trim_end_matches('/')
            ),
            "Shown only now. It works once, for 7 days; they choose their own password.",
        ),
        Err(e) => {
            let (status, msg) = fixable(e)?;
            return Ok(with_status(status, render(&s, me, Some(&msg), None).await?));
        }
    };
    Ok(with_status(
        StatusCode::OK,
        render(&s, me, None, Some(once)).await?,
    ))
}

fn member_id(id: &str) -> Result<MemberId, ConsoleError> {
    id.parse()
        .map_err(|_| ConsoleError::NotFound("member".into()))
}

/// Applies a patch, then back to the list with `done`, or the list with
/// the reason it was refused.
async fn patch(
    s: &AppState,
    me: &Member,
    id: &str,
    p: MemberPatch,
    done: &str,
) -> Result<Response, ConsoleError> {
    let id = member_id(id)?;
    match access::update_member(&s.engine, me.tenant.id, id, p, &me.origin()).await {
        Ok(row) => Ok(redirect_with_flash(HREF, &format!("{}: {done}", row.name))),
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(status, render(s, me, Some(&msg), None).await?))
        }
    }
}

#[derive(Deserialize)]
struct RoleForm {
    role: String,
}

async fn set_role(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<RoleForm>,
) -> Result<Response, ConsoleError> {
    let me = &f.member;
    me.require_admin()?;
    let role = parse_role(&f.form.role)?;
    let p = MemberPatch {
        role: Some(role),
        ..Default::default()
    };
    patch(&s, me, &id, p, &format!("role is now {role}.")).await
}

async fn disable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let me = &f.member;
    me.require_admin()?;
    let p = MemberPatch {
        disabled: Some(true),
        ..Default::default()
    };
    patch(&s, me, &id, p, "disabled and signed out everywhere.").await
}

async fn enable(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let me = &f.member;
    me.require_admin()?;
    let p = MemberPatch {
        disabled: Some(false),
        ..Default::default()
    };
    patch(&s, me, &id, p, "enabled again.").await
}

async fn reset_password(
    State(s): State<AppState>,
    Path(id): Path<String>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let me = &f.member;
    me.require_admin()?;
    let id = member_id(&id)?;
    match access::reset_password(&s.engine, me.tenant.id, id, &me.origin()).await {
        Ok(p) => {
            let row = access::find_member(&s.engine, me.tenant.id, &id.to_string()).await?;
            let once = shown_once(
                "first-secret",
                &format!("A new password for {}", row.email),
                &p,
                "Shown only now. Their sessions were signed out; the old password no longer works.",
            );
            Ok(with_status(
                StatusCode::OK,
                render(&s, me, None, Some(once)).await?,
            ))
        }
        Err(e) => {
            let (status, msg) = fixable(e)?;
            Ok(with_status(status, render(&s, me, Some(&msg), None).await?))
        }
    }
}
