//! `/admin/v1/*`: tenant-scoped by the admin token or session.
//!
//! Every route is added through [`Routes`] and this module's
//! [`routing`] functions (`get`, `post`, …), which build axum's router and,
//! alongside it, the table of every admin route with the role it needs
//! ([`table`]). The role itself is decided in one place, [`required_role`],
//! and enforced in one place, the [`Admin`](crate::extract::Admin)
//! extractor; the system tests walk the table to prove that an agent is
//! refused on every admin-only route.

mod destinations;
mod directives;
mod edge_connectors;
mod installations;
mod members;
mod packages;
mod session;
mod signals;
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

/// What agents may do among the platform's routes; every other admin route
/// needs an admin, including any route not named here or by a package
/// ([`Routes::allow_agents`]). A `*` at the end of a path matches the
/// rest. Agents read the timeline and directives, and manage their own
/// session and tokens (and, through a package, what it lets them: website
/// chat's agents read and answer conversations).
const AGENT_ALLOWED: &[(&str, &str)] = &[
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

/// The role a route of the platform's needs: [`Role::Agent`] for what
/// [`AGENT_ALLOWED`] names, [`Role::Admin`] for everything else. `path` is
/// the route's pattern (`/destinations/{id}`), with or without the
/// [`PREFIX`]. A package's routes may allow agents more
/// ([`AgentAllowed::role`]).
pub fn required_role(method: &Method, path: &str) -> Role {
    AgentAllowed::default().role(method, path)
}

/// What agents may do: the platform's [`AGENT_ALLOWED`] and what the
/// packages' admin routes allow them ([`Routes::allow_agents`]). The admin
/// router carries it as a request extension for the
/// [`Admin`](crate::extract::Admin) extractor.
#[derive(Debug, Clone, Default)]
pub struct AgentAllowed(Vec<(&'static str, &'static str)>);

impl AgentAllowed {
    /// The role a route needs: [`Role::Agent`] for what the platform or a
    /// package allows agents, [`Role::Admin`] for everything else.
    pub fn role(&self, method: &Method, path: &str) -> Role {
        let path = path.strip_prefix(PREFIX).unwrap_or(path);
        let allowed = AGENT_ALLOWED.iter().chain(&self.0).any(|(m, p)| {
            *m == method.as_str()
                && match p.strip_suffix('*') {
                    Some(prefix) => path.starts_with(prefix),
                    None => path == *p,
                }
        });
        if allowed { Role::Agent } else { Role::Admin }
    }
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

/// The admin router under construction, the table of its routes, and
/// what of them agents may call.
#[derive(Default)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<(Method, String)>,
    agents: Vec<(&'static str, &'static str)>,
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

    /// Lets agents call what `allowed` names (method, path pattern; a
    /// `*` at the end matches the rest); every other route needs an admin.
    pub fn allow_agents(mut self, allowed: &[(&'static str, &'static str)]) -> Self {
        self.agents.extend_from_slice(allowed);
        self
    }

    /// Adds every route of `other`.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self.agents.extend(other.agents);
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

fn all(packages: &[std::sync::Arc<dyn crate::package::HttpPackage>]) -> Routes {
    let platform = Routes::new()
        .merge(destinations::router())
        .merge(directives::router())
        .merge(edge_connectors::router())
        .merge(signals::router())
        .merge(timeline::router())
        .merge(installations::router())
        .merge(packages::router())
        .merge(workflows::router())
        .merge(members::router())
        .merge(tokens::router())
        .merge(session::router());
    packages
        .iter()
        .fold(platform, |all, p| all.merge(p.admin_routes()))
}

/// Every admin route, the platform's and `packages`', reading bodies of at
/// most `body_limit` bytes.
pub fn router(
    body_limit: usize,
    packages: &[std::sync::Arc<dyn crate::package::HttpPackage>],
) -> Router<AppState> {
    let all = all(packages);
    all.router
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::Extension(AgentAllowed(all.agents)))
}

/// Every admin route, the platform's and `packages`', with the role it
/// needs, in the order they were added.
pub fn table(packages: &[std::sync::Arc<dyn crate::package::HttpPackage>]) -> Vec<AdminRoute> {
    let all = all(packages);
    let allowed = AgentAllowed(all.agents);
    all.table
        .into_iter()
        .map(|(method, path)| AdminRoute {
            role: allowed.role(&method, &path),
            method: method.to_string(),
            path: format!("{PREFIX}{path}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_an_admin_and_the_timeline_an_agent() {
        let table = table(&[]);
        let role = |m: &str, p: &str| {
            table
                .iter()
                .find(|r| r.method == m && r.path == format!("{PREFIX}{p}"))
                .unwrap_or_else(|| panic!("{m} {p} is not an admin route"))
                .role
        };
        assert_eq!(role("GET", "/timeline"), Role::Agent);
        assert_eq!(role("POST", "/destinations"), Role::Admin);
        assert_eq!(role("POST", "/directives"), Role::Admin);
        assert_eq!(role("POST", "/members"), Role::Admin);
        // An unknown route needs an admin.
        assert_eq!(required_role(&Method::PUT, "/packages/x"), Role::Admin);
        // What a package allows agents is its routes' alone.
        let allowed = AgentAllowed(vec![("POST", "/things/*")]);
        assert_eq!(
            allowed.role(&Method::POST, "/admin/v1/things/{id}/close"),
            Role::Agent
        );
        assert_eq!(allowed.role(&Method::DELETE, "/things/{id}"), Role::Admin);
        assert_eq!(
            required_role(&Method::POST, "/things/{id}/close"),
            Role::Admin
        );
    }
}
