//! `/console`: the console's home, a short overview of where to go.

use axum::Router;
use axum::routing::get;
use maud::{Markup, html};

use super::{Member, page};
use crate::AppState;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

async fn home(m: Member) -> Markup {
    page(
        &m,
        "",
        "Home",
        html! {
            h1 { "Welcome, " (m.member.name) }
            p { "You are signed in to " strong { (m.tenant.slug) } " as " (m.member.role) "." }
            ul class="cards" {
                @for item in m.nav.0.iter().filter(|i| super::layout::shows(&m, i)) {
                    li { a href=(item.href) { (item.label) } }
                }
            }
        },
    )
}
