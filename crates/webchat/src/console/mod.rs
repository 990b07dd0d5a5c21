//! The website chat's console pages: the inbox, a conversation with its
//! audit timeline and actions, and sites. Built only on the console's `pub`
//! foundation ([`crate::console`]) and the engine's and store's public API,
//! so this folder can move into the website chat package's own crate.
//!
//! # Layout
//! - [`inbox`]: `/console/conversations`, filters, search, unread marks.
//! - [`conversation`]: `/console/conversations/{id}` and its actions.
//! - [`timeline`]: the audit timeline and its causal chain, as HTML.
//! - [`live`]: `/console/live`, the tenant's feed over SSE.
//! - [`sites`]: `/console/sites`: register, edit, snippet, verify.
//! - [`saved_replies`]: `/console/saved-replies`: the team's snippets.

pub mod conversation;
pub mod inbox;
pub mod live;
pub mod saved_replies;
pub mod sites;
pub mod timeline;

use axum::Router;
use fleetprompt_server::console::{ConsoleError, NavItem};

use fleetprompt_server::AppState;
pub use fleetprompt_server::console::{badge, when};

/// The package's entries in the console's navigation.
pub const NAV: &[NavItem] = &[
    NavItem {
        href: "/console/conversations",
        label: "Inbox",
        admin_only: false,
        package: Some(crate::PACKAGE),
    },
    NavItem {
        href: "/console/saved-replies",
        label: "Saved replies",
        admin_only: false,
        package: Some(crate::PACKAGE),
    },
    NavItem {
        href: "/console/sites",
        label: "Sites",
        admin_only: true,
        package: Some(crate::PACKAGE),
    },
];

impl From<crate::WebchatError> for ConsoleError {
    fn from(e: crate::WebchatError) -> Self {
        Self::Api(e.into())
    }
}

/// The website chat's console routes, relative to `/console`. For a tenant
/// that has uninstalled the package they answer 404: its pages go with it.
pub fn router(
    state: &AppState,
    streams: std::sync::Arc<crate::http::widget::stream::Streams>,
) -> Router<AppState> {
    Router::new()
        .merge(inbox::router())
        .merge(conversation::router())
        .merge(live::router(streams))
        .merge(sites::router())
        .merge(saved_replies::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            installed,
        ))
}

/// Lets a request through when the member's tenant has the package (or
/// there is no session yet: the page itself sends a stranger to sign in).
async fn installed(
    axum::extract::State(s): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::extract::FromRequestParts;
    use axum::response::IntoResponse;
    let (mut parts, body) = req.into_parts();
    // The member knows which packages their tenant has uninstalled.
    if let Ok(m) = fleetprompt_server::console::Member::from_request_parts(&mut parts, &s).await
        && m.uninstalled.iter().any(|p| p == crate::PACKAGE)
    {
        return fleetprompt_server::console::ConsoleError::Missing(
            "The website chat package is not installed for this tenant, so its pages are not here. An admin can install it again (POST /admin/v1/installations)."
                .into(),
        )
        .into_response();
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// An email with its local part masked (`a•••@example.com`), for sites
/// whose members may not see who the visitors are.
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}•••@{domain}")
        }
        None => "•••".into(),
    }
}

/// How the console names a visitor: their name, else their email, else
/// "Visitor <short id>"; masked unless the site lets members see them.
pub fn visitor_label(
    name: Option<&str>,
    email: Option<&str>,
    visitor_id: &str,
    show_details: bool,
) -> String {
    let short: String = visitor_id.chars().rev().take(6).collect::<String>();
    let short: String = short.chars().rev().collect();
    match (name, email, show_details) {
        (Some(n), _, true) if !n.trim().is_empty() => n.to_owned(),
        (_, Some(e), true) => e.to_owned(),
        (_, Some(e), false) => mask_email(e),
        _ => format!("Visitor {short}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitors_are_named_and_masked_as_the_site_allows() {
        assert_eq!(
            visitor_label(Some("Ann"), Some("ann@x.test"), "vis_1", true),
            "Ann"
        );
        assert_eq!(
            visitor_label(None, Some("ann@x.test"), "vis_1", true),
            "ann@x.test"
        );
        assert_eq!(
            visitor_label(Some("Ann"), Some("ann@x.test"), "vis_1", false),
            "a•••@x.test"
        );
        assert_eq!(
            visitor_label(None, None, "vis_abcdef123", true),
            "Visitor def123"
        );
    }
}
