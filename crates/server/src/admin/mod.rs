//! `/admin/v1/*`: tenant-scoped by the admin token or session.
//!
//! Every route is added through [`Routes`] and this module's
//! [`routing`] functions (`get`, `post`, …), which build axum's router and,
//! alongside it, the table of every admin route with the role it needs
//! ([`table`]). The role itself is decided in one place, [`required_role`],
//! and enforced in one place, the [`Admin`](crate::extract::Admin)
//! extractor; the system tests walk the table to prove that an agent is
//! refused on every admin-only route.

mod conversations;
mod destinations;
mod directives;
mod edge_connectors;
mod installations;
mod members;
mod packages;
mod session;
mod signals;
mod sites;
mod timeline;
mod tokens;
mod workflows;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use fleetprompt_core::member::Role;
use serde::Serialize;

use crate::AppState;

/// Largest admin request body by default; a larger one is answered with a
/// JSON 413.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// Where the admin routes are mounted.
pub const PREFIX: &str = "/admin/v1";

/// What agents may do; every other admin route needs an admin, including
/// any route not named here. A `*` at the end of a path matches the rest.
/// Agents read and answer conversations (every `POST` under a
/// conversation: reply, drafts, escalate, close, reopen, assign), read the
/// timeline and directives, and manage their own session and tokens.
const AGENT_ALLOWED: &[(&str, &str)] = &[
    ("GET", "/conversations"),
    ("GET", "/conversations/*"),
    ("POST", "/conversations/*"),
    ("GET", "/timeline"),
    ("GET", "/directives"),
    ("GET", "/directives/{id}"),
    ("GET", "/signals*"),
    ("GET", "/session"),
    ("POST", "/session"),
    ("DELETE", "/session"),
    ("GET", "/me"),
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("DELETE", "/tokens/{id}"),
];

/// The role a route needs: [`Role::Agent`] for what [`AGENT_ALLOWED`]
/// names, [`Role::Admin`] for everything else. `path` is the route's
/// pattern (`/sites/{id}`), with or without the [`PREFIX`].
pub fn required_role(method: &Method, path: &str) -> Role {
    let path = path.strip_prefix(PREFIX).unwrap_or(path);
    let allowed = AGENT_ALLOWED.iter().any(|(m, p)| {
        *m == method.as_str()
            && match p.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix),
                None => path == *p,
            }
    });
    if allowed { Role::Agent } else { Role::Admin }
}

/// One admin route and the role it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminRoute {
    /// Its method.
    pub method: String,
    /// Its pattern, with the [`PREFIX`] (`/admin/v1/sites/{id}`).
    pub path: String,
    /// The least role that may call it.
    pub role: Role,
}

/// The admin router under construction, and the table of its routes.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, String)>,
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the handlers of `methods` at `path`, as axum's `Router::route`.
    pub fn route(mut self, path: &str, methods: routing::Methods) -> Self {
        for m in &methods.methods {
            self.table.push((m.clone(), path.to_owned()));
        }
        self.router = self.router.route(path, methods.inner);
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }
}

/// `get`, `post`, `put`, `patch` and `delete` as axum's, that also say
/// which methods they add, for [`Routes`]' table.
pub mod routing {
    use axum::handler::Handler;
    use axum::http::Method;
    use axum::routing::MethodRouter;

    use crate::AppState;

    /// Handlers by method for one path.
    pub struct Methods {
        pub(super) inner: MethodRouter<AppState>,
        pub(super) methods: Vec<Method>,
    }

    macro_rules! method {
        ($name:ident, $method:ident) => {
            #[doc = concat!("A `", stringify!($method), "` handler.")]
            pub fn $name<H, T>(handler: H) -> Methods
            where
                H: Handler<T, AppState>,
                T: 'static,
            {
                Methods {
                    inner: axum::routing::$name(handler),
                    methods: vec![Method::$method],
                }
            }

            impl Methods {
                #[doc = concat!("Adds a `", stringify!($method), "` handler.")]
                pub fn $name<H, T>(mut self, handler: H) -> Self
                where
                    H: Handler<T, AppState>,
                    T: 'static,
                {
                    self.inner = self.inner.$name(handler);
                    self.methods.push(Method::$method);
                    self
                }
            }
        };
    }

    method!(get, GET);
    method!(post, POST);
    method!(put, PUT);
    method!(patch, PATCH);
    method!(delete, DELETE);
}

fn all() -> Routes {
    Routes::new()
        .merge(destinations::router())
        .merge(directives::router())
        .merge(edge_connectors::router())
        .merge(signals::router())
        .merge(timeline::router())
        .merge(installations::router())
        .merge(packages::router())
        .merge(sites::router())
        .merge(conversations::router())
        .merge(workflows::router())
        .merge(members::router())
        .merge(tokens::router())
        .merge(session::router())
}

/// Every admin route, reading bodies of at most `body_limit` bytes.
pub fn router(body_limit: usize) -> Router<AppState> {
    all().router.layer(DefaultBodyLimit::max(body_limit))
}

/// Every admin route with the role it needs, in the order they were added.
pub fn table() -> Vec<AdminRoute> {
    all()
        .table
        .into_iter()
        .map(|(method, path)| AdminRoute {
            role: required_role(&method, &path),
            method: method.to_string(),
            path: format!("{PREFIX}{path}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_an_admin_and_conversations_an_agent() {
        let table = table();
        let role = |m: &str, p: &str| {
            table
                .iter()
                .find(|r| r.method == m && r.path == format!("{PREFIX}{p}"))
                .unwrap_or_else(|| panic!("{m} {p} is not an admin route"))
                .role
        };
        assert_eq!(role("GET", "/conversations"), Role::Agent);
        assert_eq!(role("POST", "/conversations/{id}/reply"), Role::Agent);
        assert_eq!(role("GET", "/timeline"), Role::Agent);
        assert_eq!(role("POST", "/sites"), Role::Admin);
        assert_eq!(role("GET", "/sites"), Role::Admin);
        assert_eq!(role("POST", "/destinations"), Role::Admin);
        assert_eq!(role("POST", "/directives"), Role::Admin);
        assert_eq!(role("POST", "/members"), Role::Admin);
        // An unknown route needs an admin.
        assert_eq!(required_role(&Method::PUT, "/packages/x"), Role::Admin);
        assert_eq!(
            required_role(&Method::POST, "/admin/v1/conversations/{id}/close"),
            Role::Agent
        );
    }
}
