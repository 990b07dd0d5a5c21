//! `fleetprompt-edge`: the Edge Connector binary. See the library's docs and
//! docs/edge-connector.md. Logs go to stderr; only `check` writes to stdout.

use clap::Parser;
use fleetprompt_edge::config::{Args, Mode};
use tokio::sync::watch;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    init_logging(args.log_json);
    let mode = args.mode;
    let config = match args.validate(
        std::env::var("FLEETPROMPT_EDGE_TOKEN").ok(),
        std::env::var("FLEETPROMPT_EDGE_SMTP_PASSWORD").ok(),
    ) {
        Ok(c) => c,
        Err(e) => {
            if mode == Mode::Check {
                println!("FAIL: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if mode == Mode::Check {
        let passed = runtime.block_on(fleetprompt_edge::check::check(
            &config,
            &mut std::io::stdout(),
        ));
        return if passed {
            std::process::ExitCode::SUCCESS
        } else {
            std::process::ExitCode::FAILURE
        };
    }
    let result = runtime.block_on(async move {
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing the emails in hand");
            let _ = stop.send(true);
        });
        fleetprompt_edge::run(config, stopped).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "stopped");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
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
