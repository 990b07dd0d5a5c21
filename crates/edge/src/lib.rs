//! The Edge Connector: runs next to a tenant's own mail server (Proton Mail
//! Bridge) and delivers the tenant's `email.send` tasks through it. It talks
//! to FleetPrompt over HTTP with its own `fpe_…` token and never touches the
//! database.
//!
//! # Layout
//! - [`config`]: flags and `FLEETPROMPT_EDGE_*` variables, validated once.
//! - [`api`]: the server's `/edge/v1` API (heartbeat, claim, result).
//! - [`mail`]: composing one task's email.
//! - [`pin`]: trusting the mail server's certificate by pinning it (shared
//!   by every STARTTLS the connector makes).
//! - [`smtp`]: one SMTP session: STARTTLS, AUTH, one message.
//! - [`journal`]: the SQLite file in `--state-dir` that makes each email go
//!   out once across crashes and keeps results the server has not taken.
//! - [`task`]: one claimed task, journaled end to end.
//! - [`check`]: `fleetprompt-edge check`.
//! - [`mail`]: composing and sending one email; SMTP outcome → task outcome.
//! - [`imap`]: the reply watch: replies to our emails, found over IMAP
//!   (IDLE), reported to the server, marked seen.
//! - [`run`] (this file): the heartbeat loop and the claim–send–report loop,
//!   until shutdown.
//!
//! What it survives: the server being away (it keeps retrying, with
//! backoff; tasks wait in the server's queue, results in the journal), the
//! SMTP server being away (each attempt is reported `retry`, and the server
//! backs off), and its own crash (a task journaled `sent` is reported without
//! sending again; one caught during `DATA` is sent again with the same
//! `Message-ID` when its lease runs out).

pub mod api;
pub mod check;
pub mod config;
pub mod imap;
pub mod journal;
pub mod mail;
pub mod pin;
pub mod smtp;
pub mod task;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::api::{ApiError, Client};
use crate::config::{Config, Security};
use crate::journal::Journal;
use crate::task::{Runner, TaskError};

pub use crate::task::KINDS;

/// Runs until `shutdown` turns true (then finishes the emails in hand and
/// returns `Ok`), or until the server refuses the token (`Err`).
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = Client::new(&config)?;
    let smtp = smtp::Smtp::new(&config)?;
    let journal = Journal::open(&config.state_dir).await?;
    if config.smtp_security == Security::PlainTextInsecureLoopbackOnly {
        tracing::warn!(host = %config.smtp_host, "SMTP in plain text (loopback only): nothing is encrypted");
    }
    tracing::info!(state_dir = %config.state_dir.display(), trust = %config.smtp_trust.describe(), "journal open");
    // A refused token at start is a configuration error: say so and stop.
    match client.heartbeat().await {
        Ok(v) => {
            tracing::info!(connector = %v["connector_id"], server = %config.server_url,
                version = env!("CARGO_PKG_VERSION"), "connected")
        }
        Err(ApiError::Unauthorized) => return Err(ApiError::Unauthorized.into()),
        Err(e) => tracing::warn!(error = %e, "first heartbeat failed; retrying in the background"),
    }
    let heartbeats = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.heartbeat,
        shutdown.clone(),
    ));
    let runner = Runner {
        client: client.clone(),
        smtp,
        journal,
        config: config.clone(),
        counters: Arc::default(),
    };
    // The reply watch runs beside the send loop; its failures are logged
    // and retried inside it, and only a refused token ends it.
    let replies = config
        .imap
        .clone()
        .map(|imap| tokio::spawn(imap::watch(imap, client.clone(), shutdown.clone())));
    let mut backoff = Duration::from_secs(1);
    let result = loop {
        if *shutdown.borrow() {
            break Ok(());
        }
        // Results kept while the server was away go first, while their
        // leases may still hold.
        let step = match runner.flush().await {
            Ok(()) => {
                let claimed = tokio::select! {
                    r = client.claim(KINDS, config.batch, config.wait, config.lease) => r,
                    // A claim cut short may have leased tasks: they go back to the
                    // queue when their lease runs out.
                    _ = shutdown.changed() => break Ok(()),
                };
                match claimed {
                    Ok(tasks) => {
                        let mut step = Ok(());
                        for task in tasks {
                            match runner.handle(&task).await {
                                Ok(()) => {}
                                // The email is sent or journaled; keep going.
                                Err(e @ TaskError::ServerAway(_)) => step = Err(e),
                                Err(e) => {
                                    step = Err(e);
                                    break;
                                }
                            }
                        }
                        step
                    }
                    Err(ApiError::Unauthorized) => {
                        Err(TaskError::Unauthorized(ApiError::Unauthorized))
                    }
                    Err(e) => Err(TaskError::ServerAway(e)),
                }
            }
            Err(e) => Err(e),
        };
        match step {
            Ok(()) => backoff = Duration::from_secs(1),
            Err(TaskError::Unauthorized(e)) => break Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "waiting before trying the server again");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    heartbeats.abort();
    if let Some(watch) = replies {
        // It stops on the same shutdown signal; a send loop that ended for
        // another reason (a refused token) takes it down too.
        watch.abort();
        let _ = watch.await;
    }
    result
}

async fn heartbeat_loop(client: Client, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = client.heartbeat().await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    }
}
