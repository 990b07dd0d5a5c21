//! Background upkeep: the lease reaper, queue and edge connector gauges, and
//! PostgreSQL LISTEN.

use std::sync::Arc;
use std::time::Duration;

use fleetprompt_core::AttemptOutcome;
use fleetprompt_core::time::now_ms;
use fleetprompt_store::notice::{self, Notice};
use fleetprompt_store::queue::{self, Claimed, Completion};
use tokio::sync::watch;

use crate::{Engine, EngineError, metrics};

/// Frees the leases of vanished workers: each such directive gets a
/// `lease_expired` attempt and goes back to pending (or to failed when it has
/// no attempts left). Returns how many were reaped.
pub async fn reap_once(engine: &Engine) -> Result<usize, EngineError> {
    let now = now_ms();
    let expired = queue::expired_leases(engine.db(), now, 500).await?;
    if expired.is_empty() {
        return Ok(0);
    }
    let batch: Vec<Completion> = expired
        .iter()
        .map(|e| {
            let last = e.attempt >= e.max_attempts;
            let error = format!("lease expired: worker {} stopped answering", e.worker);
            let mut c = Completion {
                tenant: e.tenant,
                id: e.id,
                attempt: e.attempt,
                worker: e.worker.clone(),
                started_at: e.claimed_at,
                finished_at: now,
                outcome: if last {
                    AttemptOutcome::Failed
                } else {
                    AttemptOutcome::LeaseExpired
                },
                error: Some(error),
                http_status: None,
                external_ref: None,
                next_attempt_at: (!last).then_some(now),
                result: None,
                signal: None,
            };
            if last {
                let claimed = Claimed {
                    tenant: e.tenant,
                    id: e.id,
                    kind: e.kind.clone(),
                    args: serde_json::Value::Null,
                    dedupe_key: String::new(),
                    subject: e.subject.clone(),
                    attempt: e.attempt,
                    max_attempts: e.max_attempts,
                    retry_policy: Default::default(),
                    caused_by: None,
                    destination: None,
                };
                let subject = e
                    .subject
                    .clone()
                    .unwrap_or_else(|| format!("directive:{}", e.id));
                c.signal = crate::worker::result_signal(engine, &claimed, &subject, &c);
            }
            c
        })
        .collect();
    let mut tx = engine.db().begin().await?;
    let applied = queue::complete(&mut tx, &batch).await?;
    crate::worker::route_result_signals(engine, &mut tx, &batch, &applied).await?;
    tx.commit().await?;
    let mut n = 0;
    for (e, a) in expired.iter().zip(applied) {
        if a {
            n += 1;
            metrics::lease_expired(&e.kind);
            tracing::warn!(directive = %e.id, worker = %e.worker, attempt = e.attempt, "lease expired; directive reclaimed");
        }
    }
    Ok(n)
}

/// Gives back the leases this process still holds (attempts its drain
/// deadline cut short) and reaps them at once, so they run again on another
/// node now rather than when their leases would have run out. Returns how
/// many were released.
pub async fn release_own_leases(engine: &Engine) -> Result<u64, EngineError> {
    let released =
        queue::release_leases(engine.db(), &engine.config().worker_name, now_ms()).await?;
    if released > 0 {
        // Each pass takes at most 500; a node holds at most its concurrency.
        while reap_once(engine).await? > 0 {}
    }
    Ok(released)
}

/// How often the tables that grew are analyzed (PostgreSQL). A statement's
/// plan, cached per connection, is made again only when a table it reads is
/// analyzed; a new database under load doubles its tables every second or
/// so, and plans made while they were empty (lookups that read every row of
/// the tenant) must not outlive that by much.
const STATISTICS_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the reaper, the queue gauges and the statistics until shutdown.
pub async fn run(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    let mut reap = tokio::time::interval(engine.config().reap_interval);
    let mut statistics = tokio::time::interval(STATISTICS_INTERVAL);
    let growing: Vec<&'static str> = engine
        .packages()
        .flat_map(|p| p.growing_tables().iter().copied())
        .collect();
    for tick in [&mut reap, &mut statistics] {
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    loop {
        tokio::select! {
            _ = reap.tick() => {
                if let Err(e) = reap_once(&engine).await {
                    tracing::error!(error = %e, "reaping expired leases failed");
                }
                refresh_gauges(&engine).await;
            }
            _ = statistics.tick() => {
                match fleetprompt_store::statistics::analyze_grown_with(engine.db(), &growing).await {
                    Ok(tables) if !tables.is_empty() => {
                        tracing::debug!(?tables, "analyzed tables that grew");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "analyzing grown tables failed"),
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Reads the queue's depth into the gauges.
pub async fn refresh_gauges(engine: &Engine) {
    match (
        queue::backlog(engine.db()).await,
        queue::failed_count(engine.db()).await,
    ) {
        (Ok((pending, oldest)), Ok(failed)) => metrics::backlog(pending, failed, oldest),
        (Err(e), _) | (_, Err(e)) => tracing::warn!(error = %e, "reading queue gauges failed"),
    }
    match queue::edge_backlog(engine.db()).await {
        Ok((pending, _)) => metrics::edge_backlog(pending),
        Err(e) => tracing::warn!(error = %e, "reading the edge task backlog failed"),
    }
    // From the database, not from the heartbeat handler, so every node
    // reports every connector whichever node its heartbeats reach.
    match fleetprompt_store::edge::last_seen_all(engine.db()).await {
        Ok(seen) => {
            for (id, at) in seen {
                metrics::edge_last_seen(&id.to_string(), at);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading edge connector last-seen times failed"),
    }
}

/// On PostgreSQL, wakes this node's worker when another node commits due
/// work, and marks cached sites and destinations stale when another node
/// changes one. Reconnects after errors; the worker's poll covers the gap,
/// and cached configuration is marked stale on every (re)connect, since a
/// notice may have been missed meanwhile.
pub async fn listen(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let mut listener = match notice::listen(engine.db()).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "LISTEN failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = shutdown.changed() => return,
                }
            }
        };
        engine.db().config_changed();
        loop {
            tokio::select! {
                n = listener.recv() => match n {
                    Ok(Notice::ConfigChanged) => engine.db().config_changed(),
                    Ok(Notice::WorkDue) => engine.db().wake_workers(),
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}
