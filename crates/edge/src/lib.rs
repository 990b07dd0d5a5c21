//! The Edge Connector: runs next to a tenant's own mail server (Proton Mail
//! Bridge) and delivers the tenant's `email.send` tasks through it. It talks
//! to FleetPrompt over HTTP with its own `fpe_…` token and never touches the
//! database.
//!
//! # Layout
//! - [`config`]: flags and `FLEETPROMPT_EDGE_*` variables, validated once.
//! - [`api`]: the server's `/edge/v1` API (heartbeat, claim, result).
//! - [`mail`]: composing and sending one email; SMTP outcome → task outcome.
//! - [`imap`]: the reply watch: replies to our emails, found over IMAP
//!   (IDLE), reported to the server, marked seen.
//! - [`run`] (this file): the heartbeat loop and the claim–send–report loop,
//!   until shutdown.
//!
//! What it survives: the server being away (it keeps retrying, with
//! backoff; tasks wait in the server's queue), the SMTP server being away
//! (each attempt is reported `retry`, and the server backs off), and its own
//! crash mid-send (the task's lease runs out and it is attempted again, with
//! the same `Message-ID`).

pub mod api;
pub mod config;
pub mod imap;
pub mod mail;

use std::time::Duration;

use tokio::sync::watch;

use crate::api::{ApiError, Client, Task, TaskResult};
use crate::config::Config;

/// The task kinds this connector runs.
pub const KINDS: &[&str] = &["email.send"];

/// Runs until `shutdown` turns true (then finishes the emails in hand and
/// returns `Ok`), or until the server refuses the token (`Err`).
pub async fn run(config: Config, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let client = Client::new(&config)?;
    let smtp = mail::transport(&config)?;
    // A refused token at start is a configuration error: say so and stop.
    match client.heartbeat().await {
        Ok(v) => {
            tracing::info!(connector = %v["connector_id"], server = %config.server_url, "connected")
        }
        Err(ApiError::Unauthorized) => return Err(ApiError::Unauthorized.into()),
        Err(e) => tracing::warn!(error = %e, "first heartbeat failed; retrying in the background"),
    }
    let heartbeats = tokio::spawn(heartbeat_loop(
        client.clone(),
        config.heartbeat,
        shutdown.clone(),
    ));
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
        let claimed = tokio::select! {
            r = client.claim(KINDS, config.batch, config.wait, config.lease) => r,
            // A claim cut short may have leased tasks: they go back to the
            // queue when their lease runs out.
            _ = shutdown.changed() => break Ok(()),
        };
        match claimed {
            Ok(tasks) => {
                backoff = Duration::from_secs(1);
                for task in tasks {
                    if let Err(ApiError::Unauthorized) =
                        handle(&client, &smtp, &config, &task).await
                    {
                        break;
                    }
                }
            }
            Err(ApiError::Unauthorized) => break Err(ApiError::Unauthorized.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "claiming tasks failed");
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

/// Sends one task's email and reports the outcome, retrying the report a
/// few times: a lost report only costs a repeated send after the lease.
async fn handle(
    client: &Client,
    smtp: &lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    config: &Config,
    task: &Task,
) -> Result<(), ApiError> {
    // Ids go into a URL path; the server's are `dir_<hex>`.
    if !task
        .id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        tracing::error!(task = %task.id, "ignoring a task with a malformed id");
        return Ok(());
    }
    let result = if KINDS.contains(&task.kind.as_str()) {
        mail::deliver(smtp, task, config).await
    } else {
        TaskResult {
            attempt: task.attempt,
            outcome: "failed",
            error: Some(format!("this connector does not run {:?}", task.kind)),
            external_ref: None,
            smtp_code: None,
            smtp_reply: None,
        }
    };
    tracing::info!(task = %task.id, attempt = task.attempt, outcome = result.outcome,
        smtp_code = ?result.smtp_code, error = ?result.error, "email task done");
    let mut last = None;
    for delay in [0u64, 500, 2000, 5000] {
        tokio::time::sleep(Duration::from_millis(delay)).await;
        match client.report(&task.id, &result).await {
            Ok(()) => return Ok(()),
            Err(e @ (ApiError::Unauthorized | ApiError::Status { .. })) => {
                // 401, or 404/409 (reaped, finished): retrying cannot help.
                tracing::warn!(task = %task.id, error = %e, "the server did not take the result");
                return Err(e);
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::warn!(task = %task.id, error = %e, "could not report the result; the task will run again after its lease");
    }
    Ok(())
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
