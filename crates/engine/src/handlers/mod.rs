//! The platform's directive handlers.

mod noop;
mod webhook;

pub use noop::Noop;
pub use webhook::WebhookPost;

use crate::HandlerRegistry;
use crate::webchat::assist::ReplyGenerate;
use crate::webchat::email::{EmailSend, EscalateToEmail};
use crate::webchat::escalation::EscalateToMattermost;
use crate::webchat::handlers::{SiteDisable, SiteRegister, SiteRotateSecret};
use crate::webchat::outbound::{ConversationClose, ReplySend};

/// Every handler the platform ships.
pub fn platform() -> HandlerRegistry {
    let mut r = HandlerRegistry::default();
    r.register("noop", Noop);
    r.register("webhook.post", WebhookPost);
    r.register("webchat.site.register", SiteRegister);
    r.register("webchat.site.rotate_secret", SiteRotateSecret);
    r.register("webchat.site.disable", SiteDisable);
    r.register("webchat.escalate_to_mattermost", EscalateToMattermost);
    r.register("webchat.escalate_to_email", EscalateToEmail);
    r.register("webchat.reply_send", ReplySend);
    r.register("webchat.reply_generate", ReplyGenerate);
    r.register("webchat.conversation.close", ConversationClose);
    r.register("email.send", EmailSend);
    r
}

/// Reads a required string argument.
pub(crate) fn str_arg<'a>(
    args: &'a serde_json::Value,
    name: &'static str,
) -> Result<&'a str, crate::EngineError> {
    args.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
        crate::EngineError::Validation(fleetprompt_core::signal::ValidationError::Invalid {
            field: "args",
            reason: format!("`{name}` (a string) is required"),
        })
    })
}
