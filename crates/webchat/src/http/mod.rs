//! Website chat over HTTP: the public widget API (`/v1/widget/*`,
//! `/widget.js`, `/demo`), its admin routes (`/admin/v1/sites…`,
//! `/admin/v1/conversations…`) and the reply emails Edge Connectors report
//! (`/edge/v1/inbound`), added to the server's application through its
//! [`HttpPackage`] hook. Handlers are thin: they authenticate, parse, call
//! the package and shape the answer; [`WebchatError`] becomes the server's
//! [`ApiError`] here, in one place.
//!
//! # Layout
//! - [`widget`]: the public widget API, its CORS, limits, live stream and
//!   assets.
//! - [`sites`]: the sites' admin routes, `/admin/v1/sites…`.
//! - [`conversations`]: the conversations' admin routes,
//!   `/admin/v1/conversations…` (agents may call these).
//! - [`saved_replies`]: the team's saved replies, `/admin/v1/saved-replies…`
//!   (agents may call these).
//! - [`edge`]: the reply emails Edge Connectors report, `/edge/v1/inbound`.

pub mod conversations;
pub mod edge;
pub mod saved_replies;
pub mod sites;
pub mod widget;

use std::sync::Arc;

use axum::Router;
use fleetprompt_server::AppState;
use fleetprompt_server::admin::Routes;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::package::HttpPackage;

use crate::WebchatError;
use widget::stream::Streams;

impl From<WebchatError> for ApiError {
    fn from(e: WebchatError) -> Self {
        use WebchatError as W;
        match e {
            W::Unauthorized(m) => Self::InvalidToken(m),
            W::Forbidden(m) => Self::Forbidden(m),
            W::NotFound(what) => Self::NotFound(what),
            W::TooLarge { .. } => Self::MessageTooLarge(e.to_string()),
            W::RateLimited(secs) => Self::TooManyRequests(secs),
            W::ChallengeRequired => Self::Challenge("challenge_required", e.to_string()),
            W::ChallengeFailed(_) => Self::Challenge("challenge_failed", e.to_string()),
            W::VersionConflict { .. } => Self::Conflict("version_conflict", e.to_string()),
            W::Invalid(v) => v.into(),
            W::Engine(e) => e.into(),
        }
    }
}

/// Website chat's routes, with the live streams this process holds.
pub struct WebchatHttp {
    streams: Arc<Streams>,
}

impl WebchatHttp {
    /// Live streams capped at `per_visitor` (a new one closes the oldest)
    /// and `per_site` (past it new ones are refused).
    pub fn new(per_visitor: usize, per_site: usize) -> Self {
        Self {
            streams: Arc::new(Streams::new(per_visitor, per_site)),
        }
    }
}

impl Default for WebchatHttp {
    /// The default caps ([`widget::stream::STREAMS_PER_VISITOR`],
    /// [`widget::stream::STREAMS_PER_SITE`]).
    fn default() -> Self {
        Self::new(
            widget::stream::STREAMS_PER_VISITOR,
            widget::stream::STREAMS_PER_SITE,
        )
    }
}

/// The package's HTTP side, for the server's application.
pub fn http(per_visitor: usize, per_site: usize) -> Arc<dyn HttpPackage> {
    Arc::new(WebchatHttp::new(per_visitor, per_site))
}

impl HttpPackage for WebchatHttp {
    fn public_routes(&self, state: &AppState) -> Router<AppState> {
        widget::router(state, self.streams.clone())
    }

    fn admin_routes(&self) -> Routes {
        Routes::new()
            .merge(sites::router())
            .merge(conversations::router())
            .merge(saved_replies::router())
    }

    fn edge_routes(&self) -> Router<AppState> {
        edge::router()
    }

    fn console_routes(&self, state: &AppState) -> Router<AppState> {
        crate::console::router(state, self.streams.clone())
    }

    fn console_nav(&self) -> &'static [fleetprompt_server::console::NavItem] {
        crate::console::NAV
    }

    fn on_stop(&self) {
        self.streams.stop_all();
    }

    fn describe_metrics(&self) {
        widget::describe();
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;
    use fleetprompt_core::member::Role;
    use fleetprompt_server::admin::{PREFIX, table};

    use super::*;

    #[test]
    fn settings_need_an_admin_and_conversations_an_agent() {
        let table = table(&[http(3, 10)]);
        let role = |m: &str, p: &str| {
            table
                .iter()
                .find(|r| r.method == m && r.path == format!("{PREFIX}{p}"))
                .unwrap_or_else(|| panic!("{m} {p} is not an admin route"))
                .role
        };
        assert_eq!(role("GET", "/conversations"), Role::Agent);
        assert_eq!(role("POST", "/conversations/{id}/reply"), Role::Agent);
        assert_eq!(role("POST", "/conversations/{id}/close"), Role::Agent);
        assert_eq!(role("POST", "/saved-replies"), Role::Agent);
        assert_eq!(role("DELETE", "/saved-replies/{id}"), Role::Agent);
        assert_eq!(role("GET", "/timeline"), Role::Agent);
        assert_eq!(role("POST", "/sites"), Role::Admin);
        assert_eq!(role("GET", "/sites"), Role::Admin);
        assert_eq!(role("POST", "/destinations"), Role::Admin);
        // The platform alone lets agents at no conversation.
        assert_eq!(
            fleetprompt_server::admin::required_role(
                &Method::POST,
                "/admin/v1/conversations/{id}/close"
            ),
            Role::Admin
        );
    }
}
