//! The platform's directive handlers.

mod noop;
mod webhook;

pub use noop::Noop;
pub use webhook::{WebhookArgs, WebhookPost};

use crate::HandlerRegistry;
use crate::webchat::assist::ReplyGenerate;
use crate::webchat::conversation::{ConversationAssign, ConversationReopen};
use crate::webchat::email::{EmailSend, EscalateToEmail};
use crate::webchat::escalation::EscalateToMattermost;
use crate::webchat::handlers::{
    SITE_DISABLE, SITE_ENABLE, SITE_REGISTER, SiteRotateSecret, SiteUpdate,
};
use crate::webchat::outbound::{ConversationClose, ReplySend};

/// Every handler the platform ships.
pub fn platform() -> HandlerRegistry {
    let mut r = HandlerRegistry::default();
    r.register("noop", Noop);
    r.register("webhook.post", WebhookPost);
    r.register("webchat.site.register", SITE_REGISTER);
    r.register("webchat.site.rotate_secret", SiteRotateSecret);
    r.register("webchat.site.disable", SITE_DISABLE);
    r.register("webchat.site.enable", SITE_ENABLE);
    r.register("webchat.site.update", SiteUpdate);
    r.register("webchat.escalate_to_mattermost", EscalateToMattermost);
    r.register("webchat.escalate_to_email", EscalateToEmail);
    r.register("webchat.reply_send", ReplySend);
    r.register("webchat.reply_generate", ReplyGenerate);
    r.register("webchat.conversation.close", ConversationClose);
    r.register("webchat.conversation.reopen", ConversationReopen);
    r.register("webchat.conversation.assign", ConversationAssign);
    r.register("email.send", EmailSend);
    r
}

/// The signal types the platform itself records other than its handlers'
/// result and creation signals (those come from
/// [`HandlerRegistry::signal_types`]); a package's come from its manifest
/// ([`crate::package`]). `workflows check` warns about an `on` or
/// `cancel_on` that matches none of them.
pub const RECORDED_SIGNALS: &[&str] = &[
    "cron.tick",
    // The tenant's audit log ([`crate::audit`]).
    "workflow.published",
    "workflow.deleted",
    "destination.created",
    "destination.updated",
    "destination.deleted",
    "member.added",
    "member.updated",
    "member.disabled",
    "member.enabled",
    "member.password_reset",
    "token.created",
    "token.revoked",
    "tenant.token_rotated",
];

/// Every signal type the platform can record: [`RECORDED_SIGNALS`], the
/// packages' manifests, and the result and creation signals of
/// `registry`'s handlers.
pub fn signal_types(registry: &HandlerRegistry) -> std::collections::BTreeSet<String> {
    RECORDED_SIGNALS
        .iter()
        .copied()
        .chain(crate::package::signal_types())
        .chain(registry.signal_types())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every signal type the engine's code records by name (the first
    /// argument of `NewSignal::new(` or ingest's `signal_of(`, when it is a
    /// string literal) is in [`RECORDED_SIGNALS`], a manifest, or among the handlers'
    /// result signals, so the list cannot silently fall behind the code.
    #[test]
    fn every_signal_the_code_records_is_known() {
        let known = signal_types(&platform());
        let mut pending = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src"
        ))];
        let mut found = 0;
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).expect("engine sources") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    pending.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("source");
                for call in ["NewSignal::new(", "signal_of("] {
                    for (at, _) in text.match_indices(call) {
                        let rest = text[at + call.len()..].trim_start();
                        let Some(literal) = rest.strip_prefix('"') else {
                            continue;
                        };
                        let name = literal.split('"').next().unwrap_or_default();
                        // Not a call at all (this test's own needles).
                        if !name.contains('.') || name.contains(' ') {
                            continue;
                        }
                        found += 1;
                        assert!(
                            known.contains(name),
                            "{} records {name:?}: add it to its package's manifest (or RECORDED_SIGNALS)",
                            path.display()
                        );
                    }
                }
            }
        }
        assert!(found >= 8, "found only {found} recorded signal names");
    }

    #[test]
    fn signal_types_join_the_list_and_every_handlers_results() {
        let types = signal_types(&platform());
        for t in [
            "webchat.session.ended",
            "webchat.escalation.created",
            "webchat.escalation.notified",
            "email.outbound.sent",
            "directive.failed",
        ] {
            assert!(types.contains(t), "{t} missing from {types:?}");
        }
        for t in &types {
            assert!(
                fleetprompt_core::signal::SignalType::parse(t.as_str()).is_ok(),
                "{t}"
            );
        }
    }
}
