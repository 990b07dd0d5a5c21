//! Ends conversations that have been idle longer than their site allows,
//! recording `webchat.session.ended` for each.

use std::sync::Arc;
use std::time::Duration;

use crate::store::conversation;
use fleetprompt_core::time::now_ms;
use tokio::sync::watch;

use crate::count_signals;
use crate::error::WebchatError;
use crate::ingest::{Ending, end_conversation};
use fleetprompt_engine::Engine;

/// One pass; returns how many conversations it ended.
pub async fn sweep_once(engine: &Engine) -> Result<usize, WebchatError> {
    let now = now_ms();
    let idle = conversation::idle(engine.db(), now, 500).await?;
    let mut ended = 0;
    for (tenant, c) in idle {
        let mut tx = engine.db().begin().await?;
        if end_conversation(
            engine,
            &mut tx,
            tenant,
            Ending {
                site: c.site_id,
                visitor: c.visitor_id,
                id: c.id,
                reason: "idle",
            },
            now,
        )
        .await?
        {
            tx.commit().await?;
            ended += 1;
        }
    }
    if ended > 0 {
        count_signals(&vec!["webchat.session.ended"; ended]);
        tracing::debug!(ended, "idle conversations ended");
    }
    Ok(ended)
}

/// Sweeps every `interval` until shutdown. On several nodes each sweeps;
/// the conditional end (`status = 'open'`) and the signal's dedupe key make
/// a conversation end once.
pub async fn run(engine: Arc<Engine>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = sweep_once(&engine).await {
            tracing::warn!(error = %e, "ending idle conversations failed");
        }
    }
}
