//! Request extractors whose failures are JSON errors, and admin and
//! connector authentication.
//!
//! Every handler takes its query, path and body through [`Query`], [`Path`]
//! and [`ApiJson`], so that every extraction failure is an [`ApiError`]
//! (400 `bad_request`, 413, 422) and never axum's `text/plain` answer. The
//! same extractors refuse text the databases cannot store (a NUL character:
//! PostgreSQL `text` and `jsonb` cannot hold `\u0000`) with 400
//! `invalid_text` naming the field, before any handler runs, so no route
//! can reach a write with it.

use axum::extract::MatchedPath;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use fleetprompt_core::member::Role;
use fleetprompt_core::secret::ct_eq;
use fleetprompt_engine::access::{self, Caller, Credential};
use fleetprompt_store::edge::EdgeConnector;
use fleetprompt_store::tenant::Tenant;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::AppState;
use crate::error::ApiError;

/// A JSON body; a bad one is answered with a JSON 400/413/422, and one with
/// a NUL character in any string (or key) with 400 `invalid_text`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Through a `Value` first, so the text check sees every string,
        // including those of fields the target type keeps as raw JSON.
        let axum::Json(value) = axum::Json::<Value>::from_request(req, state)
            .await
            .map_err(ApiError::from)?;
        if let Some(at) = nul_in(&value, "") {
            return Err(ApiError::InvalidText(at));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| ApiError::Unprocessable("validation_failed", e.to_string()))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e {
            JsonRejection::JsonDataError(e) => {
                Self::Unprocessable("validation_failed", e.body_text())
            }
            JsonRejection::BytesRejection(e)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Self::TooLarge
            }
            e => Self::BadRequest(e.body_text()),
        }
    }
}

/// An optional JSON body: none (or only whitespace) is `None`; a present
/// one is judged like [`ApiJson`]'s.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if let Some(at) = nul_in(&value, "") {
            return Err(ApiError::InvalidText(at));
        }
        serde_json::from_value(value)
            .map(|v| Self(Some(v)))
            .map_err(|e| ApiError::Unprocessable("validation_failed", e.to_string()))
    }
}

/// A text body (a rule file): `Content-Type` `text/plain` or
/// `application/toml` (or none), UTF-8, without NUL; at most the admin
/// body limit (else 413); any other body is a 400 `bad_request`.
pub struct TextBody(pub String);

impl<S: Send + Sync> FromRequest<S> for TextBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let kind = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            });
        if let Some(kind) = kind
            && !matches!(kind.as_str(), "text/plain" | "application/toml")
        {
            return Err(ApiError::BadRequest(format!(
                "the body must be text/plain or application/toml, not {kind}"
            )));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::TooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        let text = String::from_utf8(body.to_vec())
            .map_err(|_| ApiError::BadRequest("the body is not valid UTF-8".into()))?;
        if text.contains('\0') {
            return Err(ApiError::InvalidText("the body".into()));
        }
        Ok(Self(text))
    }
}

/// The path (`$.a.b[2]`) of the first string or key holding a NUL, if any.
fn nul_in(v: &Value, at: &str) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(format!("${at}")),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, x)| nul_in(x, &format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, x)| {
            if k.contains('\0') {
                Some(format!("${at} (a key)"))
            } else {
                nul_in(x, &format!("{at}.{k}"))
            }
        }),
        _ => None,
    }
}

/// Whether percent-encoded `raw` (a path or query string) decodes to a NUL.
fn encodes_nul(raw: &str) -> bool {
    raw.as_bytes().windows(3).any(|w| w == b"%00")
}

/// A query string; a bad one is answered with a JSON 400 `bad_request`, one
/// holding an encoded NUL with 400 `invalid_text`.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(encodes_nul) {
            return Err(ApiError::InvalidText("the query string".into()));
        }
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(v))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

/// Path parameters; bad ones (e.g. not UTF-8) are answered with a JSON 400
/// `bad_request`, an encoded NUL with 400 `invalid_text`.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if encodes_nul(parts.uri.path()) {
            return Err(ApiError::InvalidText("the path".into()));
        }
        let axum::extract::Path(v) = axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map_err(ApiError::from)?;
        Ok(Self(v))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::BadRequest(e.body_text())
    }
}

/// Who calls an admin route: the tenant, role and member resolved from a
/// bearer admin token (`Authorization: Bearer fpa_…`) or a session cookie,
/// never from the request's own claims.
///
/// This is the one place roles are enforced: the route's pattern is looked
/// up in [`admin::required_role`](crate::admin::required_role), and a caller
/// with a lesser role is refused with 403 `forbidden` before the handler
/// runs. A cookie-authenticated request with an unsafe method must carry
/// the session's CSRF token in `X-CSRF-Token`; a bearer token needs none
/// (a browser never sends one by itself).
pub struct Admin {
    /// The authenticated tenant.
    pub tenant: Tenant,
    /// Everything known about the caller.
    pub caller: Caller,
}

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fleetprompt_session";

/// Where the session cookie is sent: the whole origin, so that the admin
/// API (`/admin/v1`) and the console (`/console`) both receive it.
pub const SESSION_COOKIE_PATH: &str = "/";

/// The `Set-Cookie` value of a session: HttpOnly, SameSite=Lax, and Secure
/// when the public URL is https. `max_age` 0 with an empty value clears it.
pub fn session_set_cookie(
    engine: &fleetprompt_engine::Engine,
    value: &str,
    max_age: u64,
) -> axum::http::HeaderValue {
    let secure = if engine.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let c = format!(
        "{SESSION_COOKIE}={value}; Path={SESSION_COOKIE_PATH}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    );
    axum::http::HeaderValue::from_str(&c).expect("a cookie of URL-safe characters")
}

/// Clears a session cookie of an earlier release, which was set with
/// `Path=/admin`: a browser would send it before the current one on admin
/// routes. Sent beside every sign-in and sign-out.
pub const LEGACY_SESSION_COOKIE_CLEAR: &str =
    "fleetprompt_session=; Path=/admin; HttpOnly; SameSite=Lax; Max-Age=0";

/// The header that carries a session's CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

impl Admin {
    /// Who is acting, as directives and signals record it: the one place
    /// that turns the caller into an audit-trail origin (a member, with
    /// their name, or the tenant's own token).
    pub fn origin(&self) -> fleetprompt_core::directive::Origin {
        self.caller.origin()
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        self.caller.role
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = if let Some(token) = bearer(parts) {
            access::authenticate_token(&state.engine, token)
                .await?
                .ok_or(ApiError::Unauthorized)?
        } else if let Some(cookie) = session_cookie(parts) {
            let caller = access::authenticate_session(&state.engine, cookie)
                .await?
                .ok_or(ApiError::Unauthorized)?;
            if !parts.method.is_safe() {
                let Credential::Session(id) = &caller.credential else {
                    return Err(ApiError::Unauthorized);
                };
                let presented = parts
                    .headers
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !ct_eq(presented, &access::session_csrf(&state.engine, id)) {
                    return Err(ApiError::Csrf);
                }
            }
            caller
        } else {
            return Err(ApiError::Unauthorized);
        };
        // No matched path means no route of the table: admin only.
        let allowed = parts.extensions.get::<crate::admin::AgentAllowed>();
        let needed = parts
            .extensions
            .get::<MatchedPath>()
            .map_or(Role::Admin, |p| match allowed {
                Some(a) => a.role(&parts.method, p.as_str()),
                None => crate::admin::required_role(&parts.method, p.as_str()),
            });
        if caller.role < needed {
            return Err(ApiError::Forbidden(format!(
                "this needs the {needed} role; {} members may read and answer conversations only",
                caller.role
            )));
        }
        Ok(Self {
            tenant: caller.tenant.clone(),
            caller,
        })
    }
}

/// The session cookie's value, if the request has one.
pub fn session_cookie(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
}

/// The Edge Connector a connector token belongs to; its tenant comes only
/// from the connector's server-side record. The token is never logged.
pub struct Edge(pub EdgeConnector);

impl FromRequestParts<AppState> for Edge {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError::EdgeUnauthorized)?;
        fleetprompt_engine::edge::authenticate(&state.engine, token)
            .await?
            .map(Self)
            .ok_or(ApiError::EdgeUnauthorized)
    }
}
