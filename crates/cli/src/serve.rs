//! `fleetprompt serve`.

use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use fleetprompt_engine::{Engine, EngineConfig};
use fleetprompt_server::AppState;
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
    /// Milliseconds between sweeps that end idle chat conversations.
    #[arg(long, env = "FLEETPROMPT_WEBCHAT_SWEEP_MS", default_value_t = 30_000)]
    pub webchat_sweep_ms: u64,
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
    fleetprompt_server::ops::describe();
    fleetprompt_server::widget::describe();
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
    let config = args.engine_config()?;
    let metrics = install_metrics(config.reap_interval)?;
    let key = common.master_key()?;
    let db = common.open_db().await?;
    let applied = fleetprompt_store::migrate::run(&db)
        .await
        .context("migrating the database")?;
    tracing::info!(
        backend = db.backend().as_str(),
        database = %redact_db_url(&common.database_url()),
        migrations_applied = applied,
        "database ready"
    );
    let engine = Engine::new(db.clone(), key, config);
    if let Err(e) = fleetprompt_engine::rules::load(&engine, &args.workflows) {
        anyhow::bail!(
            "workflow rules in {} are invalid:\n{}",
            args.workflows.display(),
            e.report()
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
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
        tasks.spawn(fleetprompt_engine::webchat::sweep::run(
            engine.clone(),
            Duration::from_millis(args.webchat_sweep_ms.max(100)),
            stop_rx.clone(),
        ));
    } else {
        // API nodes still keep the queue gauges fresh for their /metrics.
        tasks.spawn(gauges_only(engine.clone(), stop_rx.clone()));
    }

    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    // The one line on stdout: where to go. Tests read it to find port 0's choice.
    println!("FleetPrompt listening on http://{local}");
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

    let state = AppState {
        engine: engine.clone(),
        metrics,
    };
    let mut http_stop = stop_rx.clone();
    let server = fleetprompt_server::serve(listener, state, async move {
        let _ = http_stop.changed().await;
    });
    let stopping = engine.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing work in flight");
        stopping.begin_shutdown();
        let _ = stop_tx.send(true);
    });
    server.await.context("HTTP server")?;
    while tasks.join_next().await.is_some() {}
    db.close().await;
    Ok(())
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
