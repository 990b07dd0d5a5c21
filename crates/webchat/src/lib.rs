//! The `website_chat` package: sites and their signed widget tokens,
//! message ingestion, live replies, escalation, email and the assistant,
//! behind the engine's [`Package`] trait ([`package`] is what the binary
//! passes to the engine).
//!
//! Every write that changes conversation state records its signals in the
//! same transaction (the one invariant). The tenant and site of a widget
//! request come only from the site record behind the public key or the
//! token, never from the request body.
//!
//! # Layout
//! - `package.toml` (beside `src/`): the manifest, read by the engine at
//!   start ([`fleetprompt_engine::package`]).
//! - [`types`]: the pure parts: its ids ([`types::id`]), widget tokens,
//!   origin allowlists, proof of work, spam scoring, visitor data reduction
//!   (no I/O).
//! - [`store`]: the package's tables, its ids' column type and its part of
//!   `fleetprompt prune` (the only module here that names sqlx), on the
//!   store's package API ([`fleetprompt_store::package`]).
//! - This file: [`Webchat`] (the package's state: its site cache and
//!   ingest queue), [`package`] and the package's metrics.
//! - [`http`]: its routes (public widget API, admin routes, edge inbound)
//!   through the server's package hook.
//! - [`error`]: this package's error enum.
//! - [`settings`]: a site's widget settings, with defaults and limits.
//! - [`site`]: what installing the package sets up (the IP-hash key);
//!   registering, editing, rotating, disabling and enabling sites (as
//!   directives, so they appear in the audit timeline).
//! - [`handlers`]: the `webchat.site.*` directive handlers.
//! - [`site_cache`]: site records as widget requests read them.
//! - [`session`]: bootstrap (site key + origin -> token) and token checks.
//! - [`ingest`]: visitor messages, contact capture, closing, history.
//! - [`spam`]: the spam score of a visitor message (links, repetition).
//! - [`reply`]: replies to the visitor (operator or approved assistant).
//! - [`escalation`]: `webchat.escalate_to_mattermost`, and what every
//!   notification shares (summary, contact, deep link).
//! - [`email`]: `webchat.escalate_to_email`, `email.send` (an Edge Connector
//!   delivers it) and replies that come back by email.
//! - [`outbound`]: `webchat.reply_send`, `webchat.conversation.close`.
//! - [`conversation`]: an operator's actions on a conversation (escalate,
//!   close, reopen, assign) and the `reopen`/`assign` handlers.
//! - [`assist`]: `webchat.reply_generate` (LLM, or BM25 over the FAQ).
//! - [`live`]: the in-process broadcast that feeds the widget's event stream.
//! - [`sweep`]: ends idle conversations.
//! - [`verify`]: installation verification (a test message end to end).
//! - [`demo`]: the demo tenant and site of the embedded setup.

pub mod assist;
pub mod console;
pub mod conversation;
pub mod demo;
pub mod email;
pub mod error;
pub mod escalation;
pub mod handlers;
pub mod http;
pub mod ingest;
pub mod live;
pub mod outbound;
pub mod reply;
pub mod saved_reply;
pub mod session;
pub mod settings;
pub mod site;
pub mod site_cache;
pub mod spam;
pub mod store;
pub mod sweep;
pub mod types;
pub mod verify;

use std::any::Any;
use std::sync::{Arc, OnceLock};

use fleetprompt_core::TenantId;
use fleetprompt_engine::package::Package;
use fleetprompt_engine::{Engine, EngineError, HandlerRegistry};
use fleetprompt_store::Tx;
use futures::FutureExt;
use futures::future::BoxFuture;
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};

pub use error::WebchatError;

/// The package's slug in installations (its manifest's `slug`).
pub const PACKAGE: &str = "website_chat";

/// `conversation:<id>`: the subject of every conversation signal.
pub fn conversation_subject(id: crate::types::id::ConversationId) -> String {
    format!("conversation:{id}")
}

/// `site:<id>`: the subject of site administration directives.
pub fn site_subject(id: crate::types::id::SiteId) -> String {
    format!("site:{id}")
}

/// Records signals that were inserted in a committed transaction.
pub(crate) fn count_signals(types: &[&str]) {
    for t in types {
        fleetprompt_engine::metrics::signal_recorded(t);
    }
}

/// The manifest, as embedded.
pub const MANIFEST: &str = include_str!("../package.toml");

/// The default rules as shipped (deployed to the workflows directory).
pub const DEFAULT_RULES: &[(&str, &str)] = &[(
    "website_chat.toml",
    include_str!("../../../workflows/website_chat.toml"),
)];

/// Visitor messages written per ingest transaction.
pub const INGEST_BATCH: &str = "fleetprompt_webchat_ingest_batch_size";
/// Ingest batches that failed and were written message by message.
pub const INGEST_FALLBACKS: &str = "fleetprompt_webchat_ingest_batch_fallbacks_total";

pub(crate) fn ingest_batch(n: usize) {
    histogram!(INGEST_BATCH).record(n as f64);
}

pub(crate) fn ingest_fallback() {
    counter!(INGEST_FALLBACKS).increment(1);
}

/// The package's state: what its handlers and routes share in a process.
#[derive(Default)]
pub struct Webchat {
    /// Sites as widget requests read them.
    sites: site_cache::SiteCache,
    /// The group-commit queue of visitor messages, started on first use.
    ingest: OnceLock<ingest::IngestQueue>,
}

impl Webchat {
    /// The package's state in `engine` (given at start by [`package`]).
    ///
    /// # Panics
    /// When the engine was built without this package: a bug of the
    /// binary, which passes its packages once.
    pub fn of(engine: &Engine) -> Arc<Self> {
        engine
            .package_state::<Self>()
            .expect("the engine runs the website chat package")
    }

    /// Sites as widget requests read them.
    pub(crate) fn site_cache(&self) -> &site_cache::SiteCache {
        &self.sites
    }

    /// The visitor message queue, whose batches commit together.
    pub(crate) fn ingest_queue(&self, engine: &Engine) -> &ingest::IngestQueue {
        self.ingest
            .get_or_init(|| ingest::IngestQueue::start(engine.handle(), engine.db().backend()))
    }
}

/// The package, for [`Engine::new`].
pub fn package() -> Arc<dyn Package> {
    Arc::new(WebsiteChat {
        state: Arc::default(),
    })
}

/// Website chat as the engine sees it.
struct WebsiteChat {
    state: Arc<Webchat>,
}

impl Package for WebsiteChat {
    fn manifest(&self) -> &'static str {
        MANIFEST
    }

    fn growing_tables(&self) -> &'static [&'static str] {
        // Identities and read marks are joined to every inbox row: planned
        // on a table that had no statistics yet, PostgreSQL hashed all of
        // a tenant's visitors for a page of fifty.
        &[
            "website_chat_conversations",
            "website_chat_messages",
            "website_chat_identities",
            "website_chat_reads",
        ]
    }

    fn retention(&self) -> Option<&'static dyn fleetprompt_store::retention::PackageRetention> {
        Some(&store::retention::RETENTION)
    }

    fn register(&self, r: &mut HandlerRegistry) {
        use assist::ReplyGenerate;
        use conversation::{ConversationAssign, ConversationReopen};
        use email::{EmailSend, EscalateToEmail};
        use escalation::EscalateToMattermost;
        use handlers::{SITE_DISABLE, SITE_ENABLE, SITE_REGISTER, SiteRotateSecret, SiteUpdate};
        use outbound::{ConversationClose, ReplySend};
        let state = &self.state;
        r.register("webchat.site.register", SITE_REGISTER);
        r.register("webchat.site.rotate_secret", SiteRotateSecret);
        r.register("webchat.site.disable", SITE_DISABLE);
        r.register("webchat.site.enable", SITE_ENABLE);
        r.register("webchat.site.update", SiteUpdate);
        r.register(
            "webchat.escalate_to_mattermost",
            EscalateToMattermost(state.clone()),
        );
        r.register("webchat.escalate_to_email", EscalateToEmail(state.clone()));
        r.register("webchat.reply_send", ReplySend);
        r.register("webchat.reply_generate", ReplyGenerate);
        r.register("webchat.conversation.close", ConversationClose);
        r.register("webchat.conversation.reopen", ConversationReopen);
        r.register("webchat.conversation.assign", ConversationAssign);
        r.register("email.send", EmailSend);
    }

    fn state(&self) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(self.state.clone())
    }

    fn on_install<'a>(
        &'a self,
        engine: &'a Engine,
        tx: &'a mut Tx,
        tenant: TenantId,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        site::on_install(engine, tx, tenant).boxed()
    }

    fn default_rules(&self) -> &'static [(&'static str, &'static str)] {
        DEFAULT_RULES
    }

    fn describe_metrics(&self) {
        describe_histogram!(
            INGEST_BATCH,
            Unit::Count,
            "Visitor messages written per ingest transaction (group commit)."
        );
        describe_counter!(
            INGEST_FALLBACKS,
            Unit::Count,
            "Ingest batches that failed as a whole and were written message by message."
        );
        counter!(INGEST_FALLBACKS).absolute(0);
        let _ = histogram!(INGEST_BATCH);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use fleetprompt_engine::handler::parse_args;
    use fleetprompt_engine::package::{Category, FieldType, Manifest, PayloadField, check};
    use serde::de::DeserializeOwned;
    use serde_json::{Value, json};

    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST).expect("the manifest parses")
    }

    fn registry() -> HandlerRegistry {
        check::registry(&[package()])
    }

    fn sources() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))
    }

    #[test]
    fn the_manifest_parses() {
        let chat = manifest();
        assert_eq!(chat.slug, PACKAGE);
        assert_eq!(chat.category, Category::CustomerService);
        assert_eq!(chat.workflows, ["website_chat.toml"]);
        let shipped: Vec<&str> = DEFAULT_RULES.iter().map(|(name, _)| *name).collect();
        assert_eq!(chat.workflows, shipped);
    }

    /// The manifest and the handler registry name the same kinds.
    #[test]
    fn manifest_kinds_are_the_registered_kinds() {
        check::kinds_are_registered(&[manifest()], &registry());
    }

    /// The package's signals are exactly what its code records and what
    /// its handlers' results and creations record.
    #[test]
    fn manifest_signals_are_what_the_code_records() {
        check::signals_are_recorded(&manifest(), &registry(), sources());
    }

    /// Every signal type this crate records by name is in its manifest or
    /// among the platform's, so the manifest cannot fall behind the code.
    #[test]
    fn every_signal_the_code_records_is_known() {
        let registry = registry();
        let known: BTreeSet<String> = fleetprompt_engine::handlers::RECORDED_SIGNALS
            .iter()
            .copied()
            .chain(manifest().signals.iter().map(|s| s.signal_type.as_str()))
            .chain(registry.signal_types())
            .map(str::to_owned)
            .collect();
        let found = check::recorded_signals_are_known(&known, sources());
        assert!(found >= 8, "found only {found} recorded signal names");
    }

    #[test]
    fn signal_types_join_the_list_and_every_handlers_results() {
        fleetprompt_engine::package::load(&[package()]).expect("loads");
        let types = fleetprompt_engine::handlers::signal_types(&registry());
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

    #[test]
    fn a_payload_field_may_be_optional() {
        let m = manifest();
        let received = m
            .signals
            .iter()
            .find(|s| s.signal_type == "webchat.message.received")
            .expect("listed");
        assert_eq!(
            received.fields["quiet_ms"],
            PayloadField {
                ty: FieldType::Integer,
                optional: true
            }
        );
        assert!(!received.fields["role"].optional);
    }

    #[test]
    fn default_rules_are_told_from_tenant_overrides() {
        let m = manifest();
        assert!(m.owns_rule_file(Path::new("/srv/workflows/website_chat.toml")));
        assert!(!m.owns_rule_file(Path::new("/srv/workflows/tenants/acme/website_chat.toml")));
        assert!(!m.owns_rule_file(Path::new("/srv/workflows/mine.toml")));
    }

    fn err<T: DeserializeOwned + std::fmt::Debug>(args: Value) -> String {
        parse_args::<T>(&args).expect_err("refused").to_string()
    }

    #[test]
    fn a_missing_argument_is_named_with_its_path() {
        assert_eq!(
            err::<outbound::ReplySendArgs>(
                json!({ "conversation_id": crate::types::id::ConversationId::new() })
            ),
            "args.content: missing field"
        );
    }

    #[test]
    fn a_wrong_argument_type_or_value_is_named_with_its_path() {
        assert_eq!(
            err::<email::EmailSendArgs>(json!({ "subject": "s", "to": [1] })),
            "args.to: must be an address or a list of addresses"
        );
        let role = err::<outbound::ReplySendArgs>(json!({
            "conversation_id": crate::types::id::ConversationId::new(),
            "content": "hi",
            "role": "robot",
        }));
        assert!(
            role.starts_with("args.role: unknown variant `robot`"),
            "{role}"
        );
        let conv = err::<outbound::CloseArgs>(json!({ "conversation_id": "conv_nope" }));
        assert!(conv.starts_with("args.conversation_id: "), "{conv}");
        for grace in [json!(1e12), json!(7 * 86_400 + 1), json!("1h")] {
            let e = err::<handlers::RotateSecretArgs>(json!({
                "site_id": crate::types::id::SiteId::new(),
                "from_key_id": 1,
                "grace_secs": grace,
            }));
            assert_eq!(
                e, "args.grace_secs: must be a whole number of seconds, at most 7 days",
                "{grace}"
            );
        }
    }

    #[test]
    fn optional_arguments_may_be_left_out() {
        let close: outbound::CloseArgs = parse_args(&Value::Null).unwrap();
        assert!(close.conversation_id.is_none() && close.reason.is_none());
    }
}
