//! Directives as apalis jobs over our own table.
//!
//! [`DirectiveBackend`] is an apalis [`Backend`]: it claims due directives in
//! batches under a lease (never more than the free concurrency slots, so no
//! claimed row waits in memory while its lease runs down), and sleeps on the
//! in-process wake-up, PostgreSQL NOTIFY, or a short poll for delayed retries.
//! Claims are shaped by the [`Flows`]: tenants share each batch, and each
//! destination stays within its cap and its circuit breaker. A heartbeat
//! renews the leases of everything claimed and not yet completed, every
//! third of the lease, so a lease can be short (a dead node's work is taken
//! over soon) while a slow attempt keeps its own.
//! The worker service runs the handler, then hands the outcome to the
//! [`completer`], which writes many attempts, statuses and result signals in
//! one transaction (group commit) before the service returns.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis::layers::catch_panic::CatchPanicLayer;
use apalis::prelude::WorkerBuilderExt;
use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::AbortError;
use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::RandomId;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{AttemptOutcome, NewSignal};
use fleetprompt_core::{DirectiveId, TenantId};
use fleetprompt_store::queue::{self, ClaimShape, Claimed, Completion, Held};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tower::layer::util::Identity;

use crate::flow::{AfterAttempt, Flows, Health};
use crate::{Engine, EngineError, Outcome, metrics};

/// State shared by the backend, the service and the completer.
pub struct WorkerRuntime {
    engine: Arc<Engine>,
    /// Claimed and not yet completed, buffered ones included.
    in_flight: AtomicUsize,
    /// Woken when a slot frees up, so a full worker claims again at once.
    slot_freed: Notify,
    completions: mpsc::Sender<(Completion, oneshot::Sender<bool>)>,
    /// Claimed and not yet completed: the leases the heartbeat renews.
    held: std::sync::Mutex<HashMap<DirectiveId, Held>>,
    /// Per-destination caps and circuit breakers.
    flows: Flows,
}

impl WorkerRuntime {
    fn hold(&self, c: &Claimed) {
        self.held.lock().expect("held lock").insert(
            c.id,
            Held {
                tenant: c.tenant,
                id: c.id,
                attempt: c.attempt,
            },
        );
    }

    fn release(&self, id: DirectiveId) {
        self.held.lock().expect("held lock").remove(&id);
    }

    fn held(&self) -> Vec<Held> {
        self.held
            .lock()
            .expect("held lock")
            .values()
            .copied()
            .collect()
    }
}

impl std::fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRuntime")
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The apalis backend over the directive table.
pub struct DirectiveBackend {
    claims: BoxStream<'static, Result<Task<Claimed>, EngineError>>,
}

impl DirectiveBackend {
    fn new(rt: Arc<WorkerRuntime>, shutdown: watch::Receiver<bool>) -> Self {
        Self {
            claims: claim_stream(rt, shutdown).boxed(),
        }
    }
}

impl Backend for DirectiveBackend {
    type Task = Task<Claimed>;
    type Error = EngineError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.claims.poll_next_unpin(cx)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for DirectiveBackend {
    type Args = Claimed;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        Identity::new()
    }
}

struct ClaimState {
    rt: Arc<WorkerRuntime>,
    shutdown: watch::Receiver<bool>,
    buffer: VecDeque<Claimed>,
}

/// Yields claimed directives, claiming only as many as there are free slots.
fn claim_stream(
    rt: Arc<WorkerRuntime>,
    shutdown: watch::Receiver<bool>,
) -> impl futures::Stream<Item = Result<Task<Claimed>, EngineError>> {
    let state = ClaimState {
        rt,
        shutdown,
        buffer: VecDeque::new(),
    };
    // Each step runs in a task of its own: apalis stops polling this stream
    // the moment shutdown begins, and a step cut off in the middle of a
    // claim would hold its transaction (on SQLite, the one writer
    // connection) until the worker is dropped, stalling every write of the
    // shutdown. A spawned step runs to its end whether or not it is awaited.
    futures::stream::unfold(state, |mut s| async move {
        if let Some(c) = s.buffer.pop_front() {
            return Some((Ok(task_of(c)), s));
        }
        match tokio::spawn(next_claim(s)).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "a claim step panicked; the worker restarts");
                None
            }
        }
    })
}

/// The apalis task of a claim. Its id is the directive id, so apalis's
/// spans name it.
fn task_of(c: Claimed) -> Task<Claimed> {
    let id = TaskId::String(c.id.to_string());
    TaskBuilder::new(c).task_id(id).build()
}

type ClaimStep = Option<(Result<Task<Claimed>, EngineError>, ClaimState)>;

/// Claims until there is a directive to hand to apalis, or shutdown.
async fn next_claim(mut s: ClaimState) -> ClaimStep {
    loop {
        if let Some(c) = s.buffer.pop_front() {
            return Some((Ok(task_of(c)), s));
        }
        if *s.shutdown.borrow() {
            return None;
        }
        let cfg = s.rt.engine.config();
        let in_flight = s.rt.in_flight.load(Ordering::Acquire);
        let free = cfg.concurrency.saturating_sub(in_flight);
        if free == 0 {
            tokio::select! {
                _ = s.rt.slot_freed.notified() => {}
                _ = s.shutdown.changed() => {}
            }
            continue;
        }
        let limit = free.min(cfg.claim_batch) as i64;
        let (rooms, probes) = s.rt.flows.rooms();
        for (tenant, destination) in probes {
            // A half-open breaker needs one due directive to probe with;
            // its retries may all be backed off far into the future.
            if let Err(e) =
                queue::pull_forward(s.rt.engine.db(), tenant, &destination, Some(1)).await
            {
                tracing::warn!(error = %e, "making a breaker's probe due failed");
            }
        }
        let shape = ClaimShape {
            // A quarter more than the batch: room for the tenants just
            // behind another's burst to get their share, at a cost the
            // engine benchmark does not see (docs/benchmarks.md).
            window: limit + limit / 4 + 1,
            default_room: s.rt.flows.default_room(),
            rooms: &rooms,
        };
        match queue::claim(
            s.rt.engine.db(),
            &cfg.worker_name,
            cfg.lease.as_millis() as i64,
            limit,
            shape,
        )
        .await
        {
            Ok(claimed) if !claimed.is_empty() => {
                metrics::claimed(claimed.len());
                let n = s.rt.in_flight.fetch_add(claimed.len(), Ordering::AcqRel) + claimed.len();
                metrics::in_flight(n);
                let mut back = Vec::new();
                for c in claimed {
                    s.rt.hold(&c);
                    if let Some(dest) = &c.destination {
                        if !s.rt.flows.knows(c.tenant, dest) {
                            let cap = destination_cap(&s.rt.engine, c.tenant, dest).await;
                            s.rt.flows.set_cap(c.tenant, dest, cap);
                        }
                        if !s.rt.flows.take(c.tenant, dest) {
                            back.push(c);
                            continue;
                        }
                    }
                    s.buffer.push_back(c);
                }
                if !back.is_empty() {
                    hand_back(&s.rt, &back).await;
                }
            }
            Ok(_) => {
                // Set while idle too: a gauge left unset for a minute is
                // dropped from /metrics (see `install_metrics`).
                metrics::in_flight(in_flight);
                metrics::breakers_open(s.rt.flows.open_breakers());
                tokio::select! {
                    _ = s.rt.engine.db().work_available() => {}
                    _ = tokio::time::sleep(cfg.poll_interval) => {}
                    _ = s.shutdown.changed() => {}
                }
            }
            Err(e) => {
                // A database hiccup must not end the worker: log, back off, go on.
                tracing::error!(error = %e, "claiming directives failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = s.shutdown.changed() => {}
                }
            }
        }
    }
}

/// A destination's own cap (`max_in_flight` in its configuration), if it
/// has one.
async fn destination_cap(engine: &Engine, tenant: TenantId, name: &str) -> Option<usize> {
    crate::destination::find(engine, tenant, name)
        .await
        .ok()?
        .public_config
        .get("max_in_flight")?
        .as_u64()
        .map(|n| n as usize)
}

/// Hands claims the flows refused back to the queue, unattempted. A claim
/// that cannot be handed back runs out its lease and is reaped.
async fn hand_back(rt: &WorkerRuntime, back: &[Claimed]) {
    let held: Vec<Held> = back
        .iter()
        .map(|c| Held {
            tenant: c.tenant,
            id: c.id,
            attempt: c.attempt,
        })
        .collect();
    let engine = &rt.engine;
    match queue::unclaim(engine.db(), &engine.config().worker_name, &held).await {
        Ok(_) => metrics::unclaimed(held.len()),
        Err(e) => {
            tracing::warn!(error = %e, "handing claims back failed; their leases will expire")
        }
    }
    for c in back {
        rt.release(c.id);
    }
    let left = rt.in_flight.fetch_sub(back.len(), Ordering::AcqRel) - back.len();
    metrics::in_flight(left);
}

/// Counts an attempt's end against its destination: a breaker may open, or
/// close, in which case the destination's queued retries are made due now.
async fn count_for_destination(rt: &WorkerRuntime, d: &Claimed, health: Health) {
    let Some(dest) = &d.destination else {
        return;
    };
    match rt.flows.finished(d.tenant, dest, health) {
        AfterAttempt::Nothing => {}
        AfterAttempt::Opened => {
            metrics::breaker_opened();
            tracing::warn!(tenant = %d.tenant, destination = %dest, "destination keeps failing; circuit breaker open, its directives are deferred");
        }
        AfterAttempt::Recovered => {
            match queue::pull_forward(rt.engine.db(), d.tenant, dest, None).await {
                Ok(n) => {
                    tracing::info!(tenant = %d.tenant, destination = %dest, retries = n, "destination recovered; circuit breaker closed, its queued retries made due")
                }
                Err(e) => {
                    tracing::warn!(error = %e, destination = %dest, "making a recovered destination's retries due failed")
                }
            }
        }
    }
    metrics::breakers_open(rt.flows.open_breakers());
}

/// Renews the leases of everything claimed and not yet completed, every
/// third of the lease, until the runtime is dropped.
async fn heartbeat(rt: std::sync::Weak<WorkerRuntime>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(rt) = rt.upgrade() else {
            return;
        };
        let held = rt.held();
        let cfg = rt.engine.config();
        if let Err(e) = queue::renew(
            rt.engine.db(),
            &cfg.worker_name,
            cfg.lease.as_millis() as i64,
            &held,
        )
        .await
        {
            tracing::warn!(error = %e, leases = held.len(), "renewing leases failed");
        }
    }
}

/// What one attempt did, for the metrics layer.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    kind: String,
    outcome: AttemptOutcome,
    duration: Duration,
    retry_delay: Option<Duration>,
}

/// The worker service: runs one attempt and waits for its completion to commit.
async fn run_directive(
    d: Claimed,
    rt: Data<Arc<WorkerRuntime>>,
) -> Result<AttemptReport, BoxDynError> {
    let engine = &rt.engine;
    let started_at = now_ms();
    let clock = Instant::now();
    let outcome = match engine.handlers().get(&d.kind) {
        None => Outcome::fail(format!(
            "no handler for directive kind {:?} in this version",
            d.kind
        )),
        Some(h) => {
            let run = AssertUnwindSafe(h.execute(engine, &d)).catch_unwind();
            match tokio::time::timeout(engine.config().handler_timeout, run).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => Outcome::fail("handler panicked"),
                Err(_) => Outcome::Retry {
                    error: format!(
                        "handler timed out after {:?}",
                        engine.config().handler_timeout
                    ),
                    http_status: None,
                    retry_after: None,
                },
            }
        }
    };
    let duration = clock.elapsed();
    let health = Health::of(&outcome);
    let (completion, retry_delay) = completion_of(engine, &d, started_at, outcome);
    let report = AttemptReport {
        kind: d.kind.clone(),
        outcome: completion.outcome,
        duration,
        retry_delay,
    };
    let (reply, written) = oneshot::channel();
    let sent = rt.completions.send((completion, reply)).await.is_ok();
    let committed = sent && written.await.unwrap_or(false);
    rt.release(d.id);
    count_for_destination(&rt, &d, health).await;
    let left = rt.in_flight.fetch_sub(1, Ordering::AcqRel) - 1;
    metrics::in_flight(left);
    rt.slot_freed.notify_one();
    if committed {
        Ok(report)
    } else {
        // The lease will expire and another attempt will run: at-least-once.
        Err(format!("completion of {} was not written", d.id).into())
    }
}

/// Turns a handler outcome into the row changes of its completion. Edge
/// Connectors' reported outcomes go through here too, so both lanes share
/// retry, backoff and result-signal rules.
pub(crate) fn completion_of(
    engine: &Engine,
    d: &Claimed,
    started_at: i64,
    outcome: Outcome,
) -> (Completion, Option<Duration>) {
    let finished_at = now_ms();
    let subject = d
        .subject
        .clone()
        .unwrap_or_else(|| format!("directive:{}", d.id));
    let mut c = Completion {
        tenant: d.tenant,
        id: d.id,
        attempt: d.attempt,
        worker: engine.config().worker_name.clone(),
        started_at,
        finished_at,
        outcome: AttemptOutcome::Succeeded,
        error: None,
        http_status: None,
        external_ref: None,
        next_attempt_at: None,
        result: None,
        signal: None,
    };
    let mut retry_delay = None;
    match outcome {
        Outcome::Succeeded {
            result,
            http_status,
            external_ref,
        } => {
            c.http_status = http_status.map(i32::from);
            c.external_ref = external_ref;
            c.result = Some(result);
        }
        Outcome::Retry {
            error,
            http_status,
            retry_after,
        } if d.attempt < d.max_attempts => {
            let delay = retry_after.unwrap_or_else(|| d.retry_policy.delay_after(d.attempt as u32));
            c.outcome = AttemptOutcome::Retrying;
            c.error = Some(error);
            c.http_status = http_status.map(i32::from);
            c.next_attempt_at = Some(finished_at + delay.as_millis() as i64);
            retry_delay = Some(delay);
        }
        Outcome::Retry {
            error, http_status, ..
        } => {
            c.outcome = AttemptOutcome::Failed;
            c.error = Some(format!(
                "{error} (attempt {} of {}, giving up)",
                d.attempt, d.max_attempts
            ));
            c.http_status = http_status.map(i32::from);
        }
        Outcome::Fail {
            error,
            http_status,
            external_ref,
        } => {
            c.outcome = AttemptOutcome::Failed;
            c.error = Some(error);
            c.http_status = http_status.map(i32::from);
            c.external_ref = external_ref;
        }
    }
    c.signal = result_signal(engine, d, &subject, &c);
    (c, retry_delay)
}

/// The signal that reports a directive's end, caused by the directive:
/// `directive.succeeded` / `directive.failed`, or the kind's own pair when
/// its handler names one (a package's `<noun>.notified` / `.failed` …).
pub(crate) fn result_signal(
    engine: &Engine,
    d: &Claimed,
    subject: &str,
    c: &Completion,
) -> Option<(fleetprompt_core::SignalId, NewSignal)> {
    let types = engine
        .handlers()
        .get(&d.kind)
        .map(|h| h.result_signals())
        .unwrap_or_default();
    let signal_type = match c.outcome {
        AttemptOutcome::Succeeded => types.succeeded,
        AttemptOutcome::Failed => types.failed,
        AttemptOutcome::Retrying | AttemptOutcome::LeaseExpired => return None,
    };
    let mut payload = json!({
        "directive_id": d.id,
        "kind": d.kind,
        "attempts": d.attempt,
        "dedupe_key": d.dedupe_key,
        "http_status": c.http_status,
        "external_ref": c.external_ref,
        "error": c.error,
    });
    // A receiver's error body could echo a credential back; such a body is
    // left out rather than let into a signal.
    if fleetprompt_core::signal::check_payload("payload", &payload).is_err() {
        payload["error"] = json!("(error text withheld: it looked like it held a credential)");
    }
    let mut s = NewSignal::new(
        signal_type,
        subject,
        payload,
        format!(
            "directive:{}:attempt:{}:{}",
            d.id,
            d.attempt,
            c.outcome.as_str()
        ),
        c.finished_at,
    )
    .ok()?;
    s.caused_by = Some(d.id);
    Some((fleetprompt_core::SignalId::new(), s))
}

type CompletionReceiver = mpsc::Receiver<(Completion, oneshot::Sender<bool>)>;

/// Writes completions in batches: whatever has queued up while the previous
/// transaction committed goes into the next one.
///
/// On PostgreSQL several completers write at once (each batch on its own
/// connection); SQLite has one writer, so one completer.
async fn completer(engine: Arc<Engine>, rx: Arc<tokio::sync::Mutex<CompletionReceiver>>) {
    let max = engine.config().complete_batch;
    let mut batch = Vec::with_capacity(max);
    loop {
        // Holding the lock only while receiving lets the next completer
        // gather a batch while this one writes.
        let got = rx.lock().await.recv_many(&mut batch, max).await;
        if got == 0 {
            return;
        }
        let (completions, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        metrics::completed_batch(completions.len());
        let written = write_completions(&engine, &completions).await;
        for (i, reply) in replies.into_iter().enumerate() {
            let ok = written.as_ref().map(|w| w[i]).unwrap_or(false);
            let _ = reply.send(ok);
        }
    }
}

/// Writes a batch of completions (attempt rows, statuses, result signals
/// routed in the same transaction), retrying transient database failures.
/// Returns, per completion, whether it still held its lease.
pub(crate) async fn write_completions(
    engine: &Engine,
    batch: &[Completion],
) -> Result<Vec<bool>, EngineError> {
    let mut last_err = None;
    // A transient failure (a lost connection, a serialization failure) is
    // retried a few times before the attempts are left to their leases.
    for backoff in [0u64, 50, 250, 1000] {
        if backoff > 0 {
            tokio::time::sleep(Duration::from_millis(backoff)).await;
        }
        let result = async {
            let mut tx = engine.db().begin().await?;
            let applied = queue::complete(&mut tx, batch).await?;
            route_result_signals(engine, &mut tx, batch, &applied).await?;
            tx.commit().await?;
            Ok::<_, EngineError>(applied)
        }
        .await;
        match result {
            Ok(applied) => {
                for (c, a) in batch.iter().zip(&applied) {
                    if !a {
                        tracing::warn!(directive = %c.id, attempt = c.attempt, "attempt finished after its lease was taken over; outcome dropped");
                    }
                }
                return Ok(applied);
            }
            Err(e) => {
                tracing::error!(error = %e, size = batch.len(), "writing directive completions failed");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.expect("at least one try ran"))
}

/// Result signals are routed like any signal, in the completion's transaction.
pub(crate) async fn route_result_signals(
    engine: &Engine,
    tx: &mut fleetprompt_store::Tx,
    batch: &[Completion],
    applied: &[bool],
) -> Result<(), EngineError> {
    record_also_signals(engine, tx, batch, applied).await?;
    if engine.rules().current().is_empty() {
        return Ok(());
    }
    let views: Vec<(fleetprompt_core::TenantId, crate::routing::SignalView<'_>)> = batch
        .iter()
        .zip(applied)
        .filter(|(_, a)| **a)
        .filter_map(|(c, _)| {
            let (id, s) = c.signal.as_ref()?;
            Some((c.tenant, crate::routing::SignalView::of(*id, s)))
        })
        .collect();
    engine.route_signals(tx, &views, false).await?;
    Ok(())
}

/// The second result signal of each applied completion whose kind names
/// one ([`crate::Handler::also_result_signals`]): the same payload under the
/// other type, recorded and routed in the completion's transaction.
async fn record_also_signals(
    engine: &Engine,
    tx: &mut fleetprompt_store::Tx,
    batch: &[Completion],
    applied: &[bool],
) -> Result<(), EngineError> {
    for (c, _) in batch.iter().zip(applied).filter(|(_, a)| **a) {
        let Some((_, first)) = c.signal.as_ref() else {
            continue;
        };
        let Some(kind) = first.payload.get("kind").and_then(Value::as_str) else {
            continue;
        };
        let Some(also) = engine
            .handlers()
            .get(kind)
            .and_then(|h| h.also_result_signals())
        else {
            continue;
        };
        let signal_type = if c.outcome == AttemptOutcome::Succeeded {
            also.succeeded
        } else {
            also.failed
        };
        let mut s = NewSignal::new(
            signal_type,
            first.subject.as_str(),
            first.payload.clone(),
            format!("{}:{signal_type}", first.dedupe_key),
            first.occurred_at,
        )?;
        s.caused_by = first.caused_by;
        engine.record_in_tx(tx, c.tenant, &s).await?;
    }
    Ok(())
}

/// A tower layer that records attempt metrics from the service's reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptMetricsLayer;

impl<S> tower::Layer<S> for AttemptMetricsLayer {
    type Service = AttemptMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AttemptMetrics { inner }
    }
}

/// See [`AttemptMetricsLayer`].
#[derive(Debug, Clone)]
pub struct AttemptMetrics<S> {
    inner: S,
}

impl<S, Req> tower::Service<Req> for AttemptMetrics<S>
where
    S: tower::Service<Req, Response = AttemptReport>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<(), S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        async move {
            let report = fut.await?;
            metrics::attempt(&report.kind, report.outcome.as_str(), report.duration);
            if let Some(delay) = report.retry_delay {
                metrics::retry_scheduled(&report.kind, delay);
            }
            Ok(())
        }
        .boxed()
    }
}

/// Our handlers catch their own panics and record them as failed attempts;
/// this is the last line of defence for a panic in the service around them.
/// Generic over the trait object's lifetime, unlike apalis's default handler
/// (a `fn` pointer fixed to `'static`), so the worker future stays `Send`.
fn on_panic<'a>(_: &Box<dyn std::any::Any + Send + 'a>) -> AbortError {
    AbortError::new("the directive worker service panicked")
}

/// Runs this process's directive worker until `shutdown` turns true, then
/// finishes the attempts in flight.
pub async fn run(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Result<(), EngineError> {
    let (tx, rx) = mpsc::channel(engine.config().concurrency * 2 + 16);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let writers = match engine.db().backend() {
        fleetprompt_store::Backend::Sqlite => 1,
        fleetprompt_store::Backend::Postgres => engine.config().pg_completers.max(1),
    };
    let completers: Vec<_> = (0..writers)
        .map(|_| tokio::spawn(completer(engine.clone(), rx.clone())))
        .collect();
    let rt = Arc::new(WorkerRuntime {
        engine: engine.clone(),
        in_flight: AtomicUsize::new(0),
        slot_freed: Notify::new(),
        completions: tx,
        held: std::sync::Mutex::new(HashMap::new()),
        flows: Flows::new(engine.config().flow),
    });
    let beat = tokio::spawn(heartbeat(
        Arc::downgrade(&rt),
        (engine.config().lease / 3).max(Duration::from_millis(100)),
    ));
    let backend = DirectiveBackend::new(rt.clone(), shutdown.clone());
    let worker = WorkerBuilder::new(engine.config().worker_name.clone())
        .backend(backend)
        .data(rt.clone())
        .concurrency(engine.config().concurrency)
        .timeout(engine.config().handler_timeout + Duration::from_secs(5))
        .enable_tracing()
        .layer(CatchPanicLayer::with_panic_handler(on_panic))
        .layer(AttemptMetricsLayer)
        .build(run_directive);
    tracing::info!(worker = %engine.config().worker_name, concurrency = engine.config().concurrency, "directive worker started");
    // Stopping the worker context lets apalis drain the attempts in flight.
    let mut stop = shutdown;
    let result = worker
        .run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), std::io::Error>(())
        })
        .await;
    beat.abort();
    drop(rt);
    for c in completers {
        let _ = c.await;
    }
    result.map_err(|e| EngineError::InvalidState(format!("directive worker stopped: {e}")))
}

/// Runs the worker and restarts it if it ever ends (a database error or a
/// panic) before shutdown. Attempts of a crashed run are recovered by the
/// reaper when their leases expire.
pub async fn supervise(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) {
    loop {
        // In a JoinSet, so that aborting this task (the drain deadline)
        // aborts the run too, and its attempts with it, instead of leaving
        // them running, detached, past the process's last writes.
        let mut run = tokio::task::JoinSet::new();
        run.spawn(self::run(engine.clone(), shutdown.clone()));
        let ended = run.join_next().await.expect("one task was spawned");
        match ended {
            Ok(Ok(())) if *shutdown.borrow() => return,
            Ok(Ok(())) => tracing::error!("directive worker ended unexpectedly; restarting"),
            Ok(Err(e)) => tracing::error!(error = %e, "directive worker failed; restarting"),
            Err(e) => tracing::error!(error = %e, "directive worker panicked; restarting"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
