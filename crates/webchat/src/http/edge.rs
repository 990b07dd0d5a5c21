//! `/edge/v1/inbound`: a reply email an Edge Connector found in its
//! mailbox, for the conversation the answered email was about. The tenant
//! is the connector's, never the request's.

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use fleetprompt_server::AppState;
use fleetprompt_server::error::ApiError;
use fleetprompt_server::extract::{ApiJson, Edge};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::email::{InboundEmail, InboundOutcome, receive_reply};

/// The package's edge routes.
pub(super) fn router() -> axum::Router<AppState> {
    axum::Router::new().route("/inbound", post(inbound))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboundBody {
    /// The reply's `Message-ID`: the same email reported twice is one.
    message_id: String,
    /// The ids it answers (`dir_…` of our `Message-ID`s, `conv_…` of our
    /// thread ids), from its `In-Reply-To` and `References`.
    references: Vec<String>,
    /// The sender's address.
    from: String,
    /// The reply's own words (quotes and signature stripped).
    text: String,
}

/// A reply email the connector found in its mailbox. The tenant is the
/// connector's; the conversation is the one the answered email is about.
async fn inbound(
    State(s): State<AppState>,
    Edge(connector): Edge,
    ApiJson(b): ApiJson<InboundBody>,
) -> Result<Json<Value>, ApiError> {
    let outcome = receive_reply(
        &s.engine,
        &connector,
        InboundEmail {
            message_id: b.message_id,
            references: b.references,
            from: b.from,
            text: b.text,
        },
    )
    .await?;
    Ok(Json(match outcome {
        InboundOutcome::Recorded {
            conversation,
            known_sender,
            duplicate,
        } => json!({
            "recorded": true,
            "conversation_id": conversation,
            "known_sender": known_sender,
            "duplicate": duplicate,
        }),
        InboundOutcome::Ignored(reason) => json!({ "recorded": false, "reason": reason }),
    }))
}
