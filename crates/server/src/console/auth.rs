//! Who is signed in to the console, and the CSRF checks of its forms.
//!
//! The console uses the same server-side sessions as the admin API (the
//! `fleetprompt_session` cookie); bearer tokens are not accepted here, so
//! nothing a browser holds but the cookie signs a page in. Every
//! state-changing form carries the session's CSRF token in a hidden field
//! (a name starting with `csrf`), checked by [`CsrfForm`]. The sign-in form,
//! before any session exists, uses a signed double-submit cookie instead
//! ([`login_csrf_token`], [`login_csrf_check`]).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use fleetprompt_core::member::Role;
use fleetprompt_core::secret::{csrf_token, ct_eq};
use fleetprompt_engine::Engine;
use fleetprompt_engine::access::{self, Caller, Credential};
use fleetprompt_store::member::MemberRow;
use fleetprompt_store::tenant::Tenant;
use maud::{Markup, html};
use serde::de::DeserializeOwned;

use super::error::ConsoleError;
use super::layout::FlashMsg;
use crate::AppState;
use crate::extract::session_cookie;

/// The name of the CSRF field every console form posts.
pub const CSRF_FIELD: &str = "csrf_token";

/// The cookie holding the sign-in form's nonce (double submit).
pub(super) const LOGIN_COOKIE: &str = "fleetprompt_login";

/// The signed-in member of a console request, resolved from the session
/// cookie against the database (no cache, so a signed-out session or a
/// disabled member is refused at once).
///
/// As an extractor: a request without a valid session is answered `303` to
/// `/console/login?next=<this path>` (so a deep link opens after sign-in).
#[derive(Debug, Clone)]
pub struct Member {
    /// The member's tenant.
    pub tenant: Tenant,
    /// The member.
    pub member: MemberRow,
    /// The session's CSRF token, for [`csrf_field`].
    pub csrf: String,
    /// A one-time message left by the previous request (see
    /// [`flash`](super::flash)), shown by [`page`](super::page).
    pub flash: Option<String>,
    /// The console's navigation (the packages' entries, then the
    /// platform's).
    pub nav: super::layout::Nav,
    /// The packages of the navigation's entries that the tenant has
    /// uninstalled (their entries are hidden, their pages answer 404).
    pub uninstalled: Vec<String>,
    caller: Caller,
    session_id: String,
}

impl Member {
    /// Who is acting, as directives and signals record it (the member, by
    /// id and name).
    pub fn origin(&self) -> fleetprompt_core::Origin {
        self.caller.origin()
    }

    /// The member's role.
    pub fn role(&self) -> Role {
        self.member.role
    }

    /// Whether the member is an admin.
    pub fn is_admin(&self) -> bool {
        self.member.role >= Role::Admin
    }

    /// Refuses an agent with a 403 page: call it first in every admin-only
    /// handler (and hide admin-only controls with [`Member::is_admin`]).
    pub fn require_admin(&self) -> Result<(), ConsoleError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "This page needs the admin role; agents may read and answer conversations only."
                    .into(),
            ))
        }
    }

    /// The session's public id (never its secret).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
}

/// Where to come back to after signing in: this request's path and query,
/// for a GET under the console only.
fn next_of(parts: &Parts) -> String {
    // Inside the nested console router the URI lacks its prefix; the
    // original one has it.
    let uri = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or(&parts.uri, |o| &o.0);
    let pq = uri.path_and_query().map_or("/console", |p| p.as_str());
    if parts.method == axum::http::Method::GET && pq.starts_with(super::PREFIX) {
        pq.to_owned()
    } else {
        super::PREFIX.to_owned()
    }
}

impl FromRequestParts<AppState> for Member {
    type Rejection = ConsoleError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(m) = parts.extensions.get::<Member>() {
            return Ok(m.clone());
        }
        let Some(cookie) = session_cookie(parts) else {
            return Err(ConsoleError::SignIn {
                next: next_of(parts),
            });
        };
        let Some(caller) = access::authenticate_session(&state.engine, cookie).await? else {
            return Err(ConsoleError::SignIn {
                next: next_of(parts),
            });
        };
        let (Credential::Session(session_id), Some(member)) =
            (caller.credential.clone(), caller.member.clone())
        else {
            return Err(ConsoleError::SignIn {
                next: next_of(parts),
            });
        };
        let nav = parts
            .extensions
            .get::<super::layout::Nav>()
            .cloned()
            .unwrap_or_default();
        let mut uninstalled = Vec::new();
        for pkg in nav.0.iter().filter_map(|i| i.package) {
            if !uninstalled.iter().any(|u| u == pkg)
                && state
                    .engine
                    .package_uninstalled(caller.tenant.id, pkg)
                    .await?
            {
                uninstalled.push(pkg.to_owned());
            }
        }
        let m = Member {
            nav,
            uninstalled,
            tenant: caller.tenant.clone(),
            member,
            csrf: access::session_csrf(&state.engine, &session_id),
            flash: parts.extensions.get::<FlashMsg>().and_then(|f| f.0.clone()),
            caller,
            session_id,
        };
        parts.extensions.insert(m.clone());
        Ok(m)
    }
}

/// The hidden field carrying the session's CSRF token: put it in every
/// form that changes something.
pub fn csrf_field(m: &Member) -> Markup {
    html! { input type="hidden" name=(CSRF_FIELD) value=(m.csrf); }
}

/// A form body (`application/x-www-form-urlencoded`) from a signed-in
/// member whose CSRF field was checked before the handler runs.
///
/// A missing or forged CSRF value is a 403 page; a body that is not a form
/// a 400 page; one that does not fit `T` a 422 page. `T` must accept (or
/// ignore) the CSRF field, so it must not use `deny_unknown_fields`.
pub struct CsrfForm<T> {
    /// Who posted it.
    pub member: Member,
    /// The form's fields.
    pub form: T,
}

/// The value of the first field whose name starts with `csrf`.
fn csrf_value(pairs: &[(String, String)]) -> &str {
    pairs
        .iter()
        .find(|(k, _)| k.starts_with("csrf"))
        .map_or("", |(_, v)| v.as_str())
}

/// Parses a form body, refusing text the databases cannot store.
pub(super) fn form_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ConsoleError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| ConsoleError::BadRequest("The form could not be read.".into()))?;
    if let Some((k, _)) = pairs
        .iter()
        .find(|(k, v)| k.contains('\0') || v.contains('\0'))
    {
        return Err(ConsoleError::BadRequest(format!(
            "The field {k:?} contains a NUL character, which is not accepted."
        )));
    }
    Ok(pairs)
}

pub(super) async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ConsoleError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ConsoleError::BadRequest("The form is too large.".into())
        } else {
            ConsoleError::BadRequest("The form could not be read.".into())
        }
    })
}

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = ConsoleError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let member = Member::from_request_parts(&mut parts, state).await?;
        let bytes = body_bytes(Request::from_parts(parts, body), state).await?;
        let pairs = form_pairs(&bytes)?;
        if !ct_eq(csrf_value(&pairs), &member.csrf) {
            return Err(ConsoleError::Csrf);
        }
        let form = serde_urlencoded::from_bytes(&bytes)
            .map_err(|e| ConsoleError::Invalid(format!("The form is not complete: {e}.")))?;
        Ok(Self { member, form })
    }
}

/// The sign-in form's CSRF token for a nonce kept in the browser's
/// [`LOGIN_COOKIE`]: an HMAC of it under the master key, so a page that
/// cannot read or set that cookie (another site) cannot forge the pair.
pub fn login_csrf_token(engine: &Engine, nonce: &str) -> String {
    // "login:" keeps these apart from sessions' tokens (session ids are hex).
    csrf_token(engine.key(), &format!("login:{nonce}"))
}

/// Whether a sign-in form's CSRF value matches the nonce cookie it came with.
pub fn login_csrf_check(engine: &Engine, headers: &HeaderMap, presented: &str) -> bool {
    let nonce = headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == LOGIN_COOKIE)
        .map(|(_, v)| v);
    match nonce {
        Some(n) if n.len() >= 16 => ct_eq(presented, &login_csrf_token(engine, n)),
        _ => false,
    }
}

/// The CSRF value of a parsed sign-in form.
pub(super) fn presented_csrf(pairs: &[(String, String)]) -> &str {
    csrf_value(pairs)
}
