//! The console's page layout, its navigation, redirects and one-time
//! (flash) messages.

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::auth::{Member, csrf_field};

/// One entry of the navigation.
#[derive(Debug, Clone, Copy)]
pub struct NavItem {
    /// Where it leads (a console path).
    pub href: &'static str,
    /// Its label.
    pub label: &'static str,
    /// Shown to admins only (the page itself must still check, with
    /// [`Member::require_admin`]).
    pub admin_only: bool,
    /// The package whose page it is (its slug), if any: the entry is
    /// hidden for a tenant that has uninstalled that package.
    pub package: Option<&'static str>,
}

/// The platform's own navigation entries, in order, after the packages'
/// ([`crate::package::HttpPackage::console_nav`]). A new platform page adds
/// its entry here.
pub const NAV: &[NavItem] = &[
    NavItem {
        href: "/console/directives",
        label: "Directives",
        admin_only: false,
        package: None,
    },
    NavItem {
        href: "/console/rules",
        label: "Rules",
        admin_only: true,
        package: None,
    },
    NavItem {
        href: "/console/destinations",
        label: "Destinations",
        admin_only: true,
        package: None,
    },
    NavItem {
        href: "/console/packages",
        label: "Packages",
        admin_only: true,
        package: None,
    },
    NavItem {
        href: "/console/members",
        label: "Members",
        admin_only: true,
        package: None,
    },
    NavItem {
        href: "/console/tokens",
        label: "API tokens",
        admin_only: false,
        package: None,
    },
];

/// The whole navigation of this application: the packages' entries, then
/// [`NAV`]. Set on the console's requests by [`super::router`], read by
/// the [`Member`] extractor.
#[derive(Debug, Clone)]
pub struct Nav(pub std::sync::Arc<[NavItem]>);

impl Default for Nav {
    fn default() -> Self {
        Self(NAV.into())
    }
}

/// Whether `m` sees the nav entry `item`: its role allows it, and its
/// package (if any) is not uninstalled for the member's tenant.
pub fn shows(m: &Member, item: &NavItem) -> bool {
    (!item.admin_only || m.is_admin())
        && item
            .package
            .is_none_or(|p| !m.uninstalled.iter().any(|u| u == p))
}

/// A full console page for a signed-in member: header with the tenant and
/// the member, the navigation (`active` is the [`NavItem::href`] to mark
/// as the current page), a skip link, the flash message if any, and `body`
/// inside `<main>`. `title` is the document's title.
pub fn page(m: &Member, active: &str, title: &str, body: Markup) -> Markup {
    page_with(Some(m), active, title, body)
}

/// [`page`], also without a member (the sign-in and error pages).
pub fn page_with(m: Option<&Member>, active: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · FleetPrompt console" }
                link rel="stylesheet" href=(super::assets::css_path());
                script defer src=(super::assets::js_path()) {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href="/console" { "FleetPrompt" }
                    @if let Some(m) = m {
                        nav aria-label="Console" {
                            ul {
                                @for item in m.nav.0.iter().filter(|i| shows(m, i)) {
                                    li {
                                        @if item.href == active {
                                            a href=(item.href) aria-current="page" { (item.label) }
                                        } @else {
                                            a href=(item.href) { (item.label) }
                                        }
                                    }
                                }
                            }
                        }
                        div class="who" {
                            span { (m.member.name) " · " (m.member.role) " · " (m.tenant.slug) }
                            form method="post" action="/console/logout" class="inline" {
                                (csrf_field(m))
                                button type="submit" class="link" { "Sign out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if let Some(msg) = m.and_then(|m| m.flash.as_deref()) {
                        p class="flash" role="status" { (msg) }
                    }
                    (body)
                }
            }
        }
    }
}

/// A time, readable, in UTC, with its machine form (`<time datetime>`).
pub fn when(ms: fleetprompt_core::time::Millis) -> Markup {
    let iso = fleetprompt_core::time::to_rfc3339(ms);
    let shown = format!(
        "{} UTC",
        iso.replace('T', " ")
            .split('.')
            .next()
            .unwrap_or_default()
            .trim_end_matches('Z')
    );
    html! { time datetime=(iso) { (shown) } }
}

/// A status as a badge; its colour comes from the class `s-<status>` of
/// the style sheet (open, active, succeeded, done: green; pending,
/// running, closed, disabled: amber; failed, cancelled, error: red).
pub fn badge(status: &str) -> Markup {
    html! { span class={ "badge s-" (status) } { (status) } }
}

/// A `303 See Other` to `to` (a console path).
pub fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// The cookie carrying a flash message to the next page.
const FLASH_COOKIE: &str = "fleetprompt_flash";

/// A one-time message from the previous request, if any (request
/// extension set by [`flash_layer`]).
#[derive(Debug, Clone, Default)]
pub(super) struct FlashMsg(pub Option<String>);

/// A `303` to `to` that shows `msg` once on the next page (after a form
/// post: "Reply queued", "Site registered").
pub fn redirect_with_flash(to: &str, msg: &str) -> Response {
    let mut r = redirect(to);
    r.headers_mut().append(header::SET_COOKIE, flash(msg));
    r
}

/// The `Set-Cookie` of a flash message: shown once by the next page, then
/// cleared. The text is hex-encoded (a cookie takes no spaces), at most
/// 300 bytes.
pub fn flash(msg: &str) -> HeaderValue {
    let mut end = msg.len().min(300);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    HeaderValue::from_str(&format!(
        "{FLASH_COOKIE}={}; Path=/console; HttpOnly; SameSite=Lax; Max-Age=60",
        hex::encode(&msg.as_bytes()[..end])
    ))
    .expect("hex is a valid cookie value")
}

/// Reads the flash cookie into the request, and clears it once a page
/// (a 2xx answer) has shown it.
pub(super) async fn flash_layer(mut req: Request, next: Next) -> Response {
    let msg = req
        .headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == FLASH_COOKIE)
        .and_then(|(_, v)| hex::decode(v).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|s| !s.is_empty());
    let had = msg.is_some();
    req.extensions_mut().insert(FlashMsg(msg));
    let mut resp = next.run(req).await;
    if had && resp.status().is_success() {
        resp.headers_mut().append(
            header::SET_COOKIE,
            HeaderValue::from_static("fleetprompt_flash=; Path=/console; Max-Age=0"),
        );
    }
    resp
}
