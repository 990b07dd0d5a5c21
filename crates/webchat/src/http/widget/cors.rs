//! CORS for the widget API: granted only to the origins a site allows.

use crate::session::{origin_allowed, site_by_key};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;

fn site_key(req: &Request) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "site_key").then(|| v.to_owned())
    })
}

/// Whether `origin` may read answers about the site with key `key`.
async fn granted(
    state: &AppState,
    origin: Option<HeaderValue>,
    key: Option<String>,
) -> Option<HeaderValue> {
    let (origin, key) = (origin?, key?);
    let site = site_by_key(&state.engine, &key).await.ok()?;
    (site.status == "active" && origin_allowed(&site, origin.to_str().ok()?)).then_some(origin)
}

/// Answers preflights and adds CORS headers to allowed origins' answers.
pub(super) async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Read before awaiting: a request is not `Sync`, so no borrow of it may
    // be held across an await.
    let origin = req.headers().get(header::ORIGIN).cloned();
    let key = site_key(&req);
    let grant = granted(&state, origin, key).await;
    let mut resp = if req.method() == Method::OPTIONS {
        if grant.is_some() {
            let mut r = StatusCode::NO_CONTENT.into_response();
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization, content-type"),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        } else {
            super::rejected("origin");
            ApiError::Forbidden("this origin may not use this widget".into()).into_response()
        }
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = grant {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
    }
    resp
}
