//! The shared HTTP client ([`Outbound`]), its bounded reads, and how its
//! results are classified.

use std::sync::Arc;
use std::time::Duration;

use crate::outbound::{GuardedResolver, NotAllowed, OutboundPolicy, not_allowed_in};

/// How a delivery ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The receiver accepted it.
    Delivered {
        /// HTTP status.
        status: u16,
        /// The first bytes of the body, for the audit record.
        body: String,
    },
    /// It failed; see [`Failure`].
    Failed(Failure),
}

/// A failed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Whether another attempt may succeed (connection errors, timeouts,
    /// 408, 429 and 5xx) or not (other 4xx).
    pub retriable: bool,
    /// HTTP status, when the receiver answered.
    pub status: Option<u16>,
    /// What went wrong, without secrets (URLs are reduced to their host).
    pub error: String,
    /// The receiver's `Retry-After`, when it sent one.
    pub retry_after: Option<Duration>,
}

/// Most bytes of an outbound answer read by default (the LLM's limit is
/// set per destination).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Most bytes of an answer kept in a result or an error, for the audit record.
pub const KEPT_BODY_BYTES: usize = 1024;

/// The client every connector shares, with the [`OutboundPolicy`] it
/// enforces: rustls, bounded timeouts, no redirects (a redirect could lead
/// anywhere, inside included, and would leak a signed body), no proxy from
/// the environment (through a proxy the resolver would see only the
/// proxy's name), and a resolver that refuses addresses the policy does
/// not permit.
#[derive(Debug, Clone)]
pub struct Outbound {
    client: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl Outbound {
    /// Builds the client.
    pub fn new(connect_timeout: Duration, timeout: Duration, policy: OutboundPolicy) -> Self {
        // Installing the provider twice is harmless; the first one wins.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver::new(policy.clone()))
            .user_agent(concat!("FleetPrompt/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(64)
            .build()
            .expect("the HTTP client configuration is static and valid");
        Self { client, policy }
    }

    /// The policy in force.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// A POST to `url`, once its scheme and (for an IP literal, which no
    /// resolver sees) its address are allowed. Names are checked on
    /// connect, by the resolver.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder, NotAllowed> {
        let parsed = reqwest::Url::parse(url).map_err(|_| NotAllowed::BadUrl)?;
        self.policy.check_url(&parsed)?;
        Ok(self.client.post(parsed))
    }

    /// Reads an answer's body, at most `limit` bytes, chunk by chunk: an
    /// answer that says or turns out to be longer fails without being held
    /// in memory. The client's overall timeout covers the body too, so a
    /// receiver that trickles bytes is cut off at the same deadline.
    ///
    /// The connection's peer is checked once more: an answer is read only
    /// from an address the policy permits.
    pub async fn read_body(
        &self,
        mut resp: reqwest::Response,
        limit: usize,
    ) -> Result<Vec<u8>, BodyError> {
        if let Some(peer) = resp.remote_addr()
            && !self.policy.permits(peer.ip())
        {
            let host = resp.url().host_str().unwrap_or_default().to_owned();
            return Err(BodyError::NotAllowed(NotAllowed::Internal { host }));
        }
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(BodyError::TooLarge { limit });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| BodyError::Transport(describe_transport_error(&e)))?
        {
            if body.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Why an answer's body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// It is longer than the limit.
    #[error("response_too_large: the answer is longer than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// It came from an address the policy does not permit.
    #[error(transparent)]
    NotAllowed(NotAllowed),
    /// The connection failed while reading.
    #[error("{0}")]
    Transport(String),
}

impl BodyError {
    /// Whether another attempt may succeed: only a broken connection.
    pub fn retriable(&self) -> bool {
        matches!(self, Self::Transport(_))
    }
}

/// The first [`KEPT_BODY_BYTES`] of a body as text, cut on a character
/// boundary.
pub fn kept_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(KEPT_BODY_BYTES + 3)]);
    let mut end = text.len().min(KEPT_BODY_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Whether a status is worth retrying.
pub fn is_retriable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..=599).contains(&status)
}

/// Parses `Retry-After`: delta seconds or an HTTP date. Capped at one hour so
/// a hostile receiver cannot park a directive forever.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    const CAP: Duration = Duration::from_secs(3600);
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(CAP));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    let wait = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Some(wait.min(CAP))
}

/// Describes a transport error without the URL's path or query, which may
/// carry credentials (e.g. a Mattermost webhook key).
pub fn describe_transport_error(e: &reqwest::Error) -> String {
    if let Some(refused) = not_allowed_in(e) {
        return refused.to_string();
    }
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else if e.is_request() {
        "request failed"
    } else {
        "HTTP error"
    };
    let host = e
        .url()
        .map(|u| {
            format!(
                " ({}://{}{})",
                u.scheme(),
                u.host_str().unwrap_or("?"),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    format!("{what}{host}")
}

/// Reduces a URL to scheme, host and port, for showing in APIs and logs.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => "(invalid URL)".into(),
    }
}

/// Turns a response into a [`Delivery`], keeping at most
/// [`KEPT_BODY_BYTES`] of a body of at most [`DEFAULT_MAX_RESPONSE_BYTES`].
pub async fn classify(out: &Outbound, resp: reqwest::Response) -> Delivery {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let body = match out.read_body(resp, DEFAULT_MAX_RESPONSE_BYTES).await {
        Ok(b) => kept_text(&b),
        Err(e) => return body_failure(&e, Some(status)),
    };
    if (200..300).contains(&status) {
        Delivery::Delivered { status, body }
    } else {
        Delivery::Failed(Failure {
            retriable: is_retriable_status(status),
            status: Some(status),
            error: if body.is_empty() {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}: {body}")
            },
            retry_after,
        })
    }
}

/// The [`Delivery`] of a request that got no response.
pub fn transport_failure(e: &reqwest::Error) -> Delivery {
    Delivery::Failed(Failure {
        // A refused address stays refused; anything else may pass next time.
        retriable: not_allowed_in(e).is_none(),
        status: None,
        error: describe_transport_error(e),
        retry_after: None,
    })
}

/// The [`Delivery`] of a request refused before it was sent.
pub fn refused(e: &NotAllowed) -> Delivery {
    Delivery::Failed(Failure {
        retriable: false,
        status: None,
        error: e.to_string(),
        retry_after: None,
    })
}

/// The [`Delivery`] of an answer whose body could not be read.
pub fn body_failure(e: &BodyError, status: Option<u16>) -> Delivery {
    Delivery::Failed(Failure {
        retriable: e.retriable(),
        status,
        error: e.to_string(),
        retry_after: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_retriable_status(s), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422] {
            assert!(!is_retriable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("999999"), Some(Duration::from_secs(3600)));
        let soon = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
        let d = parse_retry_after(&soon).unwrap();
        assert!(
            d <= Duration::from_secs(30) && d >= Duration::from_secs(28),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn names_that_resolve_inside_are_refused_on_connect() {
        let out = Outbound::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            OutboundPolicy::default(),
        );
        let req = out
            .post("http://localhost:9/hook")
            .expect("a name passes the literal check");
        let e = req.send().await.unwrap_err();
        assert!(not_allowed_in(&e).is_some(), "{e:?}");
        let Delivery::Failed(f) = transport_failure(&e) else {
            panic!("refused")
        };
        assert!(!f.retriable);
        assert!(
            f.error.starts_with("destination_not_allowed"),
            "{}",
            f.error
        );
        assert!(out.post("http://127.0.0.1:9/").is_err());
    }

    #[test]
    fn kept_text_is_cut_on_a_character_boundary() {
        let body = "é".repeat(1000);
        let t = kept_text(body.as_bytes());
        assert!(
            t.len() <= KEPT_BODY_BYTES && t.len() >= KEPT_BODY_BYTES - 1,
            "{}",
            t.len()
        );
    }

    #[test]
    fn redacted_urls_keep_only_the_origin() {
        assert_eq!(
            redact_url("https://chat.example.com:8443/hooks/abc123?key=s"),
            "https://chat.example.com:8443/…"
        );
    }
}
