//! Mattermost: incoming webhooks and the REST API v4.
//!
//! - Incoming webhook: `POST <webhook_url>` with `{"text": …}`; Mattermost
//!   answers `200 ok`. The URL itself is the credential, so it is never
//!   logged (errors name only the host).
//! - REST API v4: `POST <base_url>/api/v4/posts` with
//!   `{"channel_id", "message", "root_id"?, "pending_post_id"}` and
//!   `Authorization: Bearer <token>`; Mattermost answers `201` with the post,
//!   whose `id` threads follow-ups (`root_id`). Mattermost returns the post
//!   already created for a `pending_post_id` it saw within 30 s instead of
//!   creating another (`deduplicateCreatePost`), so a retry soon after a lost
//!   answer or a crash does not post twice. Webhooks have no such key.
//!
//! Mattermost's errors are JSON `{"id", "message", "status_code", …}`:
//! 400, 401, 403, 404 and 501 are permanent (the error `id` is kept as the
//! attempt's external reference); 408, 429 and 5xx are retried.

use std::time::Duration;

use serde_json::{Value, json};

use crate::NotAllowed;
use crate::http::{
    DEFAULT_MAX_RESPONSE_BYTES, Outbound, describe_transport_error, is_retriable_status,
    parse_retry_after,
};

/// Longest post Mattermost accepts, in characters.
pub const MAX_POST_CHARS: usize = 16_383;

const TRUNCATED: &str = "\n… (truncated)";

/// Cuts `text` to Mattermost's limit, saying so, rather than splitting it
/// into several posts (one notification is one post).
pub fn truncate_post(text: &str) -> String {
    if text.chars().count() <= MAX_POST_CHARS {
        return text.to_owned();
    }
    let keep = MAX_POST_CHARS - TRUNCATED.chars().count();
    let mut out: String = text.chars().take(keep).collect();
    out.push_str(TRUNCATED);
    out
}

/// How a post ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostOutcome {
    /// Mattermost accepted it.
    Posted {
        /// HTTP status.
        status: u16,
        /// The new post's id (REST API only; webhooks answer `ok`).
        post_id: Option<String>,
    },
    /// It failed.
    Failed {
        /// Whether another attempt may succeed.
        retriable: bool,
        /// HTTP status, when Mattermost answered.
        status: Option<u16>,
        /// What went wrong, without secrets.
        error: String,
        /// Mattermost's error id (e.g. `store.sql_channel.get.existing.app_error`).
        error_id: Option<String>,
        /// Mattermost's `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
}

/// Posts `text` through an incoming webhook.
pub async fn post_webhook(out: &Outbound, webhook_url: &str, text: &str) -> PostOutcome {
    let body = json!({ "text": truncate_post(text) });
    let req = match out.post(webhook_url) {
        Ok(req) => req,
        Err(e) => return refused(&e),
    };
    match req.json(&body).send().await {
        Ok(resp) => classify(out, resp).await,
        Err(e) => transport(&e),
    }
}

/// A post through the REST API.
#[derive(Debug, Clone)]
pub struct ApiPost<'a> {
    /// Server URL, e.g. `https://chat.example.com`.
    pub base_url: &'a str,
    /// Bot or personal access token.
    pub token: &'a str,
    /// Channel to post in.
    pub channel_id: &'a str,
    /// Post to reply to (threads follow-ups).
    pub root_id: Option<&'a str>,
    /// The message (Markdown).
    pub message: &'a str,
    /// The same on every attempt of one notification (e.g. derived from the
    /// directive id), so Mattermost dedupes a retry within 30 s.
    pub pending_post_id: &'a str,
}

/// Creates a post with the REST API v4.
pub async fn post_api(out: &Outbound, p: &ApiPost<'_>) -> PostOutcome {
    let url = format!("{}/api/v4/posts", p.base_url.trim_end_matches('/'));
    let mut body = json!({
        "channel_id": p.channel_id,
        "message": truncate_post(p.message),
        "pending_post_id": p.pending_post_id,
    });
    if let Some(root) = p.root_id {
        body["root_id"] = json!(root);
    }
    let req = match out.post(&url) {
        Ok(req) => req,
        Err(e) => return refused(&e),
    };
    match req.bearer_auth(p.token).json(&body).send().await {
        Ok(resp) => classify(out, resp).await,
        Err(e) => transport(&e),
    }
}

fn refused(e: &NotAllowed) -> PostOutcome {
    PostOutcome::Failed {
        retriable: false,
        status: None,
        error: e.to_string(),
        error_id: None,
        retry_after: None,
    }
}

fn transport(e: &reqwest::Error) -> PostOutcome {
    PostOutcome::Failed {
        // A refused address stays refused.
        retriable: crate::outbound::not_allowed_in(e).is_none(),
        status: None,
        error: describe_transport_error(e),
        error_id: None,
        retry_after: None,
    }
}

async fn classify(out: &Outbound, resp: reqwest::Response) -> PostOutcome {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    match out.read_body(resp, DEFAULT_MAX_RESPONSE_BYTES).await {
        Ok(body) => classify_parts(status, &String::from_utf8_lossy(&body), retry_after),
        Err(e) => PostOutcome::Failed {
            retriable: e.retriable(),
            status: Some(status),
            error: e.to_string(),
            error_id: None,
            retry_after: None,
        },
    }
}

/// Classifies a status and body (separate from I/O so it is unit-tested).
pub fn classify_parts(status: u16, body: &str, retry_after: Option<Duration>) -> PostOutcome {
    let json: Option<Value> = serde_json::from_str(body).ok();
    if (200..300).contains(&status) {
        let post_id = json
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return PostOutcome::Posted { status, post_id };
    }
    let error_id = json
        .as_ref()
        .and_then(|v| v.get("id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let message = json
        .as_ref()
        .and_then(|v| v.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error = match (&error_id, message) {
        (Some(id), Some(m)) => format!("Mattermost answered HTTP {status}: {m} ({id})"),
        (Some(id), None) => format!("Mattermost answered HTTP {status} ({id})"),
        _ => {
            let snippet: String = body.chars().take(200).collect();
            if snippet.is_empty() {
                format!("Mattermost answered HTTP {status}")
            } else {
                format!("Mattermost answered HTTP {status}: {snippet}")
            }
        }
    };
    PostOutcome::Failed {
        // 501 is Mattermost's "feature disabled" (e.g. webhooks turned off):
        // no retry will turn it on.
        retriable: is_retriable_status(status) && status != 501,
        status: Some(status),
        error,
        error_id,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_truncated_to_one_post() {
        let long = "é".repeat(MAX_POST_CHARS + 10);
        let t = truncate_post(&long);
        assert_eq!(t.chars().count(), MAX_POST_CHARS);
        assert!(t.ends_with("(truncated)"));
        assert_eq!(truncate_post("short"), "short");
    }

    #[test]
    fn mattermost_statuses() {
        assert_eq!(
            classify_parts(200, "ok", None),
            PostOutcome::Posted {
                status: 200,
                post_id: None
            }
        );
        assert_eq!(
            classify_parts(201, r#"{"id":"p1","message":"hi"}"#, None),
            PostOutcome::Posted {
                status: 201,
                post_id: Some("p1".into())
            }
        );
        let body = r#"{"id":"web.incoming_webhook.invalid.app_error","message":"Invalid webhook.","detailed_error":"","request_id":"r","status_code":404}"#;
        match classify_parts(404, body, None) {
            PostOutcome::Failed {
                retriable,
                error_id,
                error,
                ..
            } => {
                assert!(!retriable);
                assert_eq!(
                    error_id.as_deref(),
                    Some("web.incoming_webhook.invalid.app_error")
                );
                assert!(error.contains("Invalid webhook."), "{error}");
            }
            other => panic!("{other:?}"),
        }
        for s in [400, 403, 501] {
            assert!(matches!(
                classify_parts(s, "{}", None),
                PostOutcome::Failed {
                    retriable: false,
                    ..
                }
            ));
        }
        for s in [429, 500, 503] {
            assert!(matches!(
                classify_parts(s, "", None),
                PostOutcome::Failed {
                    retriable: true,
                    ..
                }
            ));
        }
    }
}
