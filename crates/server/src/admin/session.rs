//! `/admin/v1/session` and `/admin/v1/me`: what a browser console needs.
//! Signing in sets an HttpOnly, SameSite=Lax cookie (Secure when the public
//! URL is https) and answers the CSRF token that unsafe requests must
//! carry; signing out revokes the session server-side.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetprompt_engine::access::{self, Credential, SignedIn};
use serde::Deserialize;
use serde_json::{Value, json};

use super::routing::{get, post};
use crate::AppState;
use crate::client::ClientAddr;
use crate::error::ApiError;
use crate::extract::{Admin, ApiJson};

pub(super) fn router() -> super::Routes {
    super::Routes::new()
        .route("/session", post(sign_in).get(who).delete(sign_out))
        .route("/me", get(who))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignInBody {
    email: Option<String>,
    password: String,
    /// The tenant's slug, needed when the email is in several tenants.
    tenant: Option<String>,
    /// An invite token (`fpi_…`) instead of an email: sets `password`.
    invite: Option<String>,
}

fn cookie(s: &AppState, value: &str, max_age: u64) -> HeaderValue {
    crate::extract::session_set_cookie(&s.engine, value, max_age)
}

fn caller_json(admin: &Admin, csrf: Option<String>) -> Value {
    let c = &admin.caller;
    json!({
        "tenant": c.tenant,
        "role": c.role,
        "member": c.member,
        "actor": c.origin().actor(),
        "auth": match c.credential { Credential::Token(_) => "token", Credential::Session(_) => "session" },
        "csrf_token": csrf,
    })
}

async fn sign_in(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    ApiJson(b): ApiJson<SignInBody>,
) -> Result<Response, ApiError> {
    let signed: SignedIn = match (&b.invite, &b.email) {
        (Some(invite), None) => {
            access::redeem_invite(&s.engine, invite, &b.password, client).await?
        }
        (None, Some(email)) => {
            access::sign_in(&s.engine, b.tenant.as_deref(), email, &b.password, client).await?
        }
        _ => {
            return Err(ApiError::Unprocessable(
                "validation_failed",
                "give either email and password, or invite and password".into(),
            ));
        }
    };
    let max_age = s.engine.config().access.session_max_age.as_secs();
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, cookie(&s, &signed.cookie, max_age));
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static(crate::extract::LEGACY_SESSION_COOKIE_CLEAR),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let body = json!({
        "tenant": signed.tenant,
        "member": signed.member,
        "role": signed.member.role,
        "csrf_token": signed.csrf_token,
    });
    Ok((StatusCode::OK, headers, Json(body)).into_response())
}

async fn who(State(s): State<AppState>, admin: Admin) -> Json<Value> {
    let csrf = match &admin.caller.credential {
        Credential::Session(id) => Some(access::session_csrf(&s.engine, id)),
        Credential::Token(_) => None,
    };
    Json(caller_json(&admin, csrf))
}

async fn sign_out(State(s): State<AppState>, admin: Admin) -> Result<Response, ApiError> {
    let Credential::Session(id) = &admin.caller.credential else {
        return Err(ApiError::Unprocessable(
            "not_a_session",
            "this request is authenticated by a token, not a session; revoke tokens with DELETE /admin/v1/tokens/{id}".into(),
        ));
    };
    access::sign_out(&s.engine, id).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, cookie(&s, "", 0));
    headers.append(
        header::SET_COOKIE,
        HeaderValue::from_static(crate::extract::LEGACY_SESSION_COOKIE_CLEAR),
    );
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}
