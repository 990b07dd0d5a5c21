//! `fleetprompt serve`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use fleetprompt_engine::{Engine, EngineConfig};
use fleetprompt_server::AppState;
use fleetprompt_server::package::HttpPackage;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use metrics_util::MetricKindMask;
use tokio::sync::watch;

use crate::settings::{Common, check_bind, redact_db_url};

/// What this process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Serve HTTP only.
    Api,
    /// Run directives only (still serves /healthz, /readyz and /metrics).
    Worker,
    /// Both.
    All,
}

/// Flags of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "FLEETPROMPT_BIND", default_value = "127.0.0.1:8080")]
    pub bind: String,
    /// What this process does.
    #[arg(long, env = "FLEETPROMPT_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Directives run at once by this process.
    #[arg(long, env = "FLEETPROMPT_CONCURRENCY", default_value_t = 256)]
    pub concurrency: usize,
    /// Seconds a claimed directive stays leased before another node may take
    /// it; the live worker renews it every third of that while it runs, so a
    /// killed node's work starts again within the lease plus one reaper pass.
    #[arg(long, env = "FLEETPROMPT_LEASE_SECS", default_value_t = 10)]
    pub lease_secs: u64,
    /// Seconds a handler may run.
    #[arg(long, env = "FLEETPROMPT_HANDLER_TIMEOUT_SECS", default_value_t = 20)]
    pub handler_timeout_secs: u64,
    /// Attempts in flight to one destination at once, per node, unless the
    /// destination sets its own `max_in_flight`.
    #[arg(
        long,
        env = "FLEETPROMPT_DESTINATION_CONCURRENCY",
        default_value_t = 16
    )]
    pub destination_concurrency: usize,
    /// Failed attempts in a row that open a destination's circuit breaker.
    #[arg(long, env = "FLEETPROMPT_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,
    /// Milliseconds between polls for delayed retries when nothing wakes the worker.
    #[arg(long, env = "FLEETPROMPT_POLL_MS", default_value_t = 250)]
    pub poll_ms: u64,
    /// Milliseconds between looks for expired leases.
    #[arg(long, env = "FLEETPROMPT_REAP_MS", default_value_t = 5000)]
    pub reap_ms: u64,
    /// Directory of workflow rules: `*.toml` defaults and `tenants/<slug>/*.toml`.
    #[arg(
        long = "workflows",
        env = "FLEETPROMPT_WORKFLOWS_DIR",
        default_value = "./workflows"
    )]
    pub workflows: std::path::PathBuf,
    /// Milliseconds between checks of the workflow directory for changes.
    #[arg(long, env = "FLEETPROMPT_WORKFLOWS_POLL_MS", default_value_t = 2000)]
    pub workflows_poll_ms: u64,
    /// Ticks of schedule rules missed while no node ran: `run-once` (the latest) or `skip`.
    #[arg(long, env = "FLEETPROMPT_CRON_CATCH_UP", default_value = "run-once")]
    pub cron_catch_up: String,
    /// Serve /demo with a demo tenant and site, created on first start (SQLite only).
    #[arg(long, env = "FLEETPROMPT_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,
    /// Base URL of links sent outside (console deep links in Mattermost
    /// notifications); defaults to the listen URL.
    #[arg(long, env = "FLEETPROMPT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Proxies (CIDRs or addresses, comma-separated) whose `Forwarded` /
    /// `X-Forwarded-For` headers name the client; rate limits are keyed by
    /// that address. Default: none, the TCP peer is the client.
    #[arg(
        long,
        env = "FLEETPROMPT_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR,…"
    )]
    pub trusted_proxies: Vec<String>,
    /// Milliseconds between sweeps that end idle chat conversations.
    #[arg(long, env = "FLEETPROMPT_WEBCHAT_SWEEP_MS", default_value_t = 30_000)]
    pub webchat_sweep_ms: u64,
    /// Seconds a connection has to send a request's headers; also the most
    /// a keep-alive connection may sit idle between requests.
    #[arg(long, env = "FLEETPROMPT_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// HTTP connections open at once; at the cap new ones wait in the
    /// backlog (lowered to fit the open-file limit).
    #[arg(long, env = "FLEETPROMPT_MAX_CONNECTIONS", default_value_t = 8192)]
    pub max_connections: usize,
    /// Largest admin request body, in KiB; a larger one is answered 413.
    #[arg(long, env = "FLEETPROMPT_ADMIN_BODY_LIMIT_KIB", default_value_t = fleetprompt_server::admin::BODY_LIMIT / 1024)]
    pub admin_body_limit_kib: usize,
    /// Live widget streams per visitor; a new one closes the oldest.
    #[arg(long, env = "FLEETPROMPT_STREAMS_PER_VISITOR", default_value_t = fleetprompt_webchat::http::widget::stream::STREAMS_PER_VISITOR)]
    pub streams_per_visitor: usize,
    /// Live widget streams per site; past it new ones are answered 429.
    #[arg(long, env = "FLEETPROMPT_STREAMS_PER_SITE", default_value_t = fleetprompt_webchat::http::widget::stream::STREAMS_PER_SITE)]
    pub streams_per_site: usize,
    /// Seconds a signed-in session may go unused before it expires.
    #[arg(long, env = "FLEETPROMPT_SESSION_IDLE_SECS", default_value_t = 12 * 3600)]
    pub session_idle_secs: u64,
    /// Seconds a signed-in session lives at most, however busy.
    #[arg(long, env = "FLEETPROMPT_SESSION_MAX_AGE_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_max_age_secs: u64,
    /// Seconds that requests and directive attempts in flight get to finish
    /// after SIGTERM/SIGINT; the leases of what has not finished by then are
    /// released, so other nodes take the work over at once.
    #[arg(long, env = "FLEETPROMPT_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Seconds to keep retrying an unreachable database at start before
    /// giving up (unset: forever). Meanwhile /healthz answers and /readyz
    /// says 503.
    #[arg(
        long = "db-wait",
        env = "FLEETPROMPT_DB_WAIT_SECS",
        value_name = "SECS"
    )]
    pub db_wait: Option<u64>,
}

impl ServeArgs {
    fn engine_config(&self) -> anyhow::Result<EngineConfig> {
        if self.lease_secs == 0 {
            anyhow::bail!("--lease-secs must be at least 1");
        }
        if self.concurrency == 0 || self.destination_concurrency == 0 {
            anyhow::bail!("--concurrency and --destination-concurrency must be at least 1");
        }
        if self.breaker_failures == 0 {
            anyhow::bail!("--breaker-failures must be at least 1");
        }
        if self.header_timeout_secs == 0 {
            anyhow::bail!("--header-timeout-secs must be at least 1");
        }
        if self.session_idle_secs == 0 || self.session_max_age_secs == 0 {
            anyhow::bail!("--session-idle-secs and --session-max-age-secs must be at least 1");
        }
        Ok(EngineConfig {
            concurrency: self.concurrency,
            claim_batch: self.concurrency.min(512),
            lease: Duration::from_secs(self.lease_secs),
            handler_timeout: Duration::from_secs(self.handler_timeout_secs),
            poll_interval: Duration::from_millis(self.poll_ms.max(10)),
            reap_interval: Duration::from_millis(self.reap_ms.max(100)),
            flow: fleetprompt_engine::flow::FlowConfig {
                default_cap: self.destination_concurrency,
                failures_to_open: self.breaker_failures,
                ..Default::default()
            },
            access: fleetprompt_engine::access::AccessConfig {
                session_idle: Duration::from_secs(self.session_idle_secs),
                session_max_age: Duration::from_secs(self.session_max_age_secs),
            },
            ..EngineConfig::default()
        })
    }
}

/// Installs the Prometheus recorder with histogram buckets for durations.
///
/// Gauges are set afresh by every upkeep pass (every `refresh`), and a
/// gauge not set for twelve passes is dropped: the last-seen series of a
/// revoked connector goes away instead of tripping the silent-connector
/// alert until the process restarts.
pub fn install_metrics(
    refresh: Duration,
    http: &[std::sync::Arc<dyn HttpPackage>],
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(refresh * 12))
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0, 600.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Suffix("_size".into()),
            &[1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0],
        )?
        .install_recorder()
        .context("installing the metrics recorder")?;
    fleetprompt_engine::metrics::describe();
    for p in crate::packages() {
        p.describe_metrics();
    }
    fleetprompt_store::health::describe();
    fleetprompt_server::ops::describe();
    for p in http {
        p.describe_metrics();
    }
    fleetprompt_server::listen::describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Runs until SIGINT or SIGTERM, then drains in-flight work.
pub async fn run(common: &Common, args: ServeArgs) -> anyhow::Result<()> {
    let addr = check_bind(&args.bind)?;
    let files = raise_open_files();
    tracing::info!(
        open_files = files.unwrap_or(0),
        "open-file limit raised to the hard limit"
    );
    let trusted_proxies = fleetprompt_server::client::TrustedProxies::parse(&args.trusted_proxies)
        .map_err(|e| anyhow::anyhow!("--trusted-proxies: {e}"))?;
    let config = EngineConfig {
        outbound: common.outbound_policy(),
        ..args.engine_config()?
    };
    // The packages' HTTP side: their routes, and their live streams, which
    // the server ends when it stops accepting.
    let http: Vec<std::sync::Arc<dyn HttpPackage>> = vec![fleetprompt_webchat::http::http(
        args.streams_per_visitor,
        args.streams_per_site,
    )];
    let metrics = install_metrics(config.reap_interval, &http)?;
    let key = common.master_key()?;

    // Listen first, so /healthz and /readyz answer while the database is
    // awaited; every other route answers 503 until the gate opens.
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // The one line on stdout: where to go. Tests read it to find port 0's choice.
    println!("FleetPrompt listening on http://{local}");
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let gate = fleetprompt_server::startup::Gate::default();
    let limits = fleetprompt_server::listen::Limits {
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        max_connections: fit_connections(args.max_connections, files),
    };
    let mut http_stop = stop_rx.clone();
    let mut server = tokio::spawn(fleetprompt_server::startup::serve(
        listener,
        gate.clone(),
        limits,
        http.clone(),
        async move {
            let _ = http_stop.wait_for(|stop| *stop).await;
        },
    ));

    let Some(db) = wait_for_db(
        common,
        args.db_wait.map(Duration::from_secs),
        stop_rx.clone(),
    )
    .await?
    else {
        tracing::info!("shutting down before the database answered");
        server.await.context("HTTP server")??;
        return Ok(());
    };
    let applied = fleetprompt_store::migrate::run(&db)
        .await
        .context("migrating the database")?;
    tracing::info!(
        backend = db.backend().as_str(),
        database = %redact_db_url(&common.database_url()),
        migrations_applied = applied,
        "database ready"
    );
    let allowed: Vec<String> = common
        .allow_outbound
        .iter()
        .map(|c| c.to_string())
        .collect();
    tracing::info!(
        allowed_internal = %allowed.join(","),
        "outbound requests reach public addresses only, plus the allowed internal ranges"
    );
    let engine = Engine::new(db.clone(), key, config, crate::packages());
    fleetprompt_engine::metrics::register_known(&engine.handlers().kinds());
    // The queue and connector gauges hold the database's values from the
    // first scrape, not only after the first upkeep pass.
    fleetprompt_engine::upkeep::refresh_gauges(&engine).await;
    if let Err(e) = fleetprompt_engine::rules::load(&engine, &args.workflows).await {
        anyhow::bail!(
            "workflow rules in {} are invalid:\n{}",
            args.workflows.display(),
            e.report()
        );
    }
    tokio::spawn(fleetprompt_engine::rules::watch(
        engine.clone(),
        args.workflows.clone(),
        Duration::from_millis(args.workflows_poll_ms.max(50)),
        stop_rx.clone(),
    ));

    let mut tasks = tokio::task::JoinSet::new();
    if args.role != Role::Api {
        tasks.spawn(fleetprompt_engine::worker::supervise(
            engine.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(fleetprompt_engine::upkeep::run(
            engine.clone(),
            stop_rx.clone(),
        ));
        tasks.spawn(fleetprompt_engine::upkeep::listen(
            engine.clone(),
            stop_rx.clone(),
        ));
        let catch_up: fleetprompt_engine::cron::CatchUp =
            args.cron_catch_up.parse().map_err(anyhow::Error::msg)?;
        tasks.spawn(fleetprompt_engine::cron::run(
            engine.clone(),
            catch_up,
            stop_rx.clone(),
        ));
        tasks.spawn(fleetprompt_webchat::sweep::run(
            engine.clone(),
            Duration::from_millis(args.webchat_sweep_ms.max(100)),
            stop_rx.clone(),
        ));
    } else {
        // API nodes still keep the queue gauges fresh for their /metrics.
        tasks.spawn(gauges_only(engine.clone(), stop_rx.clone()));
    }

    match &args.public_url {
        Some(u) => {
            let parsed = reqwest::Url::parse(u).context("--public-url is not a URL")?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("--public-url must be an http or https URL");
            }
            engine.set_public_url(u);
        }
        None => engine.set_public_url(&format!("http://{local}")),
    }
    if args.demo && db.backend() == fleetprompt_store::Backend::Sqlite {
        crate::demo::setup(&engine, common, local).await;
    }
    tracing::info!(%local, role = ?args.role, worker = %engine.config().worker_name, "serving");

    if !trusted_proxies.is_empty() {
        tracing::info!(proxies = ?args.trusted_proxies, "client addresses are taken from these proxies' forwarding headers");
    }
    gate.open(
        AppState {
            engine: engine.clone(),
            metrics,
            trusted_proxies: std::sync::Arc::new(trusted_proxies),
            admin_body_limit: args.admin_body_limit_kib.max(1) * 1024,
        },
        &http,
    );
    let mut stopped = stop_rx.clone();
    // Once stopping, the server ends too, and that end is ours: a stop can
    // be seen first through the server's end (it watches the same signal),
    // so the server's end counts as "by itself" only when no stop was asked
    // for. Its handle is kept when it ended, as it may not be polled twice.
    let ended_early = tokio::select! {
        biased;
        _ = stopped.wait_for(|stop| *stop) => None,
        ended = &mut server => {
            if !*stop_rx.borrow() {
                ended.context("HTTP server")?.context("HTTP server")?;
                anyhow::bail!("the HTTP server stopped by itself");
            }
            Some(ended)
        }
    };
    let grace = Duration::from_secs(args.shutdown_grace);
    let deadline = tokio::time::Instant::now() + grace;
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: closing live streams, finishing work in flight"
    );
    engine.begin_shutdown();
    let ended = match ended_early {
        Some(ended) => Ok(ended),
        None => tokio::time::timeout_at(deadline, &mut server).await,
    };
    match ended {
        Ok(ended) => ended.context("HTTP server")?.context("HTTP server")?,
        Err(_) => {
            tracing::warn!("requests still in flight at the drain deadline; closing them");
            server.abort();
        }
    }
    let drained = tokio::time::timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("directive attempts still running at the drain deadline; stopping them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    if args.role != Role::Api {
        match fleetprompt_engine::upkeep::release_own_leases(&engine).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                released = n,
                "released the leases of unfinished directives; they run again on another node"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "releasing leases failed; other nodes take the work over when they expire"
            ),
        }
    }
    // Bounded: a connection an aborted task still holds is not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(2), db.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Raises this process's open-file soft limit to its hard limit: every
/// connection and stream is a descriptor, and the usual soft default (1024)
/// is far below what the server can hold. Returns the limit in force.
fn raise_open_files() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => getrlimit(Resource::Nofile).current,
        Err(e) => {
            tracing::warn!(error = %e, soft = ?limit.current, hard = ?limit.maximum, "could not raise the open-file limit");
            limit.current
        }
    }
}

/// Descriptors kept for everything but client connections: database
/// connections, outbound requests, rule files, logs.
const RESERVED_FILES: u64 = 256;

/// The connection cap, lowered so that the open-file limit `files` is never
/// what refuses a connection (or the database, or `/healthz`).
fn fit_connections(wanted: usize, files: Option<u64>) -> usize {
    let Some(files) = files else { return wanted };
    let fits = files.saturating_sub(RESERVED_FILES).max(16);
    if (wanted as u64) > fits {
        tracing::warn!(
            max_connections = fits,
            wanted,
            open_files = files,
            "--max-connections lowered to fit the open-file limit"
        );
        fits as usize
    } else {
        wanted
    }
}

async fn gauges_only(engine: std::sync::Arc<Engine>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => fleetprompt_engine::upkeep::refresh_gauges(&engine).await,
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Connects to the database, retrying with backoff (1 s, doubling, at
/// most 5 s between tries) while it is unreachable, for at most `wait`
/// (`None`: until it answers or the process is told to stop, then `None`).
/// Any other failure (a bad URL, no such database, a wrong password) ends
/// the process at once: waiting would not mend it.
async fn wait_for_db(
    common: &Common,
    wait: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Option<fleetprompt_store::Db>> {
    let url = common.database_url();
    let shown = redact_db_url(&url);
    let durability: fleetprompt_store::db::Durability =
        common.durability.parse().map_err(anyhow::Error::msg)?;
    let started = std::time::Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        let reason = match fleetprompt_store::Db::connect(&url, durability).await {
            Ok(db) => return Ok(Some(db)),
            Err(fleetprompt_store::StoreError::Unavailable(reason)) => reason,
            Err(e) => return Err(e).with_context(|| format!("connecting to {shown}")),
        };
        if let Some(wait) = wait
            && started.elapsed() + delay > wait
        {
            anyhow::bail!(
                "cannot connect to {shown} ({reason}); gave up after {} s (--db-wait)",
                wait.as_secs()
            );
        }
        tracing::warn!(
            "cannot connect to {shown} ({reason}), retrying in {} s",
            delay.as_secs()
        );
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}
