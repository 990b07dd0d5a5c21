//! `webchat.reply_generate`: drafts an answer to the visitor's latest message.
//!
//! With an `llm` destination it asks an OpenAI-compatible chat completion,
//! given the conversation so far and the tenant's knowledge file
//! (`<workflows>/tenants/<slug>/knowledge/knowledge.md`). Without one it ranks the
//! tenant's FAQ (`<workflows>/tenants/<slug>/knowledge/faq.toml`, `[[faq]] question /
//! answer`) with BM25 and drafts the best answer, or nothing when nothing
//! matches well. The draft is stored and `webchat.reply.generated` recorded
//! (model, latency, token usage); it waits for an operator's approval unless
//! the rule sets `auto_send = true`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::store::escalation::{self, DraftRow};
use crate::store::message::{self, Role};
use crate::types::id::ConversationId;
use fleetprompt_connectors::llm::{self, ChatMessage};
use fleetprompt_core::time::now_ms;
use fleetprompt_core::{DirectiveId, DirectiveKind, NewSignal, Origin, RetryPolicy, TenantId};
use fleetprompt_store::directive::{self, DirectiveRow, NewDirective};
use fleetprompt_store::queue::Claimed;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::escalation::{claimed_conversation, validate_destination};
use crate::ingest::with_content;
use fleetprompt_engine::destination::{LlmConfig, open_config};
use fleetprompt_engine::{Attempt, Engine, EngineError, Failed, Handler, OrRetry, Outcome};

/// Default least BM25 score of an FAQ answer worth drafting.
pub const DEFAULT_MIN_SCORE: f64 = 1.0;

/// Longest knowledge file read, in bytes.
const MAX_KNOWLEDGE: usize = 32 * 1024;

/// One FAQ entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaqEntry {
    /// A typical question.
    pub question: String,
    /// The answer to draft.
    pub answer: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaqFile {
    #[serde(default)]
    faq: Vec<FaqEntry>,
}

/// Parses an FAQ file.
pub fn parse_faq(text: &str) -> Result<Vec<FaqEntry>, String> {
    toml::from_str::<FaqFile>(text)
        .map(|f| f.faq)
        .map_err(|e| e.to_string())
}

const STOPWORDS: &[&str] = &[
    "a", "about", "am", "an", "and", "any", "are", "as", "at", "be", "can", "could", "do", "does",
    "for", "from", "get", "have", "hello", "hi", "how", "i", "if", "in", "is", "it", "its", "me",
    "my", "of", "on", "or", "our", "please", "so", "that", "the", "there", "this", "to", "us",
    "want", "was", "we", "what", "when", "where", "which", "who", "why", "will", "with", "would",
    "you", "your",
];

/// Lower-case word stems without stop words.
pub fn terms(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty() && !STOPWORDS.contains(w))
        .map(stem)
        .collect()
}

/// A light suffix stemmer: enough for "opening"/"open", "ships"/"ship".
fn stem(w: &str) -> String {
    for suffix in ["ing", "ies", "es", "ed", "ly", "s"] {
        if let Some(base) = w.strip_suffix(suffix)
            && base.chars().count() >= 3
        {
            return base.to_owned();
        }
    }
    w.to_owned()
}

/// BM25 (k1 = 1.2, b = 0.75) over FAQ entries, the question counted twice.
/// Returns the best entry's index and score, if any term matched.
pub fn best_faq(entries: &[FaqEntry], query: &str) -> Option<(usize, f64)> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let docs: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut t = terms(&e.question);
            t.extend(terms(&e.question));
            t.extend(terms(&e.answer));
            t
        })
        .collect();
    if docs.is_empty() {
        return None;
    }
    let n = docs.len() as f64;
    let avg = docs.iter().map(Vec::len).sum::<usize>() as f64 / n;
    let mut df: HashMap<&str, f64> = HashMap::new();
    for d in &docs {
        let mut seen: Vec<&str> = d.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1.0;
        }
    }
    let mut q = terms(query);
    q.sort_unstable();
    q.dedup();
    let mut best: Option<(usize, f64)> = None;
    for (i, d) in docs.iter().enumerate() {
        let len = d.len() as f64;
        let mut score = 0.0;
        for t in &q {
            let tf = d.iter().filter(|x| *x == t).count() as f64;
            if tf == 0.0 {
                continue;
            }
            let nq = df.get(t.as_str()).copied().unwrap_or(0.0);
            let idf = ((n - nq + 0.5) / (nq + 0.5) + 1.0).ln();
            score += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg.max(1.0)));
        }
        if score > 0.0 && best.is_none_or(|(_, s)| score > s) {
            best = Some((i, score));
        }
    }
    best
}

/// The tenant's FAQ entries, which operators insert as saved replies; none
/// when the tenant has no FAQ file, or one too large or that does not
/// parse (a draft from it reports why).
pub fn saved_replies(engine: &Engine, slug: &str) -> Vec<FaqEntry> {
    let Some(path) = tenant_file(engine, slug, "faq.toml") else {
        return Vec::new();
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if text.len() <= MAX_KNOWLEDGE => parse_faq(&text).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn tenant_file(engine: &Engine, slug: &str, name: &str) -> Option<PathBuf> {
    let dir = engine.rules().status().dir?;
    Some(dir.join("tenants").join(slug).join("knowledge").join(name))
}

/// `webchat.reply_generate`.
///
/// Args: `{ "destination"?: "<llm destination>", "conversation_id"?,
/// "auto_send"?: bool, "min_score"?: number, "unless_destination"?: name }`
/// (the FAQ path steps aside when the named destination exists).
pub struct ReplyGenerate;

/// The arguments of `webchat.reply_generate`.
#[derive(Debug, Deserialize)]
pub struct ReplyGenerateArgs {
    /// An `llm` destination; without one, the tenant's FAQ answers.
    #[serde(default)]
    pub destination: Option<String>,
    /// The conversation; the directive's subject when not given.
    #[serde(default)]
    pub conversation_id: Option<ConversationId>,
    /// Sends the draft at once instead of keeping it for approval.
    #[serde(default)]
    pub auto_send: bool,
    /// The least FAQ score that makes a draft.
    #[serde(default)]
    pub min_score: Option<f64>,
    /// The FAQ path steps aside when this destination exists.
    #[serde(default)]
    pub unless_destination: Option<String>,
}

impl Handler for ReplyGenerate {
    type Args = ReplyGenerateArgs;

    fn validate<'a>(
        &'a self,
        engine: &'a Engine,
        tenant: TenantId,
        args: &'a ReplyGenerateArgs,
    ) -> BoxFuture<'a, Result<(), EngineError>> {
        async move {
            if let Some(name) = &args.destination {
                validate_destination(engine, tenant, name, &["llm"]).await?;
            } else {
                if let Some(other) = &args.unless_destination
                    && fleetprompt_engine::destination::find(engine, tenant, other)
                        .await
                        .is_ok()
                {
                    return Err(EngineError::NotConfigured(format!(
                        "destination {other:?} drafts replies for this tenant"
                    )));
                }
                let slug = engine.tenant_slug(tenant).await?;
                let faq = tenant_file(engine, &slug, "faq.toml");
                if !faq.as_ref().is_some_and(|p| p.is_file()) {
                    return Err(EngineError::NotConfigured(format!(
                        "no LLM destination given and no FAQ at workflows/tenants/{slug}/knowledge/faq.toml"
                    )));
                }
            }
            Ok(())
        }
        .boxed()
    }

    fn execute<'a>(
        &'a self,
        engine: &'a Engine,
        d: &'a Claimed,
        args: ReplyGenerateArgs,
    ) -> BoxFuture<'a, Attempt> {
        generate(engine, d, args).boxed()
    }
}

/// A drafted answer before it is stored.
struct Drafted {
    content: String,
    source: &'static str,
    model: Option<String>,
    usage: Option<Value>,
    latency: Duration,
}

async fn generate(engine: &Engine, d: &Claimed, args: ReplyGenerateArgs) -> Attempt {
    let conv = claimed_conversation(d, args.conversation_id)?;
    let slug = engine.tenant_slug(d.tenant).await.or_retry()?;
    let history = message::list(engine.db(), d.tenant, conv, None, 1000)
        .await
        .or_retry()?;
    let Some(question) = history.iter().rev().find(|m| m.role == Role::Visitor) else {
        return Err(Failed::fail(
            "the conversation has no visitor message to answer",
        ));
    };
    let drafted = match &args.destination {
        Some(dest) => ask_llm(engine, d, dest, &slug, &history)
            .await
            .map_err(Failed::outcome)?,
        None => {
            let Some(path) = tenant_file(engine, &slug, "faq.toml") else {
                return Err(Failed::fail("no workflows directory"));
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failed::fail(format!("cannot read {}: {e}", path.display())))?;
            let entries =
                parse_faq(&text).map_err(|e| Failed::fail(format!("{}: {e}", path.display())))?;
            let min = args.min_score.unwrap_or(DEFAULT_MIN_SCORE);
            let started = std::time::Instant::now();
            match best_faq(&entries, &question.content) {
                Some((i, score)) if score >= min => Drafted {
                    content: entries[i].answer.clone(),
                    source: "faq",
                    model: Some(format!("faq:bm25:{score:.2}")),
                    usage: None,
                    latency: started.elapsed(),
                },
                other => {
                    return Ok(Outcome::Succeeded {
                        result: json!({
                            "drafted": false,
                            "reason": "no FAQ entry matches well enough",
                            "best_score": other.map(|(_, s)| s),
                        }),
                        http_status: None,
                        external_ref: None,
                    });
                }
            }
        }
    };
    store(engine, d, conv, drafted, args.auto_send).await
}

async fn ask_llm(
    engine: &Engine,
    d: &Claimed,
    dest_name: &str,
    slug: &str,
    history: &[message::MessageRow],
) -> Result<Drafted, Outcome> {
    let dest = match fleetprompt_engine::destination::find(engine, d.tenant, dest_name).await {
        Ok(x) => x,
        Err(EngineError::NotFound(_)) => {
            return Err(Outcome::fail(format!(
                "destination {dest_name:?} no longer exists"
            )));
        }
        Err(e) => return Err(Failed::retry(e).into()),
    };
    let cfg: LlmConfig =
        open_config(engine, d.tenant, &dest).map_err(|e| Outcome::fail(e.to_string()))?;
    let knowledge = tenant_file(engine, slug, "knowledge.md")
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|k| k.chars().take(MAX_KNOWLEDGE).collect::<String>())
        .unwrap_or_default();
    let mut messages = vec![ChatMessage {
        role: "system".into(),
        content: format!(
            "You are a helpful support assistant answering a website visitor. Answer briefly and \
             only from the knowledge below; if it does not cover the question, say an operator \
             will follow up.\n\n# Knowledge\n{knowledge}"
        ),
    }];
    // The latest 40 messages are plenty of context and bound the prompt.
    let skip = history.len().saturating_sub(40);
    messages.extend(history.iter().skip(skip).map(|m| {
        ChatMessage {
            role: if m.role == Role::Visitor {
                "user"
            } else {
                "assistant"
            }
            .into(),
            content: m.content.clone(),
        }
    }));
    // Stay below the handler timeout, so a slow model is a clear error.
    let cap = engine
        .config()
        .handler_timeout
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(100));
    let timeout = Duration::from_millis(cfg.timeout_ms.unwrap_or(15_000)).min(cap);
    let answer = llm::complete(
        engine.http(),
        &llm::ChatRequest {
            base_url: &cfg.base_url,
            model: &cfg.model,
            api_key: cfg.api_key.as_deref(),
            messages: &messages,
            timeout,
            max_response_bytes: cfg.max_response_bytes(),
        },
    )
    .await;
    match answer {
        Ok(c) if !c.content.is_empty() => Ok(Drafted {
            content: c.content,
            source: "llm",
            model: Some(c.model),
            usage: c.usage,
            latency: c.latency,
        }),
        Ok(_) => Err(Outcome::fail("the model answered with empty text")),
        Err(f) if f.retriable => Err(Outcome::Retry {
            error: f.error,
            http_status: f.status,
            retry_after: f.retry_after,
        }),
        Err(f) => Err(Outcome::Fail {
            error: f.error,
            http_status: f.status,
            external_ref: None,
        }),
    }
}

async fn store(
    engine: &Engine,
    d: &Claimed,
    conv: ConversationId,
    x: Drafted,
    auto_send: bool,
) -> Attempt {
    let now = now_ms();
    let draft = DraftRow {
        id: format!("draft_{}", uuid_simple()),
        conversation_id: conv,
        content: x.content.clone(),
        source: x.source.into(),
        model: x.model.clone(),
        usage: x.usage.clone(),
        latency_ms: Some(x.latency.as_millis() as i64),
        status: if auto_send { "approved" } else { "pending" }.into(),
        generated_by: d.id.to_string(),
        reply_directive: None,
        created_at: now,
    };
    let result = async {
        let mut tx = engine.db().begin().await?;
        if !escalation::insert_draft(&mut tx, d.tenant, &draft).await? {
            // A retried attempt: the first one stored it.
            return Ok::<_, EngineError>(None);
        }
        let payload = with_content(
            json!({
                "conversation_id": conv,
                "draft_id": draft.id,
                "source": draft.source,
                "model": draft.model,
                "latency_ms": draft.latency_ms,
                "usage": draft.usage,
                "auto_send": auto_send,
            }),
            &draft.content,
        );
        let mut s = NewSignal::new(
            "webchat.reply.generated",
            &crate::conversation_subject(conv),
            payload,
            format!("webchat_draft:{}:{}", d.tenant, draft.id),
            now,
        )?;
        s.caused_by = Some(d.id);
        engine.record_in_tx(&mut tx, d.tenant, &s).await?;
        if auto_send {
            let send = reply_send_directive(
                conv,
                &draft,
                json!({ "kind": "assistant", "directive_id": d.id }),
                Origin::System {
                    component: "webchat.reply_generate".into(),
                },
            )?;
            directive::insert(&mut tx, d.tenant, &send).await?;
        }
        tx.commit().await?;
        Ok(Some(draft.id.clone()))
    }
    .await;
    let id = result.or_retry()?;
    Ok(Outcome::Succeeded {
        result: json!({
            "drafted": true,
            "draft_id": id,
            "source": x.source,
            "model": x.model,
            "usage": x.usage,
            "latency_ms": x.latency.as_millis() as u64,
            "auto_send": auto_send,
        }),
        http_status: None,
        external_ref: id,
    })
}

/// The `webchat.reply_send` directive that delivers an approved draft.
pub fn reply_send_directive(
    conv: ConversationId,
    draft: &DraftRow,
    author: Value,
    origin: Origin,
) -> Result<NewDirective, EngineError> {
    Ok(NewDirective {
        id: DirectiveId::new(),
        kind: DirectiveKind::parse("webchat.reply_send".to_owned())?,
        args: json!({
            "conversation_id": conv,
            "content": draft.content,
            "role": "assistant",
            "author": author,
            "draft_id": draft.id,
        }),
        dedupe_key: format!("webchat_draft_send:{}", draft.id),
        subject: Some(crate::conversation_subject(conv)),
        retry: RetryPolicy::default(),
        run_at: now_ms(),
        origin,
        caused_by: None,
    })
}

/// Approves a pending draft for `approver` (who acts, as the audit trail
/// records it): creates, once, the `webchat.reply_send` directive that
/// delivers it (role `assistant`, approved by them), in the transaction that marks the draft
/// approved. The directive is checked by its handler and counted like any
/// other. A draft already approved or discarded is refused, and nothing is
/// written.
pub async fn approve_draft(
    engine: &Engine,
    tenant: TenantId,
    conv: ConversationId,
    draft_id: &str,
    approver: Origin,
) -> Result<DirectiveRow, crate::WebchatError> {
    let draft = escalation::draft(engine.db(), tenant, conv, draft_id)
        .await
        .map_err(crate::error::or_not_found("draft"))?;
    if draft.status != "pending" {
        return Err(EngineError::InvalidState(format!("draft is already {}", draft.status)).into());
    }
    let send = reply_send_directive(
        conv,
        &draft,
        json!({ "kind": "assistant", "approved_by": approver.actor_id() }),
        approver,
    )?;
    engine.validate_directive(tenant, &send).await?;
    let mut tx = engine.db().begin().await?;
    if !escalation::approve_draft(&mut tx, tenant, &draft.id, &send.id.to_string(), now_ms())
        .await?
    {
        return Err(EngineError::InvalidState("draft is no longer pending".into()).into());
    }
    let created = engine.insert_directive(&mut tx, tenant, &send).await?;
    tx.commit().await?;
    fleetprompt_engine::count_created(&send, &created);
    Ok(directive::get(engine.db(), tenant, created.id()).await?)
}

/// Discards a pending draft for `token` (who acts: a member's or a token's
/// id, [`Origin::actor_id`]): it will not be
/// sent. Records `webchat.draft.discarded` on the conversation's timeline in
/// the same transaction, naming who discarded it. A draft already approved or
/// discarded is refused, and nothing is written.
pub async fn discard_draft(
    engine: &Engine,
    tenant: TenantId,
    conv: ConversationId,
    draft_id: &str,
    token: &str,
) -> Result<DraftRow, crate::WebchatError> {
    let draft = escalation::draft(engine.db(), tenant, conv, draft_id)
        .await
        .map_err(crate::error::or_not_found("draft"))?;
    let now = now_ms();
    let mut tx = engine.db().begin().await?;
    if !escalation::discard_draft(&mut tx, tenant, &draft.id, now).await? {
        let current = escalation::draft(engine.db(), tenant, conv, draft_id).await?;
        return Err(
            EngineError::InvalidState(format!("draft is already {}", current.status)).into(),
        );
    }
    let s = NewSignal::new(
        "webchat.draft.discarded",
        &crate::conversation_subject(conv),
        json!({ "draft_id": draft.id, "conversation_id": conv, "discarded_by": token }),
        format!("webchat_draft_discarded:{}", draft.id),
        now,
    )?;
    engine.record_in_tx(&mut tx, tenant, &s).await?;
    tx.commit().await?;
    Ok(DraftRow {
        status: "discarded".into(),
        ..draft
    })
}

fn uuid_simple() -> String {
    fleetprompt_core::secret::random_token(16)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn faq() -> Vec<FaqEntry> {
        parse_faq(
            r#"
[[faq]]
question = "What are your opening hours?"
answer = "We are open from 9:00 to 17:00, Monday to Friday."

[[faq]]
question = "How do I reset my password?"
answer = "Use the 'Forgot password' link on the sign-in page; the email arrives within a minute."

[[faq]]
question = "Do you ship internationally?"
answer = "Yes, we ship to 30 countries; delivery abroad takes 5 to 10 days."

[[faq]]
question = "How can I cancel my subscription?"
answer = "Go to Settings, then Billing, then Cancel subscription."
"#,
        )
        .unwrap()
    }

    #[test]
    fn paraphrases_find_their_answer() {
        let f = faq();
        for (q, want) in [
            ("when are you open on mondays?", 0),
            ("I forgot my password, what now", 1),
            ("can you deliver to other countries", 2),
            ("I'd like to stop my subscription", 3),
        ] {
            let (i, score) = best_faq(&f, q).unwrap_or_else(|| panic!("no match for {q:?}"));
            assert_eq!(i, want, "{q:?}");
            assert!(score >= DEFAULT_MIN_SCORE, "{q:?}: {score}");
        }
    }

    #[test]
    fn unrelated_questions_match_nothing() {
        let f = faq();
        for q in ["what is the capital of France?", "tell me a joke", "hi"] {
            assert!(
                best_faq(&f, q).is_none_or(|(_, s)| s < DEFAULT_MIN_SCORE),
                "{q:?}: {:?}",
                best_faq(&f, q)
            );
        }
    }
}
