//! The engine: records signals, creates directives, and runs them as apalis
//! jobs over our own directive table.
//!
//! # Layout
//! - [`Engine`] (this file): the entry points the HTTP server and the CLI call.
//! - [`access`]: members, sign-in, sessions, personal and tenant tokens.
//! - [`audit`]: the tenant's audit log (admin changes on `tenant:<id>`).
//! - [`cron`]: schedule rules, each tick fired once across nodes.
//! - [`config`]: engine settings (worker name, concurrency, lease, polling).
//! - [`cache`]: configuration as hot paths read it, kept until it changes.
//! - [`error`]: the engine's error enum.
//! - [`handler`]: the directive handler trait, outcomes and the registry.
//! - [`handlers`]: the platform's handlers (`noop`, `webhook.post`).
//! - [`destination`]: creating destinations and opening their sealed config.
//! - [`package`]: the [`Package`](package::Package) trait the engine calls
//!   at start, and the packages' manifests (signal types, directive kinds,
//!   default rules, settings schema).
//! - [`installation`]: installing and uninstalling packages per tenant, and
//!   what an uninstalled package stops.
//! - [`edge`]: Edge Connectors: registration, heartbeats, edge-lane tasks.
//! - [`worker`]: the apalis backend over the directive table, the worker
//!   service and the batched completer.
//! - [`rules`]: the active workflow rule set, reloaded when its files change.
//! - [`published`]: rule files tenants publish over the API, and backtests.
//! - [`routing`]: rules turn a signal into directives inside its transaction.
//! - [`upkeep`]: the lease reaper, queue gauges and PostgreSQL LISTEN.
//! - [`metrics`]: every metric the engine exports, described in one place.

pub mod access;
pub mod audit;
pub mod cache;
pub mod config;
pub mod cron;
pub mod destination;
pub mod edge;
pub mod error;
pub mod flow;
pub mod handler;
pub mod handlers;
pub mod installation;
pub mod metrics;
pub mod package;
pub mod published;
pub mod routing;
pub mod rules;
pub mod upkeep;
pub mod worker;

use std::sync::Arc;

use fleetprompt_core::secret::MasterKey;
use fleetprompt_core::signal::{ValidationError, check_dedupe_key, check_payload};
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, DirectiveKind, NewSignal, Origin, RetryPolicy, TenantId};
use fleetprompt_store::directive::{Created, DirectiveRow, NewDirective};
use fleetprompt_store::signal::Recorded;
use fleetprompt_store::{Db, directive, signal};
use serde_json::Value;

pub use config::EngineConfig;
pub use error::EngineError;
pub use handler::{
    AnyHandler, ArgsError, Attempt, Failed, Handler, HandlerRegistry, OrRetry, Outcome,
    ResultSignals,
};

/// What a caller asks for when creating a directive.
#[derive(Debug, Clone)]
pub struct DirectiveRequest {
    /// Handler name.
    pub kind: String,
    /// Handler arguments (a JSON object).
    pub args: Value,
    /// Unique per tenant.
    pub dedupe_key: String,
    /// Overrides the default attempt count.
    pub max_attempts: Option<u32>,
    /// What it is about (defaults to `directive:<id>`).
    pub subject: Option<String>,
    /// Delay before the first attempt, in milliseconds.
    pub delay_ms: Option<u64>,
    /// Overrides of the default backoff.
    pub backoff: BackoffOverride,
}

/// Per-directive overrides of the default retry backoff.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffOverride {
    /// Delay before the second attempt, in milliseconds.
    pub base_ms: Option<u64>,
    /// Upper bound of any delay, in milliseconds.
    pub max_ms: Option<u64>,
    /// Growth per attempt.
    pub factor: Option<f64>,
    /// Relative jitter (0.2 = ±20 %).
    pub jitter: Option<f64>,
}

/// A tenant's destinations by name, `None` for a name that is no destination.
type DestinationCache =
    cache::Fresh<(TenantId, String), Option<fleetprompt_store::destination::DestinationRow>>;

/// The engine: shared by the HTTP server, the workers and the CLI.
pub struct Engine {
    db: Db,
    key: MasterKey,
    config: EngineConfig,
    handlers: HandlerRegistry,
    http: fleetprompt_connectors::Outbound,
    rules: rules::Rules,
    /// Base URL of links sent outside (console deep links in notifications).
    public_url: std::sync::RwLock<String>,
    /// Tenant slugs by id: rules are scoped by slug, completions know ids.
    slugs: std::sync::RwLock<std::collections::HashMap<TenantId, String>>,
    /// This engine, for the background tasks it starts on first use.
    me: std::sync::Weak<Engine>,
    /// The packages this engine runs, by slug.
    packages: Vec<(String, Arc<dyn package::Package>)>,
    /// The packages' state objects ([`package::Package::state`]).
    package_states: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    /// Destinations (and names that are none) as routing and handlers read them.
    destinations: DestinationCache,
    /// The packages each tenant has uninstalled.
    installations: installation::InstallationCache,
    /// Set when the process begins to stop, so long polls (Edge Connector
    /// claims) answer at once instead of holding up the HTTP server's
    /// graceful shutdown.
    shutting_down: std::sync::atomic::AtomicBool,
    /// Failed sign-ins, per account and per client address.
    throttle: access::Throttle,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.db.backend())
            .field("worker", &self.config.worker_name)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Builds an engine with the platform's handlers and those of
    /// `packages`, whose manifests it loads ([`package::load`]). A
    /// manifest that does not parse is a bug of this build (its package's
    /// unit tests catch it): this panics.
    pub fn new(
        db: Db,
        key: MasterKey,
        config: EngineConfig,
        packages: Vec<Arc<dyn package::Package>>,
    ) -> Arc<Self> {
        package::load(&packages).unwrap_or_else(|e| panic!("package manifest: {e}"));
        let handlers = package::handlers(&packages);
        let package_states = packages.iter().filter_map(|p| p.state()).collect();
        let packages = packages
            .into_iter()
            .map(|p| {
                let m = package::Manifest::parse(p.manifest())
                    .unwrap_or_else(|e| panic!("package manifest: {e}"));
                (m.slug, p)
            })
            .collect();
        let http = fleetprompt_connectors::Outbound::new(
            config.connect_timeout,
            config.http_timeout,
            config.outbound.clone(),
        );
        Arc::new_cyclic(|me| Self {
            db,
            key,
            handlers,
            config,
            http,
            rules: rules::Rules::default(),
            public_url: std::sync::RwLock::new("http://127.0.0.1:8080".into()),
            slugs: Default::default(),
            destinations: Default::default(),
            installations: Default::default(),
            me: me.clone(),
            packages,
            package_states,
            shutting_down: Default::default(),
            throttle: Default::default(),
        })
    }

    /// This engine, for a background task that must not keep it alive.
    pub fn handle(&self) -> std::sync::Weak<Engine> {
        self.me.clone()
    }

    /// The packages this engine runs, in the order it was given them.
    pub fn packages(&self) -> impl Iterator<Item = &Arc<dyn package::Package>> {
        self.packages.iter().map(|(_, p)| p)
    }

    /// The package `slug`, if this engine runs it.
    pub fn package(&self, slug: &str) -> Option<&Arc<dyn package::Package>> {
        self.packages
            .iter()
            .find_map(|(s, p)| (s == slug).then_some(p))
    }

    /// The state object of type `T` a package gave
    /// ([`package::Package::state`]), if any.
    pub fn package_state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.package_states
            .iter()
            .find_map(|s| s.clone().downcast::<T>().ok())
    }

    /// Failed sign-ins, as [`access::sign_in`] counts them.
    pub fn throttle(&self) -> &access::Throttle {
        &self.throttle
    }

    /// Says the process is stopping: long polls return what they have.
    pub fn begin_shutdown(&self) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether [`Engine::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The handler registry (known directive kinds).
    pub fn handlers(&self) -> &HandlerRegistry {
        &self.handlers
    }

    /// The master key that seals stored secrets.
    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    /// The shared outbound HTTP client and the policy it enforces.
    pub fn http(&self) -> &fleetprompt_connectors::Outbound {
        &self.http
    }

    /// Destinations as routing and handlers read them.
    pub(crate) fn destination_cache(&self) -> &DestinationCache {
        &self.destinations
    }

    /// The public base URL (`--public-url`, default the listen URL).
    pub fn public_url(&self) -> String {
        self.public_url.read().expect("public url lock").clone()
    }

    /// Sets the public base URL, once the listen address is known.
    pub fn set_public_url(&self, url: &str) {
        *self.public_url.write().expect("public url lock") = url.trim_end_matches('/').to_owned();
    }

    /// The workflow rules.
    pub fn rules(&self) -> &rules::Rules {
        &self.rules
    }

    /// A tenant's slug, cached after the first lookup (slugs never change).
    pub async fn tenant_slug(&self, tenant: TenantId) -> Result<String, EngineError> {
        if let Some(s) = self.slugs.read().expect("slug cache").get(&tenant) {
            return Ok(s.clone());
        }
        let t = fleetprompt_store::tenant::find_by_id(&self.db, tenant).await?;
        self.slugs
            .write()
            .expect("slug cache")
            .insert(tenant, t.slug.clone());
        Ok(t.slug)
    }

    /// Records a signal in the caller's transaction and, if it is new, routes
    /// it through today's rules in that same transaction.
    pub async fn record_in_tx(
        &self,
        tx: &mut fleetprompt_store::Tx,
        tenant: TenantId,
        signal: &NewSignal,
    ) -> Result<Recorded, EngineError> {
        let recorded = signal::insert(tx, tenant, signal).await?;
        if !recorded.duplicate {
            let view = routing::SignalView::of(recorded.id, signal);
            self.route_signal(tx, tenant, &view, false).await?;
        }
        Ok(recorded)
    }

    /// Records a signal and routes it through today's rules in the same
    /// transaction; a repeated dedupe key records and routes nothing.
    pub async fn record_signal(
        &self,
        tenant: TenantId,
        signal: NewSignal,
    ) -> Result<Recorded, EngineError> {
        let mut tx = self.db.begin().await?;
        let recorded = self.record_in_tx(&mut tx, tenant, &signal).await?;
        tx.commit().await?;
        if !recorded.duplicate {
            metrics::signal_recorded(signal.signal_type.as_str());
        }
        Ok(recorded)
    }

    /// Checks a directive request and turns it into a row to insert.
    pub async fn prepare_directive(
        &self,
        tenant: TenantId,
        req: DirectiveRequest,
        origin: Origin,
    ) -> Result<NewDirective, EngineError> {
        let kind = DirectiveKind::parse(req.kind)?;
        let handler = self.handlers.get(kind.as_str()).ok_or_else(|| {
            EngineError::Validation(ValidationError::Invalid {
                field: "kind",
                reason: format!(
                    "unknown directive kind {:?}; known kinds: {}",
                    kind.as_str(),
                    self.handlers.kinds().join(", ")
                ),
            })
        })?;
        check_dedupe_key(&req.dedupe_key)?;
        check_payload("args", &req.args)?;
        self.require_kind_installed(tenant, kind.as_str()).await?;
        handler.validate(self, tenant, &req.args).await?;
        let mut retry = RetryPolicy::default();
        if let Some(n) = req.max_attempts {
            retry.max_attempts = n;
        }
        let b = req.backoff;
        retry.base_ms = b.base_ms.unwrap_or(retry.base_ms);
        retry.max_ms = b.max_ms.unwrap_or(retry.max_ms.max(retry.base_ms));
        retry.factor = b.factor.unwrap_or(retry.factor);
        retry.jitter = b.jitter.unwrap_or(retry.jitter);
        retry.validate().map_err(|reason| {
            EngineError::Validation(ValidationError::Invalid {
                field: "retry",
                reason,
            })
        })?;
        let id = DirectiveId::new();
        let subject = match req.subject {
            Some(s) => Some(fleetprompt_core::Subject::parse(s)?.to_string()),
            None => Some(format!("directive:{id}")),
        };
        Ok(NewDirective {
            id,
            kind,
            args: req.args,
            dedupe_key: req.dedupe_key,
            subject,
            retry,
            run_at: now_ms() + req.delay_ms.unwrap_or(0) as i64,
            origin,
            caused_by: None,
        })
    }

    /// Creates a directive (and so its job) in one transaction; a taken
    /// dedupe key returns the existing directive and creates nothing.
    pub async fn create_directive(
        &self,
        tenant: TenantId,
        req: DirectiveRequest,
        origin: Origin,
    ) -> Result<(Created, DirectiveRow), EngineError> {
        let new = self.prepare_directive(tenant, req, origin).await?;
        let mut tx = self.db.begin().await?;
        let created = self.insert_directive(&mut tx, tenant, &new).await?;
        tx.commit().await?;
        count_created(&new, &created);
        let row = directive::get(&self.db, tenant, created.id()).await?;
        Ok((created, row))
    }

    /// Checks a directive the engine built itself (an approved draft's
    /// reply, say) as [`Engine::prepare_directive`] checks a request: the
    /// payload limits and its handler's validation. Called before the
    /// transaction that inserts it, as validation may read the database.
    pub async fn validate_directive(
        &self,
        tenant: TenantId,
        new: &NewDirective,
    ) -> Result<(), EngineError> {
        let handler = self.handlers.get(new.kind.as_str()).ok_or_else(|| {
            EngineError::Validation(ValidationError::Invalid {
                field: "kind",
                reason: format!("unknown directive kind {:?}", new.kind.as_str()),
            })
        })?;
        check_payload("args", &new.args)?;
        self.require_kind_installed(tenant, new.kind.as_str())
            .await?;
        handler.validate(self, tenant, &new.args).await
    }

    /// Inserts a checked directive (and so its job) in the caller's
    /// transaction, with its kind's creation signal. The caller counts it
    /// with [`count_created`] once the transaction has committed.
    pub async fn insert_directive(
        &self,
        tx: &mut fleetprompt_store::Tx,
        tenant: TenantId,
        new: &NewDirective,
    ) -> Result<Created, EngineError> {
        let created = directive::insert(tx, tenant, new).await?;
        if let Created::New(id) = created {
            self.record_created(tx, tenant, id, new).await?;
        }
        Ok(created)
    }

    /// Records the kind's creation signal (e.g. a package's `<noun>.created`),
    /// if it has one, in the transaction that created the directive. It is
    /// an audit record: not routed, so no rule can loop on it.
    pub(crate) async fn record_created(
        &self,
        tx: &mut fleetprompt_store::Tx,
        tenant: TenantId,
        id: DirectiveId,
        new: &NewDirective,
    ) -> Result<(), EngineError> {
        let Some(signal_type) = self
            .handlers
            .get(new.kind.as_str())
            .and_then(|h| h.created_signal())
        else {
            return Ok(());
        };
        let subject = new
            .subject
            .clone()
            .unwrap_or_else(|| format!("directive:{id}"));
        let mut s = NewSignal::new(
            signal_type,
            &subject,
            serde_json::json!({
                "directive_id": id,
                "kind": new.kind.as_str(),
                "destination": new.args.get("destination"),
                "dedupe_key": new.dedupe_key,
                "run_at": fleetprompt_core::time::to_rfc3339(new.run_at),
            }),
            format!("directive:{id}:created"),
            now_ms(),
        )?;
        s.caused_by = Some(id);
        signal::insert(tx, tenant, &s).await?;
        metrics::signal_recorded(signal_type);
        Ok(())
    }

    /// Cancels a pending directive.
    pub async fn cancel_directive(
        &self,
        tenant: TenantId,
        id: DirectiveId,
    ) -> Result<DirectiveRow, EngineError> {
        let mut tx = self.db.begin().await?;
        directive::cancel(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(directive::get(&self.db, tenant, id).await?)
    }

    /// Re-drives a failed or cancelled directive with a fresh attempt budget.
    pub async fn retry_directive(
        &self,
        tenant: TenantId,
        id: DirectiveId,
    ) -> Result<DirectiveRow, EngineError> {
        let mut tx = self.db.begin().await?;
        directive::redrive(&mut tx, tenant, id).await?;
        tx.commit().await?;
        Ok(directive::get(&self.db, tenant, id).await?)
    }
}

/// Counts a committed directive insert: created, or deduplicated.
pub fn count_created(new: &NewDirective, created: &Created) {
    match created {
        Created::New(_) => metrics::directive_created(new.kind.as_str()),
        Created::Existing(_) => metrics::directive_deduplicated(new.kind.as_str()),
    }
}

#[cfg(test)]
mod tests {
    /// The platform crates (core, store, engine, server) name no package:
    /// website chat lives in its own crate, behind [`package::Package`]
    /// and the server's package hook, and this keeps the cut from
    /// regressing. Neither the crate nor the package's tables nor its ids
    /// are named. The one exception is the migration listing, which keeps
    /// its files' names (one numbered sequence for every table).
    #[test]
    fn the_platform_crates_name_no_package() {
        // Spelled in halves so that this file does not name them either;
        // matched in lower case.
        let needle = concat!("web", "chat");
        let needles = [
            needle,
            concat!("website", "_chat"),
            concat!("conversation", "id"),
            concat!("site", "id"),
            concat!("visitor", "id"),
        ];
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("crates");
        let mut scanned = 0;
        let mut found = Vec::new();
        for name in ["core", "store", "engine", "server"] {
            let mut pending = vec![crates.join(name).join("src")];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(&dir).expect("sources") {
                    let path = entry.expect("entry").path();
                    if path.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    let text = std::fs::read_to_string(&path).expect("source");
                    scanned += 1;
                    let migrations = path.ends_with("store/src/migrate.rs");
                    for (n, line) in text.lines().enumerate() {
                        let listing = migrations
                            && (line.contains("migrations/")
                                || line.trim() == format!("name: \"{needle}\","));
                        let lower = line.to_ascii_lowercase();
                        if needles.iter().any(|n| lower.contains(n)) && !listing {
                            found.push(format!("{}:{}: {line}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
        assert!(scanned > 50, "scanned only {scanned} files");
        assert!(
            found.is_empty(),
            "the platform crates name a package (move it to the package's crate):\n{}",
            found.join("\n")
        );
    }
}
