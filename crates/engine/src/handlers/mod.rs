//! The platform's directive handlers.

mod noop;
mod webhook;

pub use noop::Noop;
pub use webhook::{WebhookArgs, WebhookPost};

use crate::HandlerRegistry;

/// Every handler the platform ships; packages add theirs
/// ([`crate::package::Package::register`]).
pub fn platform() -> HandlerRegistry {
    let mut r = HandlerRegistry::default();
    r.register("noop", Noop);
    r.register("webhook.post", WebhookPost);
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

    /// Every signal type the engine's code records by name is in
    /// [`RECORDED_SIGNALS`] or among the handlers' result signals (a
    /// package's own sources are checked by its crate, against its
    /// manifest).
    #[test]
    fn every_signal_the_code_records_is_known() {
        let known = signal_types(&platform());
        let found = crate::package::check::recorded_signals_are_known(
            &known,
            std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src")),
        );
        assert!(found >= 1, "found only {found} recorded signal names");
    }

    #[test]
    fn signal_types_join_the_list_and_every_handlers_results() {
        let types = signal_types(&platform());
        for t in ["cron.tick", "member.added", "directive.failed"] {
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
