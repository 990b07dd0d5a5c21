//! Small pieces the platform's pages share: times, a secret shown once,
//! and telling a mistake the member can fix (shown beside the form) from
//! a failure (an error page).

use axum::http::StatusCode;
use fleetprompt_core::time::{Millis, to_rfc3339};
use maud::{Markup, html};

use super::ConsoleError;

/// A time as `2026-12-07 05:44 UTC`, machine-readable in `datetime`.
pub(super) fn when(ms: Millis) -> Markup {
    let text = chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default();
    html! { time datetime=(to_rfc3339(ms)) { (text) } }
}

/// [`when`], or a dash.
pub(super) fn when_opt(ms: Option<Millis>, none: &str) -> Markup {
    match ms {
        Some(ms) => when(ms),
        None => html! { span class="hint" { (none) } },
    }
}

/// A secret shown once, with a copy button (`console.js`, `data-copy`):
/// never stored in a cookie or a link, only in this one answer.
pub(super) fn shown_once(id: &str, heading: &str, value: &str, note: &str) -> Markup {
    html! {
        section class="panel once" aria-labelledby=(format!("{id}-h")) {
            h2 id=(format!("{id}-h")) { (heading) }
            p { (note) }
            p class="secret-line" {
                code id=(id) { (value) }
                " "
                button type="button" data-copy=(id) { "Copy" }
                span id=(format!("{id}-status")) role="status" class="hint" {}
            }
        }
    }
}

/// An error the member can act on, as a box above the form.
pub(super) fn error_box(msg: &str) -> Markup {
    html! { p class="error" role="alert" { (msg) } }
}

/// Splits a failed call: a mistake in what was sent (400, 404, 409, 422)
/// becomes its status and message in plain words, shown on the page
/// again; anything else (forbidden, CSRF, a server fault) stays an error
/// page.
pub(super) fn fixable(e: impl Into<ConsoleError>) -> Result<(StatusCode, String), ConsoleError> {
    let e = e.into();
    let status = e.status();
    match status {
        StatusCode::BAD_REQUEST
        | StatusCode::NOT_FOUND
        | StatusCode::CONFLICT
        | StatusCode::UNPROCESSABLE_ENTITY => Ok((status, e.message())),
        _ => Err(e),
    }
}

/// A page answered with a status (a form shown again with its error).
pub(super) fn with_status(status: StatusCode, body: Markup) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, body).into_response()
}
