//! Signing in and out of the console, and the invite link's page.
//!
//! The sign-in and invite forms exist before any session, so their CSRF
//! check is a signed double submit: the page sets a random nonce in an
//! HttpOnly cookie and puts the HMAC of it (under the master key) in the
//! form; a post is accepted only with a matching pair.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetprompt_core::secret::random_token;
use fleetprompt_engine::access::{self, SignInError, SignedIn};
use maud::{Markup, html};

use super::auth::{
    CSRF_FIELD, LOGIN_COOKIE, body_bytes, form_pairs, login_csrf_check, login_csrf_token,
    presented_csrf,
};
use super::{ConsoleError, CsrfForm, page_with, redirect};
use crate::AppState;
use crate::client::ClientAddr;
use crate::error::ApiError;
use crate::extract::{session_cookie, session_set_cookie};

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/invite", get(invite_page).post(invite))
}

/// Where to go after signing in: a console path only (no other site, no
/// `//host` trick), else the console's home.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == super::PREFIX || n.starts_with("/console/") || n.starts_with("/console?"))
                && !n.contains("//")
                && !n.contains('\\')
                && !n.starts_with("/console/login") =>
        {
            n.to_owned()
        }
        _ => super::PREFIX.to_owned(),
    }
}

fn query_map(q: Option<&str>) -> HashMap<String, String> {
    q.and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default()
}

/// The sign-in nonce: the browser's, or a new one to set.
fn nonce(headers: &HeaderMap) -> (String, bool) {
    let found = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == LOGIN_COOKIE && v.len() >= 16)
        .map(|(_, v)| v.to_owned());
    match found {
        Some(n) => (n, false),
        None => (random_token(18), true),
    }
}

/// A page of a pre-session form, with its nonce cookie set when new.
fn form_page(
    s: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    body: impl Fn(&str) -> Markup,
    title: &str,
) -> Response {
    let (n, new) = nonce(headers);
    let token = login_csrf_token(&s.engine, &n);
    let mut resp = (status, page_with(None, "", title, body(&token))).into_response();
    let h = resp.headers_mut();
    if new {
        let secure = if s.engine.public_url().starts_with("https://") {
            "; Secure"
        } else {
            ""
        };
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{LOGIN_COOKIE}={n}; Path=/console; HttpOnly; SameSite=Lax{secure}"
        )) {
            h.append(header::SET_COOKIE, v);
        }
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

struct LoginView<'a> {
    next: &'a str,
    email: &'a str,
    error: Option<String>,
    notice: Option<&'a str>,
    ask_tenant: bool,
}

fn login_form(v: &LoginView<'_>, csrf: &str) -> Markup {
    html! {
        div class="narrow" {
            h1 { "Sign in" }
            @if let Some(n) = v.notice { p class="flash" role="status" { (n) } }
            @if let Some(e) = &v.error { p class="error" role="alert" id="login-error" { (e) } }
            form method="post" action="/console/login" class="stack" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                input type="hidden" name="next" value=(v.next);
                label for="email" { "Email" }
                input id="email" name="email" type="email" autocomplete="username" required autofocus value=(v.email);
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                @if v.ask_tenant {
                    label for="tenant" { "Tenant" }
                    input id="tenant" name="tenant" type="text" required aria-describedby="tenant-help";
                    p id="tenant-help" class="hint" { "This email belongs to several tenants: name the one to sign in to." }
                }
                button type="submit" class="primary" { "Sign in" }
            }
        }
    }
}

async fn login_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    req: Request,
) -> Response {
    let q = query_map(q.as_deref());
    let next = safe_next(q.get("next").map(String::as_str));
    // Already signed in: straight on.
    let (mut parts, _) = req.into_parts();
    if session_cookie(&parts).is_some()
        && <super::Member as axum::extract::FromRequestParts<AppState>>::from_request_parts(
            &mut parts, &s,
        )
        .await
        .is_ok()
    {
        return redirect(&next);
    }
    let notice = q
        .contains_key("signed_out")
        .then_some("You are signed out.");
    let v = LoginView {
        next: &next,
        email: "",
        error: None,
        notice,
        ask_tenant: false,
    };
    form_page(
        &s,
        &headers,
        StatusCode::OK,
        |c| login_form(&v, c),
        "Sign in",
    )
}

fn session_response(s: &AppState, signed: &SignedIn, to: &str) -> Response {
    let max_age = s.engine.config().access.session_max_age.as_secs();
    let mut resp = redirect(to);
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        session_set_cookie(&s.engine, &signed.cookie, max_age),
    );
    h.append(
        header::SET_COOKIE,
        HeaderValue::from_static(crate::extract::LEGACY_SESSION_COOKIE_CLEAR),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn login(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    req: Request,
) -> Result<Response, ConsoleError> {
    let headers = req.headers().clone();
    let pairs = form_pairs(&body_bytes(req, &s).await?)?;
    if !login_csrf_check(&s.engine, &headers, presented_csrf(&pairs)) {
        return Err(ConsoleError::Csrf);
    }
    let f: HashMap<String, String> = pairs.into_iter().collect();
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let next = safe_next(f.get("next").map(String::as_str));
    let tenant = Some(get("tenant").trim()).filter(|t| !t.is_empty());
    let (status, error, ask_tenant) =
        match access::sign_in(&s.engine, tenant, get("email"), get("password"), client).await {
            Ok(signed) => return Ok(session_response(&s, &signed, &next)),
            Err(SignInError::BadCredentials) => (
                StatusCode::UNAUTHORIZED,
                "The email or password is wrong.".to_owned(),
                tenant.is_some(),
            ),
            Err(SignInError::TenantRequired) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "This email belongs to several tenants: name the tenant.".to_owned(),
                true,
            ),
            Err(SignInError::Throttled(secs)) => {
                let v = LoginView {
                    next: &next,
                    email: get("email"),
                    error: Some(format!(
                        "Too many failed sign-ins. Wait {secs} seconds and try again."
                    )),
                    notice: None,
                    ask_tenant: tenant.is_some(),
                };
                let mut r = form_page(
                    &s,
                    &headers,
                    StatusCode::TOO_MANY_REQUESTS,
                    |c| login_form(&v, c),
                    "Sign in",
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, secs.max(1).into());
                return Ok(r);
            }
            Err(SignInError::Engine(e)) => return Err(ApiError::from(e).into()),
        };
    let v = LoginView {
        next: &next,
        email: get("email"),
        error: Some(error),
        notice: None,
        ask_tenant,
    };
    Ok(form_page(
        &s,
        &headers,
        status,
        |c| login_form(&v, c),
        "Sign in",
    ))
}

async fn logout(
    State(s): State<AppState>,
    f: CsrfForm<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    access::sign_out(&s.engine, f.member.session_id()).await?;
    let mut resp = redirect("/console/login?signed_out=1");
    resp.headers_mut()
        .append(header::SET_COOKIE, session_set_cookie(&s.engine, "", 0));
    resp.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(crate::extract::LEGACY_SESSION_COOKIE_CLEAR),
    );
    Ok(resp)
}

fn invite_form(error: Option<&str>, csrf: &str) -> Markup {
    html! {
        div class="narrow" {
            h1 { "Set your password" }
            p { "Welcome to the FleetPrompt console. Choose a password of at least "
                (access::PASSWORD_MIN) " characters; you will be signed in." }
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            form method="post" action="/console/invite" class="stack" id="invite-form" {
                input type="hidden" name=(CSRF_FIELD) value=(csrf);
                label for="invite" { "Invite code" }
                input id="invite" name="invite" type="text" required autocomplete="off"
                    aria-describedby="invite-help";
                p id="invite-help" class="hint" { "Filled in from your invite link; paste it here if it is empty." }
                label for="password" { "New password" }
                input id="password" name="password" type="password" autocomplete="new-password" required minlength=(access::PASSWORD_MIN);
                button type="submit" class="primary" { "Set password and sign in" }
            }
        }
    }
}

async fn invite_page(State(s): State<AppState>, headers: HeaderMap) -> Response {
    form_page(
        &s,
        &headers,
        StatusCode::OK,
        |c| invite_form(None, c),
        "Set your password",
    )
}

async fn invite(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    req: Request,
) -> Result<Response, ConsoleError> {
    let headers = req.headers().clone();
    let pairs = form_pairs(&body_bytes(req, &s).await?)?;
    if !login_csrf_check(&s.engine, &headers, presented_csrf(&pairs)) {
        return Err(ConsoleError::Csrf);
    }
    let f: HashMap<String, String> = pairs.into_iter().collect();
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or("");
    let invite = get("invite").trim().trim_start_matches('#');
    let (status, msg) = match access::redeem_invite(&s.engine, invite, get("password"), client).await
    {
        Ok(signed) => return Ok(session_response(&s, &signed, super::PREFIX)),
        Err(SignInError::BadCredentials) => (
            StatusCode::UNAUTHORIZED,
            "This invite is not valid: it may have been used or have expired. Ask an admin for a new one.".to_owned(),
        ),
        Err(SignInError::Throttled(secs)) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Wait {secs} seconds and try again."),
        ),
        Err(SignInError::TenantRequired) => (StatusCode::UNPROCESSABLE_ENTITY, "Name the tenant.".to_owned()),
        Err(SignInError::Engine(e)) => match ApiError::from(e) {
            ApiError::Unprocessable(_, m) => (StatusCode::UNPROCESSABLE_ENTITY, m),
            other => return Err(other.into()),
        },
    };
    Ok(form_page(
        &s,
        &headers,
        status,
        |c| invite_form(Some(&msg), c),
        "Set your password",
    ))
}
