//! What a visitor does: send messages, give contact details, close the
//! chat, read the history. Each state change and its signals commit in one
//! transaction.

use crate::store::conversation::{self, ConversationRow, VisitorKey};
use crate::store::message::{self, MessageRow, Role};
use crate::store::site::SiteRow;
use crate::store::{batch, identity};
use crate::types::id::{ConversationId, MessageId, SiteId, VisitorId};
use crate::types::token::Claims;
use crate::types::visitor::check_email;
use fleetprompt_core::NewSignal;
use fleetprompt_core::time::{Millis, now_ms};
use fleetprompt_core::{SignalId, TenantId};
use fleetprompt_store::db::OwnPool;
use fleetprompt_store::{StoreError, Tx};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

use crate::error::{WebchatError, invalid};
use crate::settings::SiteSettings;
use crate::{conversation_subject, count_signals};
use fleetprompt_engine::{Engine, EngineError, routing};

/// What a message ingest did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The message.
    pub message_id: MessageId,
    /// Its conversation.
    pub conversation_id: ConversationId,
    /// Whether this `client_message_id` had been accepted before (nothing
    /// new was written).
    pub duplicate: bool,
}

/// A message as the widget sends it.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The widget's id for the message (a UUID), kept across retries.
    pub client_message_id: &'a str,
    /// The text.
    pub content: &'a str,
    /// The page it was sent from.
    pub page_url: Option<&'a str>,
}

/// Puts `content` into a payload with any credential in it redacted
/// ([`fleetprompt_core::credential`]); should the payload still not pass
/// the signal checks, the signal says the text was withheld instead.
pub(crate) fn with_content(mut payload: Value, content: &str) -> Value {
    payload["content"] = json!(fleetprompt_core::credential::redact(content));
    if fleetprompt_core::signal::check_payload("payload", &payload).is_err() {
        payload["content"] = json!("(withheld from the signal: it looked like a credential)");
        payload["content_withheld"] = json!(true);
    }
    payload
}

/// A page URL without its query string or fragment, which may carry
/// personal data or one-time tokens.
fn clean_page_url(url: &str) -> Result<String, WebchatError> {
    let base = url.split(['?', '#']).next().unwrap_or("");
    if base.len() > 2048 || !(base.starts_with("https://") || base.starts_with("http://")) {
        return Err(invalid(
            "page_url",
            "must be an http(s) URL of at most 2048 bytes",
        ));
    }
    if base.chars().any(char::is_control) {
        return Err(invalid("page_url", "may not contain control characters"));
    }
    Ok(base.to_owned())
}

/// A unique key already held: on ingest, only another writer's row for
/// the same message (the store reports it as a conflict).
fn is_unique_violation(e: &WebchatError) -> bool {
    matches!(e, WebchatError::Engine(EngineError::Conflict(_)))
}

/// The outage a failed batch met (the database unreachable or full), which
/// every message of the batch shares.
fn outage(e: &WebchatError) -> Option<StoreError> {
    match e {
        WebchatError::Engine(EngineError::Store(s)) => s.outage(),
        _ => None,
    }
}

fn signal_of(
    kind: &str,
    subject: &str,
    payload: Value,
    dedupe: String,
    at: Millis,
) -> Result<NewSignal, WebchatError> {
    Ok(NewSignal::new(kind, subject, payload, dedupe, at)?)
}

/// Stores a visitor's message. The first message of a conversation opens it
/// (`webchat.session.started`); every message records
/// `webchat.message.received`. A repeated `client_message_id` returns the
/// first ids and writes nothing.
pub async fn send_message(
    engine: &Engine,
    site: &SiteRow,
    claims: &Claims,
    m: Incoming<'_>,
) -> Result<Accepted, WebchatError> {
    let settings = SiteSettings::from_stored(&site.settings);
    let limit = settings.max_message_bytes as usize;
    if m.content.len() > limit {
        return Err(WebchatError::TooLarge {
            size: m.content.len(),
            limit,
        });
    }
    if m.content.trim().is_empty() {
        return Err(invalid("content", "may not be empty"));
    }
    if uuid::Uuid::try_parse(m.client_message_id).is_err() {
        return Err(invalid("client_message_id", "must be a UUID"));
    }
    let page_url = m.page_url.map(clean_page_url).transpose()?;
    // A visitor who pastes a token (theirs or ours) should not have it kept:
    // it is redacted before anything is stored, message row included.
    let job = Job {
        site: site.clone(),
        claims: *claims,
        client_message_id: m.client_message_id.to_owned(),
        content: fleetprompt_core::credential::redact(m.content).into_owned(),
        page_url,
        spam_score: crate::spam::score(site.id, m.content, now_ms()),
    };
    let tenant = site.tenant;
    let site_id = site.id;
    let accepted = crate::Webchat::of(engine)
        .ingest_queue(engine)
        .submit(engine, job)
        .await?;
    if !accepted.duplicate {
        // After the commit: an open inbox hears of the message.
        crate::live::hub().publish_tenant(
            tenant,
            &crate::live::InboxEvent::message(accepted.conversation_id, site_id, "visitor"),
        );
    }
    Ok(accepted)
}

/// A validated message waiting for its group commit.
pub(crate) struct Job {
    site: SiteRow,
    claims: Claims,
    client_message_id: String,
    content: String,
    page_url: Option<String>,
    /// Computed before the batch, from this node's recent texts.
    spam_score: u8,
}

impl Job {
    fn visitor_key(&self) -> VisitorKey {
        VisitorKey {
            tenant: self.site.tenant,
            site: self.site.id,
            visitor: self.claims.visitor,
        }
    }

    fn incoming(&self) -> Incoming<'_> {
        Incoming {
            client_message_id: &self.client_message_id,
            content: &self.content,
            page_url: self.page_url.as_deref(),
        }
    }
}

type Reply = oneshot::Sender<Result<Accepted, WebchatError>>;

/// Group commit of visitor messages: messages that arrive while a
/// transaction commits are written together in the next one, so a burst
/// costs one commit per batch instead of one per message. SQLite has one
/// writer, so one batch at a time; PostgreSQL runs several at once. Within a
/// batch, visitors are locked in a fixed order, so concurrent batches (on
/// this node or another) cannot deadlock.
pub(crate) struct IngestQueue {
    jobs: mpsc::Sender<(Job, Reply)>,
}

/// Most messages written in one transaction.
const BATCH: usize = 256;

impl IngestQueue {
    pub(crate) fn start(engine: Weak<Engine>, backend: fleetprompt_store::Backend) -> Self {
        let (jobs, rx) = mpsc::channel(BATCH * 8);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        // SQLite has one writer; PostgreSQL runs several batches at once,
        // and four keep each other's waits covered with batches still large
        // (with eight, a batch held 4.8 messages against 7.8 with four, and
        // PostgreSQL spent about a fifth more CPU per message).
        let batchers = match backend {
            fleetprompt_store::Backend::Sqlite => 1,
            fleetprompt_store::Backend::Postgres => 4,
        };
        // A batch is several round trips between the batcher and the
        // database (the SQLite writer's thread, or a PostgreSQL
        // connection). On the shared runtime every one of them waits its
        // turn behind the HTTP tasks queued there, so under a burst a batch
        // of one took 10-50 ms and the next batch grew and took longer
        // still. On a thread of its own the batcher answers at once; its
        // PostgreSQL connections are its own too, so their sockets are
        // polled by that thread.
        let own_thread = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| {
                let (engine, rx) = (engine.clone(), rx.clone());
                std::thread::Builder::new()
                    .name("fp-ingest".into())
                    .spawn(move || rt.block_on(run_batchers(engine, rx, batchers)))
            });
        if let Err(e) = own_thread {
            tracing::warn!(error = %e, "no thread for message ingest; sharing the runtime");
            tokio::spawn(run_batchers(engine, rx, batchers));
        }
        Self { jobs }
    }

    async fn submit(&self, engine: &Engine, job: Job) -> Result<Accepted, WebchatError> {
        let (reply, result) = oneshot::channel();
        if let Err(mpsc::error::SendError((job, _))) = self.jobs.send((job, reply)).await {
            // The queue is gone (shutting down): write it alone.
            return send_alone(engine, &job, None).await;
        }
        result.await.map_err(|_| {
            WebchatError::Engine(EngineError::InvalidState("message ingest stopped".into()))
        })?
    }
}

type Jobs = Arc<tokio::sync::Mutex<mpsc::Receiver<(Job, Reply)>>>;

/// Runs `n` batchers on the current runtime until the queue closes.
async fn run_batchers(engine: Weak<Engine>, rx: Jobs, n: usize) {
    let own = engine.upgrade().and_then(|e| e.db().own_pool(n as u32));
    let batchers: Vec<_> = (0..n)
        .map(|_| tokio::spawn(batcher(engine.clone(), rx.clone(), own.clone())))
        .collect();
    for b in batchers {
        let _ = b.await;
    }
    if let Some(own) = own {
        own.close().await;
    }
}

async fn batcher(engine: Weak<Engine>, rx: Jobs, own: Option<OwnPool>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if rx.lock().await.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        let Some(engine) = engine.upgrade() else {
            return;
        };
        // Stable: a visitor's messages keep their order.
        batch.sort_by_key(|(job, _)| job.visitor_key());
        let jobs: Vec<&Job> = batch.iter().map(|(job, _)| job).collect();
        match write_batch(&engine, &jobs, own.as_ref()).await {
            Ok(results) => {
                crate::ingest_batch(batch.len());
                for ((_, reply), r) in batch.drain(..).zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            // The database is down or full: every message would fail the
            // same way, each after its own wait, so all get the batch's
            // answer at once (503/507: the widget retries).
            Err(e) if let Some(o) = outage(&e) => {
                tracing::warn!(error = %e, messages = batch.len(), "batch write failed: database outage");
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(o
                        .outage()
                        .unwrap_or_else(|| StoreError::Unavailable("database outage".into()))
                        .into()));
                }
            }
            // One bad apple (a race with another node, say) must not fail the
            // others: write each alone, with its own error.
            Err(e) => {
                tracing::warn!(error = %e, messages = batch.len(), "batch write failed; writing its messages one by one");
                crate::ingest_fallback();
                for (job, reply) in batch.drain(..) {
                    let _ = reply.send(send_alone(&engine, &job, own.as_ref()).await);
                }
            }
        }
    }
}

/// Writes a batch in two steps, whatever its size ([`batch`]): lock the
/// visitors and find their earlier sends and open conversations, then write
/// every row. Any surprise (a dedupe key already taken, say) fails the
/// batch, and the caller writes each message alone.
async fn write_batch(
    engine: &Engine,
    jobs: &[&Job],
    own: Option<&OwnPool>,
) -> Result<Vec<Accepted>, WebchatError> {
    let mut visitors: Vec<VisitorKey> = jobs.iter().map(|j| j.visitor_key()).collect();
    visitors.dedup();
    let sends: Vec<batch::SendKey<'_>> = jobs
        .iter()
        .map(|j| (j.visitor_key(), j.client_message_id.as_str()))
        .collect();
    let mut tx = engine.db().begin_on(own).await?;
    let found = batch::lock_and_find(&mut tx, &visitors, &sends).await?;
    let now = now_ms();
    let mut plan = BatchPlan {
        current: visitors
            .iter()
            .zip(found.open)
            .filter_map(|(v, o)| o.map(|(c, last)| (*v, (c, last, true))))
            .collect(),
        accepted: HashMap::new(),
        rows: batch::Rows {
            now,
            ..batch::Rows::default()
        },
    };
    let mut results = Vec::with_capacity(jobs.len());
    for (job, earlier) in jobs.iter().zip(found.sent) {
        let accepted = match earlier {
            Some((message_id, conversation_id)) => Accepted {
                message_id,
                conversation_id,
                duplicate: true,
            },
            None => plan.add(job)?,
        };
        results.push(accepted);
    }
    let rows = plan.rows;
    if batch::write(&mut tx, &rows).await? != rows.signals.len() {
        return Err(WebchatError::Engine(EngineError::InvalidState(
            "a message's signal was recorded already".into(),
        )));
    }
    // Routed once every row is in place, in the order the signals happened.
    let views: Vec<(TenantId, routing::SignalView<'_>)> = rows
        .signals
        .iter()
        .map(|(tenant, id, s)| (*tenant, routing::SignalView::of(*id, s)))
        .collect();
    engine.route_signals(&mut tx, &views, false).await?;
    tx.commit().await?;
    let types: Vec<&str> = rows
        .signals
        .iter()
        .map(|(_, _, s)| s.signal_type.as_str())
        .collect();
    count_signals(&types);
    Ok(results)
}

/// What a batch will write, built in memory in arrival order.
struct BatchPlan {
    /// Each visitor's open conversation, when it last saw a message, and
    /// whether it was stored before this batch (so needs touching).
    current: HashMap<VisitorKey, (ConversationId, Millis, bool)>,
    /// What this batch accepted, by visitor and client message id, so a
    /// widget's retry that lands in the same batch is a duplicate too.
    accepted: HashMap<(VisitorKey, String), Accepted>,
    rows: batch::Rows,
}

impl BatchPlan {
    fn add(&mut self, job: &Job) -> Result<Accepted, WebchatError> {
        let (site, claims, now) = (&job.site, &job.claims, self.rows.now);
        let visitor = job.visitor_key();
        let key = (visitor, job.client_message_id.clone());
        if let Some(a) = self.accepted.get(&key) {
            return Ok(Accepted {
                duplicate: true,
                ..*a
            });
        }
        let page_url = job.page_url.as_deref();
        // For the escalation rules: a new conversation, or how long it was quiet.
        let (conversation_id, quiet_ms) = match self.current.get_mut(&visitor) {
            Some((c, last, stored)) => {
                if std::mem::take(stored) {
                    self.rows.touched.push((site.tenant, *c));
                }
                let quiet = (now - *last).max(0);
                *last = now;
                (*c, Some(quiet))
            }
            None => {
                let (row, started) = new_conversation(site, claims, page_url, now)?;
                self.rows
                    .signals
                    .push((site.tenant, SignalId::new(), started));
                self.current.insert(visitor, (row.id, now, false));
                let id = row.id;
                self.rows.conversations.push((site.tenant, row));
                (id, None)
            }
        };
        let message_id = MessageId::new();
        let m = job.incoming();
        let s = message_signal(
            site,
            claims,
            conversation_id,
            message_id,
            &m,
            page_url,
            quiet_ms,
            job.spam_score,
            now,
        )?;
        let signal_id = SignalId::new();
        self.rows.signals.push((site.tenant, signal_id, s));
        self.rows.messages.push((
            site.tenant,
            visitor_message(site, claims, conversation_id, message_id, &m, now),
            signal_id,
        ));
        let accepted = Accepted {
            message_id,
            conversation_id,
            duplicate: false,
        };
        self.accepted.insert(key, accepted);
        Ok(accepted)
    }
}

/// One message in its own transaction (a batch of one). Two sends of one
/// message racing on PostgreSQL: the loser's insert hits the unique key, and
/// its second pass finds the winner's row.
async fn send_alone(
    engine: &Engine,
    job: &Job,
    own: Option<&OwnPool>,
) -> Result<Accepted, WebchatError> {
    let mut pass = 0;
    loop {
        pass += 1;
        match write_batch(engine, &[job], own).await {
            Err(e) if pass < 3 && is_unique_violation(&e) => continue,
            other => return other.map(|mut one| one.remove(0)),
        }
    }
}

/// A new open conversation for the visitor and its
/// `webchat.session.started` signal.
fn new_conversation(
    site: &SiteRow,
    claims: &Claims,
    page_url: Option<&str>,
    now: Millis,
) -> Result<(ConversationRow, NewSignal), WebchatError> {
    let c = ConversationRow {
        id: ConversationId::new(),
        site_id: site.id,
        visitor_id: claims.visitor,
        status: "open".into(),
        page_url: page_url.map(str::to_owned),
        started_at: now,
        last_message_at: now,
        ended_at: None,
        ended_reason: None,
        assignee: None,
    };
    let s = signal_of(
        "webchat.session.started",
        &conversation_subject(c.id),
        json!({ "site_id": site.id, "visitor_id": claims.visitor, "conversation_id": c.id, "page_url": page_url }),
        format!("webchat_session:{}:{}:started", site.tenant, c.id),
        now,
    )?;
    Ok((c, s))
}

/// A visitor's message as stored.
fn visitor_message(
    site: &SiteRow,
    claims: &Claims,
    conversation_id: ConversationId,
    message_id: MessageId,
    m: &Incoming<'_>,
    now: Millis,
) -> MessageRow {
    MessageRow {
        id: message_id,
        conversation_id,
        site_id: site.id,
        visitor_id: claims.visitor,
        role: Role::Visitor,
        content: m.content.to_owned(),
        client_message_id: Some(m.client_message_id.to_owned()),
        created_at: now,
    }
}

/// The `webchat.message.received` signal of a message. `quiet_ms` is how
/// long the conversation was quiet (`None` for its first message), for the
/// escalation rules; `spam_score` (0–100) is for rules that act on spam.
#[allow(clippy::too_many_arguments)]
fn message_signal(
    site: &SiteRow,
    claims: &Claims,
    conversation_id: ConversationId,
    message_id: MessageId,
    m: &Incoming<'_>,
    page_url: Option<&str>,
    quiet_ms: Option<Millis>,
    spam_score: u8,
    now: Millis,
) -> Result<NewSignal, WebchatError> {
    let payload = with_content(
        json!({
            "site_id": site.id,
            "visitor_id": claims.visitor,
            "conversation_id": conversation_id,
            "message_id": message_id,
            "client_message_id": m.client_message_id,
            "role": "visitor",
            "page_url": page_url,
            "first_in_conversation": quiet_ms.is_none(),
            "quiet_ms": quiet_ms,
            "spam_score": spam_score,
        }),
        m.content,
    );
    signal_of(
        "webchat.message.received",
        &conversation_subject(conversation_id),
        payload,
        format!(
            "webchat_msg:{}:{}:{conversation_id}:{}",
            site.tenant, site.id, m.client_message_id
        ),
        now,
    )
}

/// Stores the contact details a visitor gave and records
/// `webchat.contact.captured` (once per address).
pub async fn capture_contact(
    engine: &Engine,
    site: &SiteRow,
    claims: &Claims,
    email: &str,
    name: Option<&str>,
) -> Result<(), WebchatError> {
    let email = email.trim();
    check_email(email).map_err(|r| invalid("email", r))?;
    let name = name.map(str::trim).filter(|n| !n.is_empty());
    if let Some(n) = name
        && (n.chars().count() > 100 || n.chars().any(char::is_control))
    {
        return Err(invalid("name", "must be at most 100 characters"));
    }
    let tenant = site.tenant;
    let now = now_ms();
    let mut tx = engine.db().begin().await?;
    conversation::lock_visitor(&mut tx, tenant, site.id, claims.visitor).await?;
    identity::set_contact(&mut tx, tenant, site.id, claims.visitor, email, name, now).await?;
    let conv = conversation::open_for_visitor(&mut tx, tenant, site.id, claims.visitor).await?;
    let subject = match conv {
        Some(c) => conversation_subject(c),
        None => format!("visitor:{}", claims.visitor),
    };
    let s = signal_of(
        "webchat.contact.captured",
        &subject,
        json!({ "site_id": site.id, "visitor_id": claims.visitor, "conversation_id": conv, "email": email, "name": name }),
        format!(
            "webchat_contact:{tenant}:{}:{}:{}",
            site.id,
            claims.visitor,
            email.to_lowercase()
        ),
        now,
    )?;
    let r = engine.record_in_tx(&mut tx, tenant, &s).await?;
    tx.commit().await?;
    if !r.duplicate {
        count_signals(&["webchat.contact.captured"]);
    }
    Ok(())
}

/// Which conversation ends, and why.
pub(crate) struct Ending<'a> {
    /// Its site.
    pub site: SiteId,
    /// Its visitor.
    pub visitor: VisitorId,
    /// The conversation.
    pub id: ConversationId,
    /// `idle`, `visitor_closed` …
    pub reason: &'a str,
}

/// Ends a conversation and records `webchat.session.ended`, in `tx`.
/// False when it had already ended.
pub(crate) async fn end_conversation(
    engine: &Engine,
    tx: &mut Tx,
    tenant: fleetprompt_core::TenantId,
    ending: Ending<'_>,
    now: Millis,
) -> Result<bool, WebchatError> {
    let Ending {
        site,
        visitor,
        id,
        reason,
    } = ending;
    if !conversation::end(tx, tenant, id, reason, now).await? {
        return Ok(false);
    }
    let s = signal_of(
        "webchat.session.ended",
        &conversation_subject(id),
        json!({ "site_id": site, "visitor_id": visitor, "conversation_id": id, "reason": reason }),
        format!("webchat_session:{tenant}:{id}:ended"),
        now,
    )?;
    engine.record_in_tx(tx, tenant, &s).await?;
    Ok(true)
}

/// The visitor closes the chat: their open conversation ends.
pub async fn close(
    engine: &Engine,
    site: &SiteRow,
    claims: &Claims,
) -> Result<Option<ConversationId>, WebchatError> {
    let mut tx = engine.db().begin().await?;
    let Some(id) =
        conversation::open_for_visitor(&mut tx, site.tenant, site.id, claims.visitor).await?
    else {
        return Ok(None);
    };
    let ended = end_conversation(
        engine,
        &mut tx,
        site.tenant,
        Ending {
            site: site.id,
            visitor: claims.visitor,
            id,
            reason: "visitor_closed",
        },
        now_ms(),
    )
    .await?;
    tx.commit().await?;
    if ended {
        count_signals(&["webchat.session.ended"]);
    }
    Ok(Some(id))
}

/// The visitor's latest conversation and its messages after `after`.
pub async fn history(
    engine: &Engine,
    site: &SiteRow,
    claims: &Claims,
    after: Option<MessageId>,
) -> Result<(Option<ConversationRow>, Vec<MessageRow>), WebchatError> {
    let Some(conv) =
        conversation::latest_for_visitor(engine.db(), site.tenant, site.id, claims.visitor).await?
    else {
        return Ok((None, vec![]));
    };
    let messages = message::list(engine.db(), site.tenant, conv.id, after, 500).await?;
    Ok((Some(conv), messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_urls_lose_query_and_fragment() {
        assert_eq!(
            clean_page_url("https://shop.test/a?reset=abc#x").unwrap(),
            "https://shop.test/a"
        );
        assert!(clean_page_url("javascript:alert(1)").is_err());
    }

    #[test]
    fn credentials_in_content_are_redacted_in_signals() {
        let p = with_content(json!({ "m": 1 }), "use Bearer abc123.def456 please");
        assert_eq!(p["content"], "use [redacted credential] please");
        assert!(p.get("content_withheld").is_none());
        let p = with_content(json!({ "m": 1 }), "where is my order?");
        assert_eq!(p["content"], "where is my order?");
    }
}
