//! OpenAI-compatible chat completions (`POST <base_url>/v1/chat/completions`):
//! OpenAI, Ollama, llama.cpp server, vLLM.
//!
//! A bounded connect timeout and a long overall timeout (models are slow);
//! retried only when another attempt can help: connection errors, timeouts,
//! 429 and 5xx. Any other answer, or a body without a choice, is permanent.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::http::{Outbound, describe_transport_error, parse_retry_after};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// A completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest<'a> {
    /// e.g. `http://localhost:11434` (with or without a trailing `/v1`).
    pub base_url: &'a str,
    /// Model name.
    pub model: &'a str,
    /// Bearer key, when the server needs one.
    pub api_key: Option<&'a str>,
    /// The conversation, system prompt first.
    pub messages: &'a [ChatMessage],
    /// Longest the whole request may take, the answer's body included.
    pub timeout: Duration,
    /// Most bytes of the answer read; a longer one fails with
    /// `response_too_large`.
    pub max_response_bytes: usize,
}

/// A completion that came back.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The assistant's text.
    pub content: String,
    /// The model that answered (as reported, else as asked).
    pub model: String,
    /// `usage` as reported (`prompt_tokens`, `completion_tokens`, `total_tokens`).
    pub usage: Option<Value>,
    /// How long the request took.
    pub latency: Duration,
}

/// A failed completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmFailure {
    /// Whether another attempt may succeed.
    pub retriable: bool,
    /// HTTP status, when the server answered.
    pub status: Option<u16>,
    /// What went wrong, without secrets.
    pub error: String,
    /// The server's `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// The endpoint for `base_url`.
pub fn endpoint(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/chat/completions")
    } else {
        format!("{base}/v1/chat/completions")
    }
}

/// Asks for one completion.
pub async fn complete(out: &Outbound, r: &ChatRequest<'_>) -> Result<Completion, LlmFailure> {
    let started = Instant::now();
    let req = out.post(&endpoint(r.base_url)).map_err(|e| LlmFailure {
        retriable: false,
        status: None,
        error: format!("LLM {e}"),
        retry_after: None,
    })?;
    let mut req = req
        .timeout(r.timeout)
        .json(&json!({ "model": r.model, "messages": r.messages, "stream": false }));
    if let Some(k) = r.api_key {
        req = req.bearer_auth(k);
    }
    let resp = match req.send().await {
        Ok(resp) => resp,
        Err(e) => return Err(transport(&e, r.timeout)),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let text = match out.read_body(resp, r.max_response_bytes).await {
        Ok(body) => String::from_utf8_lossy(&body).into_owned(),
        Err(e) => {
            return Err(LlmFailure {
                retriable: e.retriable(),
                status: Some(status),
                error: format!("LLM {e}"),
                retry_after: None,
            });
        }
    };
    let latency = started.elapsed();
    parse(status, &text, retry_after, r.model, latency)
}

fn transport(e: &reqwest::Error, timeout: Duration) -> LlmFailure {
    let error = if e.is_timeout() {
        format!(
            "LLM request timed out after {timeout:?} {}",
            describe_transport_error(e)
        )
    } else {
        format!("LLM {}", describe_transport_error(e))
    };
    LlmFailure {
        // A refused address stays refused.
        retriable: crate::outbound::not_allowed_in(e).is_none(),
        status: None,
        error,
        retry_after: None,
    }
}

/// Reads a response (separate from I/O so it is unit-tested).
pub fn parse(
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    model: &str,
    latency: Duration,
) -> Result<Completion, LlmFailure> {
    let json: Option<Value> = serde_json::from_str(body).ok();
    if !(200..300).contains(&status) {
        let message = json
            .as_ref()
            .and_then(|v| v.pointer("/error/message").or_else(|| v.get("error")))
            .map(|m| {
                m.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| m.to_string())
            })
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(LlmFailure {
            retriable: status == 429 || (500..=599).contains(&status),
            status: Some(status),
            error: format!("LLM answered HTTP {status}: {message}"),
            retry_after,
        });
    }
    let content = json
        .as_ref()
        .and_then(|v| v.pointer("/choices/0/message/content"))
        .and_then(Value::as_str);
    let Some(content) = content else {
        return Err(LlmFailure {
            retriable: false,
            status: Some(status),
            error: "LLM answer has no choices[0].message.content".into(),
            retry_after: None,
        });
    };
    let v = json.as_ref().expect("content came from the JSON");
    Ok(Completion {
        content: content.trim().to_owned(),
        model: v
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or(model)
            .to_owned(),
        usage: v.get("usage").filter(|u| u.is_object()).cloned(),
        latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("http://h:11434"),
            "http://h:11434/v1/chat/completions"
        );
        assert_eq!(
            endpoint("https://api.openai.com/v1/"),
            "https://api.openai.com/v1/chat/completions"
        );
    }

    #[test]
    fn answers_and_errors() {
        let ok = r#"{"model":"m1","choices":[{"message":{"role":"assistant","content":" Hi "}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
        let c = parse(200, ok, None, "asked", Duration::ZERO).unwrap();
        assert_eq!(c.content, "Hi");
        assert_eq!(c.model, "m1");
        assert_eq!(c.usage.unwrap()["total_tokens"], 4);
        let e = parse(
            400,
            r#"{"error":{"message":"bad model"}}"#,
            None,
            "m",
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(!e.retriable && e.error.contains("bad model"), "{e:?}");
        assert!(
            parse(503, "", None, "m", Duration::ZERO)
                .unwrap_err()
                .retriable
        );
        assert!(
            parse(429, "", None, "m", Duration::ZERO)
                .unwrap_err()
                .retriable
        );
        assert!(
            !parse(200, "{}", None, "m", Duration::ZERO)
                .unwrap_err()
                .retriable
        );
    }
}
