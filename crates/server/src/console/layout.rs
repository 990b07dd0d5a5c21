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
}

/// The navigation, in order. A new page adds its entry here.
pub const NAV: &[NavItem] = &[
    NavItem {
        href: "/console/conversations",
        label: "Inbox",
        admin_only: false,
    },
    NavItem {
        href: "/console/sites",
        label: "Sites",
        admin_only: true,
    },
    // The platform's pages.
    NavItem {
        href: "/console/directives",
        label: "Directives",
        admin_only: false,
    },
    NavItem {
        href: "/console/rules",
        label: "Rules",
        admin_only: true,
    },
    NavItem {
        href: "/console/destinations",
        label: "Destinations",
        admin_only: true,
    },
    NavItem {
        href: "/console/packages",
        label: "Packages",
        admin_only: true,
    },
    NavItem {
        href: "/console/members",
        label: "Members",
        admin_only: true,
    },
    NavItem {
        href: "/console/tokens",
        label: "API tokens",
        admin_only: false,
    },
];

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
                                @for item in NAV.iter().filter(|i| !i.admin_only || m.is_admin()) {
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
