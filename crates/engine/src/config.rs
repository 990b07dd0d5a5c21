//! Engine settings.

use std::time::Duration;

/// How the engine runs directives.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Unique per process start (host-pid-random), so a restarted process
    /// never adopts a dead one's leases by name.
    pub worker_name: String,
    /// Directives run at once by this process.
    pub concurrency: usize,
    /// Most directives claimed in one statement.
    pub claim_batch: usize,
    /// Most completions written in one transaction.
    pub complete_batch: usize,
    /// Completion transactions in flight at once on PostgreSQL.
    pub pg_completers: usize,
    /// How long a claim is held before another node may take it over,
    /// unless its worker renews it (every third of it, while it runs).
    pub lease: Duration,
    /// Longest a handler may run (its lease is renewed meanwhile).
    pub handler_timeout: Duration,
    /// Fallback poll when no wake-up arrives (delayed retries, other nodes on SQLite).
    pub poll_interval: Duration,
    /// How often expired leases are looked for.
    pub reap_interval: Duration,
    /// Connect timeout of outbound HTTP.
    pub connect_timeout: Duration,
    /// Whole-request timeout of outbound HTTP, the answer's body included.
    pub http_timeout: Duration,
    /// Which addresses outbound HTTP may reach (public ones, plus the
    /// operator's `--allow-outbound` ranges).
    pub outbound: fleetprompt_connectors::OutboundPolicy,
    /// Per-destination concurrency caps and circuit breakers.
    pub flow: crate::flow::FlowConfig,
    /// How long sign-in sessions live.
    pub access: crate::access::AccessConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            worker_name: default_worker_name(),
            concurrency: 256,
            claim_batch: 256,
            complete_batch: 512,
            pg_completers: 4,
            lease: Duration::from_secs(10),
            handler_timeout: Duration::from_secs(20),
            poll_interval: Duration::from_millis(250),
            reap_interval: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            http_timeout: Duration::from_secs(15),
            outbound: Default::default(),
            flow: crate::flow::FlowConfig::default(),
            access: Default::default(),
        }
    }
}

/// `host-pid-random`: unique for every process start.
pub fn default_worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &fleetprompt_core::secret::random_token(6)
    )
}
